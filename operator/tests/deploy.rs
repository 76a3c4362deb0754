//! deploy/: every manifest parses and the kustomization lists files that
//! exist; the chart's gateway Service (`target/chart/<mode>.yaml`, written
//! by `make chart`, which `make test` runs first) listens on the contract's
//! port.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

fn docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|v| !v.is_null())
        .collect()
}

#[test]
fn manifests_parse_and_kustomization_is_complete() {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let k = &docs(&deploy.join("kustomization.yaml"))[0];
    let resources: Vec<&str> = k["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    let mut kinds = Vec::new();
    for r in &resources {
        for d in docs(&deploy.join(r)) {
            assert!(
                d["apiVersion"].is_string() && d["kind"].is_string(),
                "{r}: {d}"
            );
            kinds.push(d["kind"].as_str().unwrap().to_owned());
        }
    }
    for want in [
        "Namespace",
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "Role",
        "RoleBinding",
    ] {
        assert!(kinds.iter().any(|k| k == want), "missing {want}");
    }
}

#[test]
fn the_charts_gateway_service_is_the_contracts_endpoint() {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/chart");
    for mode in ["native", "wasm", "ext-authz"] {
        let path = target.join(format!("{mode}.yaml"));
        assert!(path.exists(), "{}: run `make chart`", path.display());
        let all = docs(&path);
        let svc = all
            .iter()
            .find(|d| d["kind"] == "Service" && d["metadata"]["name"] == "stowage")
            .unwrap();
        assert_eq!(
            svc["spec"]["ports"][0]["port"],
            bucketgate_core::contract::GATEWAY_PORT
        );
    }
}
