//! The broker config the Helm chart renders (ConfigMap `bucketgate-authz`
//! in `target/chart/<mode>.yaml`, written by `make chart`, which `make test`
//! runs first) is one this binary accepts in every mode, and the gateway
//! Deployment runs it with flags `serve` has; its listeners meet the
//! loopback-or-mTLS rule and the probes reach the health listener.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use bucketgate_authz::cli::{Cli, Command};
use bucketgate_authz::config::ServiceConfig;
use clap::Parser;
use serde::Deserialize;
use serde_json::Value;

const MODES: [&str; 3] = ["native", "wasm", "ext-authz"];

fn gateway_docs(mode: &str) -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../target/chart/{mode}.yaml"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run `make chart`)", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

#[test]
fn shipped_config_parses_and_the_container_args_are_accepted() {
    for mode in MODES {
        check(mode);
    }
}

fn check(mode: &str) {
    let docs = gateway_docs(mode);
    let cm = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "bucketgate-authz")
        .expect("ConfigMap bucketgate-authz");
    let json = cm["data"]["config.json"].as_str().unwrap();
    let config = ServiceConfig::parse(json.as_bytes()).expect("the shipped config is valid");
    assert!(config.kubernetes.enabled);
    assert_eq!(
        config.kubernetes.namespace.as_deref(),
        Some("stowage-system")
    );

    // The ext_authz section exactly in ext-authz mode.
    assert_eq!(config.ext_authz.is_some(), mode == "ext-authz", "{mode}");

    let deploy = docs
        .iter()
        .find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == "bucketgate-gateway")
        .unwrap();
    let containers = deploy["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    let authz = containers.iter().find(|c| c["name"] == "authz").unwrap();
    let mut argv = vec!["bucketgate-authz".to_owned()];
    argv.extend(
        authz["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_owned()),
    );
    let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    // The listener rule, as `serve` checks it at start (parse checked
    // http_listen already).
    let Command::Serve(serve) = cli.command else {
        panic!("{argv:?} is not `serve`")
    };
    assert_eq!(serve.grpc_listen.is_some(), mode == "ext-authz", "{mode}");
    if let Some(a) = serve.http_listen {
        config.check_listener("--http-listen", a).unwrap();
    }
    if let Some(a) = serve.grpc_listen {
        config.check_listener("--grpc-listen", a).unwrap();
    }
    // Probes and metrics: the plain health listener, on the Pod address
    // (the kubelet does not reach the container's loopback).
    let health = config.health_listen.expect("health_listen for the probes");
    assert!(!health.ip().is_loopback(), "{health}");
    let ports = authz["ports"].as_array().unwrap();
    for probe in ["livenessProbe", "readinessProbe"] {
        let port = &authz[probe]["httpGet"]["port"];
        let number = ports
            .iter()
            .find(|p| p["name"] == *port || p["containerPort"] == *port)
            .unwrap_or_else(|| panic!("{probe}: no port {port}"))["containerPort"]
            .as_u64()
            .unwrap();
        assert_eq!(number, u64::from(health.port()), "{probe}");
    }
    // The config the container reads is the ConfigMap's mount.
    let env = authz["env"].as_array().unwrap();
    let config_path = env
        .iter()
        .find(|e| e["name"] == "BUCKETGATE_CONFIG")
        .unwrap()["value"]
        .as_str()
        .unwrap();
    let mount = authz["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "authz-config")
        .unwrap()["mountPath"]
        .as_str()
        .unwrap();
    assert_eq!(config_path, format!("{mount}/config.json"));
}
