//! The CRD in `manifests/crd/` is generated from the Rust type; this test is the generator and the
//! drift check. Run with `SSI_UPDATE_CRD=1` to rewrite the checked-in file after changing the type.

// Tests fail by panicking, helpers included.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use kube::CustomResourceExt;
use ssi_core::SecretsStoreImport;
use std::path::PathBuf;

/// The CRD for `kubectl apply`, and the chart's copy (Helm installs `crds/` before anything).
fn crd_paths() -> [PathBuf; 2] {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    [
        root.join("manifests/crd/secretsstoreimport.yaml"),
        root.join("charts/secrets-store-integration/crds/secretsstoreimport.yaml"),
    ]
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
fn checked_in_crds_match_the_rust_type() {
    let want = generated();
    for path in crd_paths() {
        if std::env::var_os("SSI_UPDATE_CRD").is_some() {
            std::fs::write(&path, &want).expect("write CRD");
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "{} is out of date with the SecretsStoreImport type; regenerate both copies with \
             `SSI_UPDATE_CRD=1 cargo test -p ssi-core --test crd`",
            path.display()
        );
    }
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
    assert!(file_required.contains(&"name".into()));
    // A file has `source` (one key of one secret) or `template` (rendered from several): the
    // driver checks that it has exactly one; the schema keeps both optional so that a template
    // needs no meaningless source.
    assert!(file["properties"]["source"]["required"] == serde_json::json!(["key", "path"]));
    assert!(file["properties"]["template"]["required"] == serde_json::json!(["sources", "text"]));
}

/// What Deckhouse's SecretsStoreImport schema accepts for `authPath` and `source.path`: one or
/// more of these characters (`^[-_./A-Za-z0-9]+$`).
fn deckhouse_accepts(value: &str) -> bool {
    !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

/// The pattern our generated CRD puts on `spec.authPath`.
fn our_auth_path_pattern() -> String {
    let crd = serde_json::to_value(SecretsStoreImport::crd()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        ["authPath"]["pattern"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn what_deckhouse_accepts_is_accepted_and_normalised_or_refused_with_the_reason() {
    use ssi_core::{SecretFile, SecretsStoreImportSpec};
    // The same character class as theirs: the apiserver takes every value theirs takes.
    assert_eq!(our_auth_path_pattern(), "^[-_./a-zA-Z0-9]+$");
    // value, what the driver uses (Ok) or the reason it refuses (Err).
    let table: [(&str, Result<&str, &str>); 10] = [
        ("kubernetes", Ok("kubernetes")),
        ("kube/", Ok("kube")),
        ("/kube", Ok("kube")),
        ("clusters/main-kube", Ok("clusters/main-kube")),
        ("/demo-kv/data/x", Ok("demo-kv/data/x")),
        ("demo-kv/data/x/", Ok("demo-kv/data/x")),
        ("a//b", Err("empty segment")),
        ("../sys/raw", Err("'..' segment")),
        ("a/./b", Err("'.' or '..' segment")),
        ("/", Err("is empty")),
    ];
    for (value, expected) in table {
        assert!(deckhouse_accepts(value), "{value}: theirs must accept it");
        let mut spec =
            SecretsStoreImportSpec::new("my-role", vec![SecretFile::new("f", value, "k")]);
        spec.auth_path = Some(value.to_owned());
        spec.normalize();
        match expected {
            Ok(used) => {
                assert_eq!(spec.validate(), Ok(()), "{value}");
                assert_eq!(spec.auth_path.as_deref(), Some(used), "{value}");
                assert_eq!(spec.files[0].source.as_ref().unwrap().path, used, "{value}");
            }
            Err(reason) => {
                let problems = spec.validate().unwrap_err().problems;
                assert_eq!(problems.len(), 2, "authPath and source.path: {problems:?}");
                for problem in problems {
                    assert!(problem.contains(reason), "{value}: {problem}");
                }
            }
        }
    }
}
