{{/* Names: fixed "bucketgate-*" unless nameOverride (the contract's Service is "stowage"). */}}
{{- define "bg.name" -}}{{ .Values.nameOverride | default "bucketgate" }}{{- end -}}

{{- define "bg.labels" -}}
app.kubernetes.io/part-of: bucketgate
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* image: (dict "img" .Values.images.authz "root" .) */}}
{{- define "bg.image" -}}
{{- $tag := .img.tag | default .root.Chart.AppVersion -}}
{{- if .img.digest -}}{{ .img.repository }}@{{ .img.digest }}{{- else -}}{{ .img.repository }}:{{ $tag }}{{- end -}}
{{- end -}}

{{- define "bg.proxyEndpoint" -}}
{{- .Values.operator.proxyEndpoint | default (printf "http://stowage.%s.svc.cluster.local:8090" .Release.Namespace) -}}
{{- end -}}

{{- define "bg.podSecurity" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile: {type: RuntimeDefault}
{{- end -}}

{{- define "bg.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities: {drop: [ALL]}
{{- end -}}

{{/* One backend's endpoint: dict cluster host port tls ip (host as signed: no default port). */}}
{{- define "bg.endpoint" -}}
{{- $u := urlParse .endpoint -}}
{{- if not (has $u.scheme (list "http" "https")) -}}{{ fail (printf "backends[%s].endpoint %q: want http:// or https://" .name .endpoint) }}{{- end -}}
{{- if or (ne $u.path "") (ne $u.query "") (ne $u.userinfo "") -}}{{ fail (printf "backends[%s].endpoint %q: only scheme, host and port" .name .endpoint) }}{{- end -}}
{{- $hostport := $u.host -}}
{{- $host := $hostport -}}
{{- $port := ternary "443" "80" (eq $u.scheme "https") -}}
{{- if hasPrefix "[" $hostport -}}
{{-   $host = regexReplaceAll "^\\[([^\\]]*)\\].*$" $hostport "${1}" -}}
{{-   if regexMatch "\\]:[0-9]+$" $hostport }}{{ $port = regexReplaceAll "^.*\\]:([0-9]+)$" $hostport "${1}" }}{{ end -}}
{{- else if contains ":" $hostport -}}
{{-   $host = regexReplaceAll ":[0-9]+$" $hostport "" -}}
{{-   $port = regexReplaceAll "^.*:" $hostport "" -}}
{{- end -}}
{{- $ip := or (regexMatch "^[0-9]+\\.[0-9]+\\.[0-9]+\\.[0-9]+$" $host) (contains ":" $host) -}}
{{- dict "cluster" (printf "backend_%s" .name) "host" $host "port" (atoi $port) "tls" (eq $u.scheme "https") "ip" $ip "signedHost" $hostport | toJson -}}
{{- end -}}

{{/* The gateway settings every plane reads (core::settings). */}}
{{- define "bg.settings" -}}
{{- $g := .Values.gateway -}}
{{- $backends := list -}}
{{- range .Values.backends -}}
{{-   $e := include "bg.endpoint" (dict "name" .name "endpoint" .endpoint) | fromJson -}}
{{-   $b := dict "name" .name "cluster" $e.cluster "host" $e.signedHost "region" (.region | default $g.region) -}}
{{-   if .addressing }}{{ $_ := set $b "addressing" .addressing }}{{ end -}}
{{-   $backends = append $backends $b -}}
{{- end -}}
{{- $limits := dict "global_rps" (int $g.rateLimits.globalRps) "per_key_rps" (int $g.rateLimits.perKeyRps) "auth_failure_rps" (int $g.rateLimits.authFailureRps) "auth_failure_burst" (int $g.rateLimits.authFailureBurst) "anonymous_per_source_ip_rps" (int $g.rateLimits.anonymousPerSourceIpRps) "quota_when_unknown" $g.quota.whenUnknown -}}
{{- dict "region" $g.region "host_suffixes" ($g.hostSuffixes | default list) "s3_proxy" $limits "audit" (dict "read_sample_rate" (float64 $g.audit.readSampleRate)) "sigv2" $g.sigv2 "backends" $backends | toJson -}}
{{- end -}}

{{/* The plugin config of the wasm filter and the native module: settings + feed. */}}
{{- define "bg.pluginConfig" -}}
{{- $s := include "bg.settings" .root | fromJson -}}
{{- $f := .root.Values.gateway.feed -}}
{{- $_ := set $s "feed" (dict "cluster" .cluster "authority" "bucketgate-authz" "token" .token "poll_ms" (int $f.pollMs) "page_size" (int $f.pageSize)) -}}
{{- $s | toJson -}}
{{- end -}}

{{/* The feed token: the value, else the existing Secret's, else a new one. */}}
{{- define "bg.feedToken" -}}
{{- if .Values.gateway.feed.token -}}
{{- .Values.gateway.feed.token -}}
{{- else -}}
{{- $s := lookup "v1" "Secret" .Release.Namespace (printf "%s-feed-token" (include "bg.name" .)) -}}
{{- if and $s $s.data (index $s.data "token") -}}{{ index $s.data "token" | b64dec }}{{- else -}}{{ randAlphaNum 48 }}{{- end -}}
{{- end -}}
{{- end -}}

{{/*
The Envoy config: one of files/envoy/envoy-<mode>[-tls].json, written by
envoy/gateway.py --chart-files (the single description of listeners,
filters and clusters; tests/chart proves this renders what gateway.py
renders), its tokens replaced, and one cluster per backend from
files/envoy/cluster-<ip|dns>[-tls].json inserted before the others.
*/}}
{{- define "bg.envoyConfig" -}}
{{- $g := .root.Values.gateway -}}
{{- $file := printf "files/envoy/envoy-%s%s.json" .root.Values.mode (ternary "-tls" "" $g.tls.enabled) -}}
{{- $text := .root.Files.Get $file -}}
{{- if not $text -}}{{ fail (printf "%s is missing from the chart" $file) }}{{- end -}}
{{- $text = $text | replace "\"@@XFF_TRUSTED_HOPS@@\"" (toString (int $g.xffTrustedHops)) -}}
{{- $text = $text | replace "\"@@AUTHZ_MAX_BODY@@\"" (toString (int $g.extAuthz.maxRequestBytes)) -}}
{{- $text = $text | replace "@@AUTHZ_TIMEOUT@@" $g.extAuthz.timeout -}}
{{- $text = $text | replace "\"@@TLS_PORT@@\"" (toString (int $g.tls.port)) -}}
{{- if regexMatch "@@(XFF|AUTHZ|TLS)[A-Z_]*@@" $text -}}{{ fail (printf "%s: a token is left" $file) }}{{- end -}}
{{- $text = $text | replace "\"@@PLUGIN_CONFIG@@\"" (include "bg.pluginConfig" (dict "root" .root "cluster" "bucketgate_feed" "token" .token) | toJson) -}}
{{- $cfg := fromJson $text -}}
{{- $clusters := list -}}
{{- range .root.Values.backends -}}
{{-   $e := include "bg.endpoint" (dict "name" .name "endpoint" .endpoint) | fromJson -}}
{{-   $ctext := $.root.Files.Get (printf "files/envoy/cluster-%s%s.json" (ternary "ip" "dns" $e.ip) (ternary "-tls" "" $e.tls)) -}}
{{-   $ctext = $ctext | replace "@@CLUSTER@@" $e.cluster | replace "@@HOST@@" $e.host | replace "@@IP@@" $e.host | replace "\"@@PORT@@\"" (toString $e.port) | replace "@@BACKEND_CA@@" (include "bg.backendCAFile" $.root) -}}
{{-   $clusters = append $clusters (fromJson $ctext) -}}
{{- end -}}
{{- $sr := $cfg.static_resources -}}
{{- $_ := set $sr "clusters" (concat $clusters $sr.clusters) -}}
{{- $cfg | toPrettyJson -}}
{{- end -}}

{{/* The CA bundle https:// backends' certificates are checked against:
gateway.backendCA (a Secret, for private CAs) or the Envoy image's roots. */}}
{{- define "bg.backendCAFile" -}}
{{- with .Values.gateway.backendCA.secretName -}}/etc/bucketgate/backend-ca/{{ $.Values.gateway.backendCA.key }}{{- else -}}/etc/ssl/certs/ca-certificates.crt{{- end -}}
{{- end -}}

{{/* The broker's config (bucketgate-authz --config). */}}
{{- define "bg.brokerConfig" -}}
{{- $g := .Values.gateway -}}
{{- $backends := list -}}
{{- range .Values.backends -}}
{{-   $c := .credentials | default dict -}}
{{-   $creds := dict -}}
{{-   if $c.secretName -}}
{{-     $creds = dict "source" "files" "access_key_id_file" (printf "/run/backends/%s/AWS_ACCESS_KEY_ID" .name) "secret_access_key_file" (printf "/run/backends/%s/AWS_SECRET_ACCESS_KEY" .name) -}}
{{-   else if eq ($c.source | default "") "aws_default_chain" -}}
{{-     $creds = dict "source" "aws_default_chain" -}}
{{-   else -}}
{{-     fail (printf "backends[%s].credentials: set secretName (a Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY) or source: aws_default_chain" .name) -}}
{{-   end -}}
{{- /* The endpoint lets the broker scan quota usage (ListObjectsV2). */ -}}
{{-   $b := dict "name" .name "credentials" $creds "endpoint" (.endpoint | trimSuffix "/") "region" (.region | default $g.region) -}}
{{-   if .addressing }}{{ $_ := set $b "addressing" .addressing }}{{ end -}}
{{-   $backends = append $backends $b -}}
{{- end -}}
{{- $cfg := dict "database" "/var/lib/bucketgate/credentials.db" "key_file" "/var/lib/bucketgate/store.key" "http_listen" "127.0.0.1:9091" "health_listen" "0.0.0.0:9092" "kubernetes" (dict "enabled" true "namespace" .Release.Namespace) "backends" $backends "usage" (dict "scan_interval_ms" (mul (int $g.quota.scanIntervalSeconds) 1000)) -}}
{{- if $g.sigv2 -}}
{{-   $_ := set $cfg "feed" (dict "sigv2_keys" true) -}}
{{- end -}}
{{- if eq .Values.mode "ext-authz" -}}
{{-   $_ := set $cfg "ext_authz" (include "bg.settings" . | fromJson) -}}
{{- end -}}
{{- $cfg | toPrettyJson -}}
{{- end -}}

{{/*
Existing mesh (templates/broker.yaml, mesh-istio.yaml, mesh-envoy-gateway.yaml;
deploy/mesh.md). "bg.mesh": istio, envoy-gateway or empty.
*/}}
{{- define "bg.mesh" -}}
{{- $m := .Values.mesh -}}
{{- if and $m.istio.enabled $m.envoyGateway.enabled -}}{{ fail "mesh: enable istio or envoyGateway, not both" }}{{- end -}}
{{- if $m.istio.enabled -}}istio{{- else if $m.envoyGateway.enabled -}}envoy-gateway{{- end -}}
{{- end -}}

{{/* Does the standalone broker serve ext_authz (Envoy Gateway, plane ext-authz)? "true" or empty. */}}
{{- define "bg.meshExtAuthz" -}}
{{- if and (eq (include "bg.mesh" .) "envoy-gateway") (eq .Values.mesh.envoyGateway.plane "ext-authz") -}}true{{- end -}}
{{- end -}}

{{/*
Names of the mesh case: the broker's Service (svc, its FQDN), the namespace
where the mesh reads the broker's client certificate (clientNs: Istio's
gateway namespace, or the HTTPRoute's for Envoy Gateway), the DNS name the
client certificate carries (the broker's tls.client_names) and the Secrets.
*/}}
{{- define "bg.meshNames" -}}
{{- $name := include "bg.name" . -}}
{{- $m := .Values.mesh -}}
{{- $svc := printf "%s-broker" $name -}}
{{- $clientNs := ternary $m.istio.namespace ($m.envoyGateway.routeNamespace | default .Release.Namespace) (eq (include "bg.mesh" .) "istio") -}}
{{- dict "svc" $svc "fqdn" (printf "%s.%s.svc.%s" $svc .Release.Namespace $m.clusterDomain) "clientNs" $clientNs "clientName" (printf "%s-mesh-client" $name) "serverSecret" (printf "%s-broker-tls" $name) "clientSecret" (printf "%s-broker-client" $name) "tokenSecret" (printf "%s-broker-feed-token" $name) | toJson -}}
{{- end -}}

{{/*
The broker's CA, server and client certificates (PEM; JSON: ca serverCert
serverKey clientCert clientKey). Kept across upgrades: the existing server and
client Secrets are reused when both are there and name the same ca.crt; else
all three are made anew (genCA; the CA's key is not kept). Computed once per
render and shared by every template (memoised in .Values, after the schema
check), so the broker and the mesh's client always share one CA.
*/}}
{{- define "bg.meshPKI" -}}
{{- if not (hasKey .Values "__bgMeshPKI") -}}
{{-   $n := include "bg.meshNames" . | fromJson -}}
{{-   $sd := (lookup "v1" "Secret" .Release.Namespace $n.serverSecret).data | default dict -}}
{{-   $cd := (lookup "v1" "Secret" $n.clientNs $n.clientSecret).data | default dict -}}
{{-   $pki := dict -}}
{{-   if and (index $sd "ca.crt") (index $sd "tls.crt") (index $sd "tls.key") (index $cd "tls.crt") (index $cd "tls.key") (eq (index $sd "ca.crt") (index $cd "ca.crt" | default "")) -}}
{{-     $pki = dict "ca" (index $sd "ca.crt" | b64dec) "serverCert" (index $sd "tls.crt" | b64dec) "serverKey" (index $sd "tls.key" | b64dec) "clientCert" (index $cd "tls.crt" | b64dec) "clientKey" (index $cd "tls.key" | b64dec) -}}
{{-   else -}}
{{-     $days := int .Values.mesh.broker.certificateDays -}}
{{-     $ca := genCA (printf "%s-broker-ca" (include "bg.name" .)) $days -}}
{{-     $short := printf "%s.%s.svc" $n.svc .Release.Namespace -}}
{{-     $s := genSignedCert $n.fqdn nil (list $n.fqdn $short (printf "%s.%s" $n.svc .Release.Namespace) $n.svc) $days $ca -}}
{{-     $c := genSignedCert $n.clientName nil (list $n.clientName) $days $ca -}}
{{-     $pki = dict "ca" $ca.Cert "serverCert" $s.Cert "serverKey" $s.Key "clientCert" $c.Cert "clientKey" $c.Key -}}
{{-   end -}}
{{-   $_ := set .Values "__bgMeshPKI" ($pki | toJson) -}}
{{- end -}}
{{- index .Values "__bgMeshPKI" -}}
{{- end -}}

{{/* The mesh feed's bearer token: mesh.feedToken, else the existing Secret's, else new; once per render. */}}
{{- define "bg.meshFeedToken" -}}
{{- if not (hasKey .Values "__bgMeshFeedToken") -}}
{{-   $t := .Values.mesh.feedToken -}}
{{-   if not $t -}}
{{-     $s := lookup "v1" "Secret" .Release.Namespace (printf "%s-broker-feed-token" (include "bg.name" .)) -}}
{{-     $t = (index ($s.data | default dict) "token" | default "" | b64dec) | default (randAlphaNum 48) -}}
{{-   end -}}
{{-   $_ := set .Values "__bgMeshFeedToken" $t -}}
{{- end -}}
{{- index .Values "__bgMeshFeedToken" -}}
{{- end -}}

{{/*
The standalone broker's config: bg.brokerConfig with the feed on the Pod
address behind mutual TLS (only the mesh's client certificate passes:
client_names) and, for Envoy Gateway's ext-authz plane, the ext_authz
settings (served by --grpc-listen 0.0.0.0:9001, same TLS).
*/}}
{{- define "bg.meshBrokerConfig" -}}
{{- $cfg := include "bg.brokerConfig" . | fromJson -}}
{{- $n := include "bg.meshNames" . | fromJson -}}
{{- $_ := set $cfg "http_listen" "0.0.0.0:9091" -}}
{{- $_ = set $cfg "tls" (dict "cert_file" "/run/tls/tls.crt" "key_file" "/run/tls/tls.key" "client_ca_file" "/run/tls/ca.crt" "client_names" (list $n.clientName)) -}}
{{- $_ = unset $cfg "ext_authz" -}}
{{- if include "bg.meshExtAuthz" . -}}
{{-   $_ = set $cfg "ext_authz" (include "bg.settings" . | fromJson) -}}
{{- end -}}
{{- $cfg | toPrettyJson -}}
{{- end -}}

{{/*
One backend as a mesh destination (JSON): bg.endpoint's fields plus
inCluster (a Service name <svc>.<ns>.svc[.<domain>]) and fqdn (the Service's
full name, or the host as it is).
*/}}
{{- define "bg.meshBackend" -}}
{{- $e := include "bg.endpoint" (dict "name" .b.name "endpoint" .b.endpoint) | fromJson -}}
{{- $domain := .root.Values.mesh.clusterDomain -}}
{{- $in := and (not $e.ip) (regexMatch (printf "^[a-z0-9]([-a-z0-9]*[a-z0-9])?\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?\\.svc(\\.%s)?$" (regexQuoteMeta $domain)) $e.host) -}}
{{- $fqdn := ternary (printf "%s.%s" $e.host $domain) $e.host (and $in (hasSuffix ".svc" $e.host)) -}}
{{- $_ := set $e "inCluster" $in -}}
{{- $_ = set $e "fqdn" $fqdn -}}
{{- $_ = set $e "name" .b.name -}}
{{- $e | toJson -}}
{{- end -}}
