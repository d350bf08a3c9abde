//! The Deckhouse module's usage examples, written from its documentation (not copied), through
//! our webhook, driver and injector on the bed: the objects and pods a Deckhouse user has work
//! here unchanged, with the module's connection settings given as our components' defaults.

// Tests fail by panicking, helpers included.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use base64::Engine;
use ssi_tests::csi::{CsiDriver, DriverOptions, create_pod, publish, workspace_binary};
use ssi_tests::walkthrough::{self, Narrator, VaultSetup};
use ssi_tests::webhook::Webhook;
use ssi_tests::{TestBed, run};
use std::process::{Command, Stdio};

const NAMESPACE: &str = "myapp-namespace";
const SERVICE_ACCOUNT: &str = "myapp-sa";
/// The module's `connection.authPath` in their example; our driver's and webhook's default.
const AUTH_PATH: &str = "main-kube";

/// The store and the cluster as Deckhouse's usage guide sets them up: a KV v2 engine at
/// `demo-kv` with `myapp-secret`, a read policy, a role for `myapp-sa` in `myapp-namespace`.
async fn deckhouse_bed() -> TestBed {
    let bed = TestBed::start().await.expect("test bed");
    // Our guide's setup brings the Kubernetes auth mount (reviewer included) and the CRD.
    walkthrough::run(&bed, VaultSetup::Cli, &mut Narrator::quiet())
        .await
        .unwrap();
    let bao = |args: &[&str]| run(bed.bao().unwrap().args(args)).unwrap();
    bao(&["secrets", "enable", "-path=demo-kv", "-version=2", "kv"]);
    bao(&[
        "kv",
        "put",
        "demo-kv/myapp-secret",
        "DB_USER=username",
        "DB_PASS=secret-password",
    ]);
    // The guide's myapp1 also imports a common secret, which it never creates; we do.
    bao(&["kv", "put", "demo-kv/common-secret", "COMMON=shared"]);
    let policy = bed.dir().join("myapp-ro-policy.hcl");
    std::fs::write(
        &policy,
        "path \"demo-kv/data/myapp-secret\" {\n  capabilities = [\"read\"]\n}\n\
         path \"demo-kv/data/common-secret\" {\n  capabilities = [\"read\"]\n}\n",
    )
    .unwrap();
    run(bed
        .bao()
        .unwrap()
        .args(["policy", "write", "myapp-ro-policy"])
        .arg(&policy))
    .unwrap();
    bao(&[
        "write",
        &format!("auth/{AUTH_PATH}/role/myapp-role"),
        "bound_service_account_names=myapp-sa",
        "bound_service_account_namespaces=myapp-namespace",
        "policies=myapp-ro-policy",
        "ttl=10m",
    ]);
    run(bed.kubectl().args(["create", "namespace", NAMESPACE])).unwrap();
    run(bed
        .kubectl()
        .args(["-n", NAMESPACE, "create", "serviceaccount", SERVICE_ACCOUNT]))
    .unwrap();
    // Their guide's first option for token reviews: the logging-in account may review tokens
    // itself (our guide's mount reviews with the client's own token too).
    run(bed.kubectl().args([
        "create",
        "clusterrolebinding",
        "myapp-sa-auth-delegator",
        "--clusterrole=system:auth-delegator",
        &format!("--serviceaccount={NAMESPACE}:{SERVICE_ACCOUNT}"),
    ]))
    .unwrap();
    bed
}

#[tokio::test]
async fn the_usage_guides_import_mounts_its_file_also_with_deckhouse_shaped_paths() {
    let bed = deckhouse_bed().await;
    // Their example as written, and the same with the slashes their schema allows.
    for (name, auth_path, path) in [
        ("myapp-ssi", None, "demo-kv/data/myapp-secret"),
        (
            "myapp-ssi-slashes",
            Some("main-kube/"),
            "/demo-kv/data/myapp-secret/",
        ),
    ] {
        let auth = auth_path.map_or(String::new(), |p| format!("  authPath: {p}\n"));
        bed.apply_yaml(&format!(
            "apiVersion: deckhouse.io/v1alpha1\nkind: SecretsStoreImport\nmetadata:\n  name: {name}\n  \
             namespace: {NAMESPACE}\nspec:\n  type: CSI\n  role: myapp-role\n{auth}  files:\n    \
             - name: \"db-password\"\n      source:\n        path: \"{path}\"\n        key: \"DB_PASS\"\n"
        ))
        .unwrap();
    }
    let driver = CsiDriver::start(&bed, DriverOptions::default())
        .await
        .unwrap();
    for (pod, ssi) in [("myapp3", "myapp-ssi"), ("myapp4", "myapp-ssi-slashes")] {
        let volume = create_pod(&bed, &driver, NAMESPACE, pod, SERVICE_ACCOUNT, ssi)
            .await
            .unwrap();
        publish(&bed, &driver, &volume)
            .await
            .unwrap_or_else(|e| panic!("{ssi}: {e}\n{}", driver.log()));
        assert_eq!(
            std::fs::read_to_string(volume.target.join("db-password")).unwrap(),
            "secret-password",
            "{ssi}"
        );
    }
}

/// A Pod the way their guide writes it (`myapp1` with env-from-path, `myapp2` with explicit
/// references), reviewed by our webhook, then started the way the patched container says, with
/// `printenv` in place of the example's endless loop.
#[tokio::test]
async fn the_usage_guides_env_pods_are_injected_and_get_their_values() {
    let bed = deckhouse_bed().await;
    // The module's connection settings (url, authPath) as the webhook's defaults: the pods name
    // only their role.
    let webhook = Webhook::start(
        &bed,
        &[
            "--ssi-lookup=false",
            "--registry-lookup=false",
            &format!("--injector-default-address={}", bed.openbao().addr),
            &format!("--injector-default-auth-path={AUTH_PATH}"),
        ],
    )
    .await
    .unwrap();
    let token = run(bed
        .kubectl()
        .args(["-n", NAMESPACE, "create", "token", SERVICE_ACCOUNT]))
    .unwrap();
    let token_file = bed.dir().join("myapp-token");
    std::fs::write(&token_file, token.trim()).unwrap();
    let loop_command = serde_json::json!(["sh", "-c", "while printenv; do sleep 5; done"]);
    let myapp1 = serde_json::json!({"kind": "Pod", "apiVersion": "v1",
        "metadata": {"name": "myapp1", "namespace": NAMESPACE, "annotations": {
            "secrets-store.deckhouse.io/role": "myapp-role",
            "secrets-store.deckhouse.io/env-from-path": "demo-kv/data/common-secret,demo-kv/data/myapp-secret"}},
        "spec": {"serviceAccountName": SERVICE_ACCOUNT, "containers": [
            {"image": "alpine:3.20", "name": "myapp", "command": loop_command}]}});
    let myapp2 = serde_json::json!({"kind": "Pod", "apiVersion": "v1",
        "metadata": {"name": "myapp2", "namespace": NAMESPACE, "annotations": {
            "secrets-store.deckhouse.io/role": "myapp-role"}},
        "spec": {"serviceAccountName": SERVICE_ACCOUNT, "containers": [
            {"image": "alpine:3.20", "name": "myapp", "command": loop_command, "env": [
                {"name": "DB_USER", "value": "secrets-store:demo-kv/data/myapp-secret#DB_USER"},
                {"name": "DB_PASS", "value": "secrets-store:demo-kv/data/myapp-secret#DB_PASS"}]}]}});

    for pod in [myapp1, myapp2] {
        let name = pod["metadata"]["name"].as_str().unwrap().to_owned();
        let review = serde_json::json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": NAMESPACE, "operation": "CREATE", "object": pod}});
        let answer = webhook.review(&review).await.unwrap();
        assert_eq!(answer["response"]["allowed"], true, "{answer}");
        let patch = base64::engine::general_purpose::STANDARD
            .decode(answer["response"]["patch"].as_str().unwrap())
            .unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
        let mut patched = review["request"]["object"].clone();
        json_patch::patch(&mut patched, &patch).unwrap();
        let spec = &patched["spec"];
        assert_eq!(
            spec["initContainers"][0]["command"],
            serde_json::json!(["/ssi-injector", "copy", "/secrets-store-injector"])
        );
        let container = &spec["containers"][0];
        assert_eq!(
            container["command"],
            serde_json::json!(["/secrets-store-injector/ssi-injector"])
        );
        assert_eq!(container["args"], loop_command, "{name}");

        // The container as kubelet would start it, on this machine: its env, our binary.
        let mut command = Command::new(workspace_binary("ssi-injector").unwrap());
        command.env_clear().env("PATH", "/usr/bin:/bin");
        for variable in container["env"].as_array().unwrap() {
            command.env(
                variable["name"].as_str().unwrap(),
                variable["value"].as_str().unwrap(),
            );
        }
        command
            .env("SSI_INJECTOR_TOKEN_PATH", &token_file)
            .arg("printenv")
            .stdin(Stdio::null());
        let output = command.output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{name}: {stderr}");
        assert!(
            stdout.contains("DB_USER=username\n") && stdout.contains("DB_PASS=secret-password\n"),
            "{name}: {stdout}"
        );
        if name == "myapp1" {
            assert!(stdout.contains("COMMON=shared\n"), "{stdout}");
        }
        assert!(!stderr.contains("secret-password"), "{stderr}");
    }
}
