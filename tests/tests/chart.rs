//! The Helm chart (charts/secrets-store-integration) with the real helm, built from its Go module
//! by tests/bed/provision.sh: it lints, refuses wrong values at install time, follows the
//! workspace's version and CRD, and what it renders passes the real apiserver's server-side dry
//! run, with generated certificates and with cert-manager's.

// Tests fail by panicking, helpers included.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use ssi_tests::process::{cert_manager_crds, tool};
use ssi_tests::{TestBed, run, workspace_path};
use std::process::Command;

const NAMESPACE: &str = "secrets-store-integration";

fn chart() -> String {
    workspace_path("charts/secrets-store-integration")
        .display()
        .to_string()
}

fn helm() -> Command {
    let mut command = Command::new(tool("helm").unwrap());
    // NB: helm keeps its own state below HOME; a test must not touch the user's.
    let home = std::env::temp_dir().join("ssi-helm-home");
    command
        .env("HOME", &home)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"));
    command
}

/// `helm template` of the chart with `values` (`--set` pairs), or helm's error text.
fn template(values: &[&str]) -> Result<String, String> {
    let mut command = helm();
    command.args(["template", "ssi", &chart(), "--namespace", NAMESPACE]);
    for value in values {
        command.args(["--set", value]);
    }
    let output = command.output().unwrap();
    if output.status.success() {
        Ok(String::from_utf8(output.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

const ADDRESS: &str = "store.address=https://vault.example.com:8200";

#[test]
fn the_chart_lints_and_follows_the_workspace_version_and_crd() {
    let lint = run(helm().args(["lint", "--strict", &chart(), "--set", ADDRESS])).unwrap();
    assert!(lint.contains("0 chart(s) failed"), "{lint}");

    let cargo = std::fs::read_to_string(workspace_path("Cargo.toml")).unwrap();
    let version = cargo
        .lines()
        .find_map(|line| line.strip_prefix("version = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .expect("the workspace version");
    let chart_yaml = std::fs::read_to_string(workspace_path(
        "charts/secrets-store-integration/Chart.yaml",
    ))
    .unwrap();
    assert!(
        chart_yaml.contains(&format!("\nversion: {version}\n")),
        "{chart_yaml}"
    );
    assert!(
        chart_yaml.contains(&format!("\nappVersion: \"{version}\"\n")),
        "{chart_yaml}"
    );

    let rendered = template(&[ADDRESS]).unwrap();
    for image in ["ssi-csi", "ssi-webhook", "ssi-injector"] {
        assert!(
            rendered.contains(&format!("secrets-store-integration/{image}:{version}")),
            "{image} follows the version"
        );
    }
    // The CRD is generated from the Rust type into manifests/crd (core/tests/crd.rs); the
    // chart carries the same bytes.
    assert_eq!(
        std::fs::read_to_string(workspace_path(
            "charts/secrets-store-integration/crds/secretsstoreimport.yaml"
        ))
        .unwrap(),
        std::fs::read_to_string(workspace_path("manifests/crd/secretsstoreimport.yaml")).unwrap(),
        "copy manifests/crd/secretsstoreimport.yaml into the chart's crds/"
    );
}

#[test]
fn a_wrong_value_fails_at_install_time_and_names_it() {
    for (values, named) in [
        (vec![], "address"),
        (vec!["store.address=vault.example.com"], "address"),
        (
            vec![ADDRESS, "csi.rotationInterval=soon"],
            "rotationInterval",
        ),
        (
            vec![ADDRESS, "webhook.subPathPolicy=maybe"],
            "subPathPolicy",
        ),
        (
            vec![ADDRESS, "webhook.failurePolicy.enforce=Never"],
            "enforce",
        ),
        (vec![ADDRESS, "webhook.replica=3"], "replica"),
        (vec![ADDRESS, "csi.extraEnv.RUST_LOG=debug"], "RUST_LOG"),
        (vec![ADDRESS, "webhook.certificate.source=vault"], "source"),
    ] {
        let error = template(&values).expect_err(&format!("{values:?} must be refused"));
        assert!(
            error.contains("values don't meet the specifications of the schema")
                && error.contains(named),
            "{values:?}: {error}"
        );
    }
}

/// `kubectl apply --dry-run=server -o json -f -` of `manifests`: the objects as the apiserver
/// would store them.
fn dry_run(bed: &TestBed, manifests: &str) -> Vec<serde_json::Value> {
    let path = bed.dir().join("rendered.yaml");
    std::fs::write(&path, manifests).unwrap();
    let output = run(bed.kubectl().args([
        "apply",
        "--dry-run=server",
        "-o",
        "json",
        "-f",
        path.to_str().unwrap(),
    ]))
    .unwrap();
    let applied: serde_json::Value = serde_json::from_str(&output).unwrap();
    applied["items"].as_array().expect("a list").clone()
}

fn kinds(items: &[serde_json::Value]) -> Vec<&str> {
    items.iter().filter_map(|i| i["kind"].as_str()).collect()
}

#[tokio::test]
async fn what_the_chart_renders_passes_a_server_side_dry_run() {
    let bed = TestBed::builder()
        .without_openbao()
        .start()
        .await
        .expect("test bed");
    // A dry run creates nothing, so the objects inside the namespace need it to exist for real.
    run(bed.kubectl().args(["create", "namespace", NAMESPACE])).unwrap();

    let generated = dry_run(
        &bed,
        &template(&[ADDRESS, "namespace.create=true"]).unwrap(),
    );
    let found = kinds(&generated);
    for kind in [
        "Namespace",
        "CSIDriver",
        "DaemonSet",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "Secret",
        "MutatingWebhookConfiguration",
    ] {
        assert!(found.contains(&kind), "{kind} missing from {found:?}");
    }
    let namespace = generated.iter().find(|i| i["kind"] == "Namespace").unwrap();
    assert_eq!(
        namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "privileged"
    );
    assert_eq!(
        namespace["metadata"]["annotations"]["helm.sh/resource-policy"], "keep",
        "uninstalling never deletes the namespace"
    );
    // The generated CA is the one the webhook configuration trusts.
    let secret = generated.iter().find(|i| i["kind"] == "Secret").unwrap();
    let configuration = generated
        .iter()
        .find(|i| i["kind"] == "MutatingWebhookConfiguration")
        .unwrap();
    for webhook in configuration["webhooks"].as_array().unwrap() {
        assert_eq!(
            webhook["clientConfig"]["caBundle"],
            secret["data"]["ca.crt"]
        );
        assert_eq!(webhook["failurePolicy"], "Fail");
    }

    // cert-manager's variant, against cert-manager's own CRDs.
    for crd in cert_manager_crds().unwrap() {
        run(bed.kubectl().arg("apply").arg("-f").arg(&crd)).unwrap();
    }
    run(bed.kubectl().args([
        "wait",
        "--for=condition=Established",
        "--timeout=30s",
        "crd/certificates.cert-manager.io",
        "crd/issuers.cert-manager.io",
    ]))
    .unwrap();
    let issued = dry_run(
        &bed,
        &template(&[
            ADDRESS,
            "webhook.certificate.source=cert-manager",
            "webhook.failurePolicy.inject=Ignore",
        ])
        .unwrap(),
    );
    let found = kinds(&issued);
    assert!(
        found.contains(&"Certificate") && found.contains(&"Issuer"),
        "{found:?}"
    );
    assert!(!found.contains(&"Secret"), "cert-manager writes the Secret");
    let configuration = issued
        .iter()
        .find(|i| i["kind"] == "MutatingWebhookConfiguration")
        .unwrap();
    assert_eq!(
        configuration["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        format!("{NAMESPACE}/ssi-webhook")
    );
    assert_eq!(configuration["webhooks"][1]["failurePolicy"], "Ignore");
}
