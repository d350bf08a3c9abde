//! The shipped manifests against the real kube-apiserver: accepted by a server-side dry run, and
//! nothing the driver relies on silently dropped.

// Tests fail by panicking, helpers included.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use ssi_tests::{TestBed, run, workspace_path};

#[tokio::test]
async fn csi_manifests_pass_a_server_side_dry_run_with_every_field_kept() {
    let bed = TestBed::builder()
        .without_openbao()
        .start()
        .await
        .expect("test bed");
    // A dry run creates nothing, so the objects inside the namespace need it to exist for real.
    run(bed
        .kubectl()
        .args(["create", "namespace", "secrets-store-integration"]))
    .unwrap();
    let dir = workspace_path("manifests/csi");
    let output = run(bed.kubectl().args([
        "apply",
        "--dry-run=server",
        "-o",
        "json",
        "-k",
        dir.to_str().unwrap(),
    ]))
    .unwrap();
    let applied: serde_json::Value = serde_json::from_str(&output).unwrap();
    let items = applied["items"]
        .as_array()
        .expect("a list of applied objects");
    let kinds: Vec<&str> = items.iter().filter_map(|i| i["kind"].as_str()).collect();
    for kind in [
        "Namespace",
        "CSIDriver",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "DaemonSet",
        "ConfigMap",
    ] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }

    // NB: on 1.20 tokenRequests and requiresRepublish are alpha; an apiserver without the
    // CSIServiceAccountToken gate accepts the object and silently drops both.
    let driver = items.iter().find(|i| i["kind"] == "CSIDriver").unwrap();
    let spec = &driver["spec"];
    assert_eq!(spec["attachRequired"], false);
    assert_eq!(spec["podInfoOnMount"], true);
    assert_eq!(
        spec["volumeLifecycleModes"],
        serde_json::json!(["Ephemeral"])
    );
    assert_eq!(spec["tokenRequests"][0]["audience"], "vault", "{spec}");
    assert_eq!(spec["requiresRepublish"], true, "{spec}");

    let daemonset = items.iter().find(|i| i["kind"] == "DaemonSet").unwrap();
    let containers = daemonset["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    let names: Vec<&str> = containers
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["driver", "node-driver-registrar", "liveness-probe"]);
    let driver_container = &containers[0];
    assert_eq!(driver_container["securityContext"]["privileged"], true);
    let kubelet_mount = driver_container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == "/var/lib/kubelet")
        .expect("kubelet dir mounted");
    assert_eq!(kubelet_mount["mountPropagation"], "Bidirectional");
    for container in containers {
        assert!(
            container["resources"]["limits"]["memory"].is_string(),
            "{} has no memory limit",
            container["name"]
        );
    }
    assert!(
        driver_container["image"]
            .as_str()
            .unwrap()
            .starts_with("secrets-store-integration/ssi-csi:")
    );
}
