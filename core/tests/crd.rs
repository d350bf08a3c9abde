//! The CRD in `manifests/crd/` is generated from the Rust type; this test is the generator and the
//! drift check. Run with `SSI_UPDATE_CRD=1` to rewrite the checked-in file after changing the type.

// Tests fail by panicking, helpers included.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use kube::CustomResourceExt;
use ssi_core::SecretsStoreImport;
use std::path::PathBuf;

fn crd_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manifests/crd/secretsstoreimport.yaml")
}

fn generated() -> String {
    let crd = SecretsStoreImport::crd();
    let yaml = serde_yaml::to_string(&crd).expect("CRD serialises");
    format!(
        "# Generated from ssi-core's SecretsStoreImport type; do not edit.\n\
         # Regenerate: SSI_UPDATE_CRD=1 cargo test -p ssi-core --test crd\n{yaml}"
    )
}

#[test]
fn checked_in_crd_matches_the_rust_type() {
    let path = crd_path();
    let want = generated();
    if std::env::var_os("SSI_UPDATE_CRD").is_some() {
        std::fs::write(&path, &want).expect("write CRD");
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "{} is out of date with the SecretsStoreImport type; regenerate it with \
         `SSI_UPDATE_CRD=1 cargo test -p ssi-core --test crd`",
        path.display()
    );
}

#[test]
fn crd_carries_the_contracted_schema() {
    let crd = serde_json::to_value(SecretsStoreImport::crd()).expect("CRD to JSON");
    assert_eq!(crd["spec"]["group"], "deckhouse.io");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert_eq!(crd["spec"]["names"]["shortNames"][0], "ssi");
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let required: Vec<&str> = spec["required"]
        .as_array()
        .expect("required list")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    for field in ["type", "role", "files"] {
        assert!(
            required.contains(&field),
            "spec.{field} must be required, got {required:?}"
        );
    }
    assert_eq!(
        spec["properties"]["type"]["enum"],
        serde_json::json!(["CSI"])
    );
    assert_eq!(spec["properties"]["role"]["pattern"], r"^[-_\.a-zA-Z0-9]+$");
    assert_eq!(spec["properties"]["address"]["pattern"], r"^https?://.+$");
    assert_eq!(spec["properties"]["files"]["minItems"], 1);
    let file = &spec["properties"]["files"]["items"];
    assert_eq!(file["properties"]["name"]["pattern"], r"^[-_a-zA-Z0-9.]+$");
    assert_eq!(file["properties"]["decodeBase64"]["default"], false);
    let file_required = file["required"].as_array().expect("file required list");
    assert!(file_required.contains(&"name".into()) && file_required.contains(&"source".into()));
}
