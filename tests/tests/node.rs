//! The real node: kubelet and containerd run pods the apiserver schedules, inside the bed's own
//! network namespace, and leave nothing behind.

// Tests fail by panicking, helpers included.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use ssi_tests::csi::{CsiDriver, DriverOptions};
use ssi_tests::node::{NODE_NAME, Node};
use ssi_tests::walkthrough::{self, Narrator, VaultSetup};
use ssi_tests::webhook::Webhook;
use ssi_tests::{TestBed, run, wait, workspace_path};
use std::time::Duration;

/// Waits until the pod ran to completion; its description if it failed or took over 2 minutes.
async fn wait_until_succeeded(bed: &TestBed, namespace: &str, pod: &str) {
    let describe = || {
        run(bed
            .kubectl()
            .args(["describe", "pod", pod, "-n", namespace]))
        .unwrap_or_default()
    };
    let phase = wait::until(
        Duration::from_secs(120),
        &format!("pod {pod} to finish"),
        || {
            let phase = run(bed.kubectl().args([
                "get",
                "pod",
                pod,
                "-n",
                namespace,
                "-o",
                "jsonpath={.status.phase}",
            ]))
            .unwrap_or_default();
            match phase.as_str() {
                "Succeeded" | "Failed" => Ok(phase),
                _ => Err(describe()),
            }
        },
    )
    .await
    .unwrap();
    assert_eq!(phase, "Succeeded", "{pod}:\n{}", describe());
}

#[tokio::test]
async fn the_node_comes_up_runs_a_pod_and_leaves_nothing_behind() {
    let bed = TestBed::builder()
        .without_openbao()
        .start()
        .await
        .expect("test bed");
    let node = Node::start(&bed).await.expect("node");
    // The node runs the bed's release, on the runtime the README names.
    let info: serde_json::Value = serde_json::from_str(
        &run(bed.kubectl().args([
            "get",
            "node",
            NODE_NAME,
            "-o",
            "jsonpath={.status.nodeInfo}",
        ]))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        info["kubeletVersion"],
        bed.kube_version().unwrap(),
        "{info}"
    );
    assert!(
        info["containerRuntimeVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("containerd://")),
        "{info}"
    );
    eprintln!("node: {info}");
    let busybox = ssi_tests::images::busybox_image(&bed.dir().join("images")).unwrap();
    node.load_image(&busybox).unwrap();

    let pod = serde_json::json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "hello", "namespace": "default"},
        "spec": {"automountServiceAccountToken": false, "restartPolicy": "Never",
            "containers": [{"name": "hello", "image": "ssi-testbed/busybox:1",
                "imagePullPolicy": "Never",
                "command": ["sh", "-c", "echo hello from $(cat /proc/sys/kernel/hostname)"]}]}});
    let path = bed.dir().join("hello.json");
    std::fs::write(&path, pod.to_string()).unwrap();
    run(bed.kubectl().args(["create", "-f"]).arg(&path)).unwrap();
    wait_until_succeeded(&bed, "default", "hello").await;
    let node_name =
        run(bed
            .kubectl()
            .args(["get", "pod", "hello", "-o", "jsonpath={.spec.nodeName}"]))
        .unwrap();
    assert_eq!(node_name, NODE_NAME);
    let logs = run(bed.kubectl().args(["logs", "hello"])).unwrap();
    assert_eq!(logs.trim(), "hello from hello");
    node.stop().expect("clean teardown");
}

/// Polls `kubectl logs` of the pods matching `selector` until `expected` appears.
async fn wait_for_log(bed: &TestBed, selector: &str, expected: &str, within: Duration) -> String {
    let what = format!("{expected:?} in the log of {selector}");
    wait::until(within, &what, || {
        let output = bed
            .kubectl()
            .args([
                "logs",
                "-n",
                walkthrough::NAMESPACE,
                "-l",
                selector,
                "--tail=5",
            ])
            .output()
            .map_err(|e| e.to_string())?;
        let logs = String::from_utf8_lossy(&output.stdout).into_owned();
        if logs.contains(expected) {
            return Ok(logs);
        }
        let describe = run(bed.kubectl().args([
            "describe",
            "pods",
            "-n",
            walkthrough::NAMESPACE,
            "-l",
            selector,
        ]))
        .unwrap_or_default();
        Err(format!(
            "{logs}{}\n{describe}",
            String::from_utf8_lossy(&output.stderr)
        ))
    })
    .await
    .unwrap()
}

/// The guide's store set-up and a real node with the busybox and injector images, the CSIDriver,
/// our driver registered by that node's kubelet (rotating every 3 s) and our webhook registered.
async fn node_with_driver_and_webhook() -> (TestBed, Node, CsiDriver, Webhook) {
    let bed = TestBed::start().await.expect("test bed");
    walkthrough::run(&bed, VaultSetup::Cli, &mut Narrator::quiet())
        .await
        .unwrap();
    let node = Node::start(&bed).await.expect("node");
    let images = bed.dir().join("images");
    node.load_image(&ssi_tests::images::busybox_image(&images).unwrap())
        .unwrap();
    node.load_image(&ssi_tests::images::injector_image(&images).unwrap())
        .unwrap();
    ssi_tests::chart::apply_csidriver(&bed).unwrap();
    let driver = CsiDriver::start(
        &bed,
        DriverOptions {
            kubelet_root: Some(node.kubelet_root.clone()),
            rotation_interval: "3s".into(),
            ..DriverOptions::default()
        },
    )
    .await
    .unwrap();
    driver.registered_by_kubelet(&bed).await.unwrap();
    let webhook = Webhook::start(&bed, &[]).await.unwrap();
    webhook.register(&bed).await.unwrap();
    (bed, node, driver, webhook)
}

#[tokio::test]
async fn kubelet_registers_the_driver_mounts_the_guides_secret_and_rotation_reaches_the_pod() {
    let (bed, node, driver, webhook) = node_with_driver_and_webhook().await;
    // The guide's Deployment with a busybox app that prints the mounted password, admitted
    // through our webhook.
    let deployment = serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "backend", "namespace": walkthrough::NAMESPACE},
        "spec": {"selector": {"matchLabels": {"app": "backend"}},
            "template": {"metadata": {"labels": {"app": "backend"}},
                "spec": {"serviceAccountName": walkthrough::SERVICE_ACCOUNT,
                    "automountServiceAccountToken": false,
                    "containers": [{"name": "backend", "image": "ssi-testbed/busybox:1",
                        "imagePullPolicy": "Never",
                        "command": ["sh", "-c", "while true; do echo \"$(date +%T) $(cat /mnt/secrets/db-password)\"; sleep 1; done"],
                        "volumeMounts": [{"name": "secrets", "mountPath": "/mnt/secrets"}]}],
                    "volumes": [{"name": "secrets", "csi": {"driver": "secrets-store.csi.deckhouse.io",
                        "volumeAttributes": {"secretsStoreImport": "python-backend"}}}]}}}});
    let path = bed.dir().join("backend.json");
    std::fs::write(&path, deployment.to_string()).unwrap();
    run(bed.kubectl().args(["apply", "-f"]).arg(&path)).unwrap();
    wait_for_log(
        &bed,
        "app=backend",
        walkthrough::PASSWORD,
        Duration::from_secs(120),
    )
    .await;
    let volume = run(bed.kubectl().args([
        "get",
        "pods",
        "-n",
        walkthrough::NAMESPACE,
        "-l",
        "app=backend",
        "-o",
        "jsonpath={.items[0].spec.volumes[0].csi.readOnly}",
    ]))
    .unwrap();
    assert_eq!(volume, "true", "the webhook made the volume read-only");

    run(bed.bao().unwrap().args([
        "kv",
        "put",
        "secret/database-for-python-app",
        "password=changed-on-the-node",
    ]))
    .unwrap();
    wait_for_log(
        &bed,
        "app=backend",
        "changed-on-the-node",
        Duration::from_secs(60),
    )
    .await;

    // allow-subpath on a Deployment covers the Pods its ReplicaSet creates: the subPath pod runs
    // (with the warning at apply), reading a file that will never rotate.
    let subpath = serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "backend-subpath", "namespace": walkthrough::NAMESPACE,
            "annotations": {"secrets-store.deckhouse.io/allow-subpath": "true"}},
        "spec": {"selector": {"matchLabels": {"app": "backend-subpath"}},
            "template": {"metadata": {"labels": {"app": "backend-subpath"}},
                "spec": {"serviceAccountName": walkthrough::SERVICE_ACCOUNT,
                    "automountServiceAccountToken": false,
                    "containers": [{"name": "backend", "image": "ssi-testbed/busybox:1",
                        "imagePullPolicy": "Never",
                        "command": ["sh", "-c", "while true; do echo \"subpath $(cat /app/password)\"; sleep 1; done"],
                        "volumeMounts": [{"name": "secrets", "mountPath": "/app/password", "subPath": "db-password"}]}],
                    "volumes": [{"name": "secrets", "csi": {"driver": "secrets-store.csi.deckhouse.io",
                        "volumeAttributes": {"secretsStoreImport": "python-backend"}}}]}}}});
    let path = bed.dir().join("backend-subpath.json");
    std::fs::write(&path, subpath.to_string()).unwrap();
    let applied = bed
        .kubectl()
        .args(["apply", "-f"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&applied.stderr);
    assert!(applied.status.success(), "{stderr}");
    assert!(
        stderr.contains("Warning") && stderr.contains("subPath"),
        "{stderr}"
    );
    wait_for_log(
        &bed,
        "app=backend-subpath",
        "subpath changed-on-the-node",
        Duration::from_secs(120),
    )
    .await;
    // Its volume goes with the others' below (delete_deployment waits for every CSI volume).
    run(bed.kubectl().args([
        "delete",
        "deployment",
        "backend-subpath",
        "-n",
        walkthrough::NAMESPACE,
        "--wait=true",
    ]))
    .unwrap();

    // Deleting the pod unmounts and removes the volume.
    node.delete_deployment(
        &bed,
        "backend",
        walkthrough::NAMESPACE,
        Duration::from_secs(60),
        || driver.log(),
    )
    .await
    .unwrap();
    drop(driver);
    drop(webhook);
    node.stop().expect("clean teardown");
}

#[tokio::test]
async fn env_injected_pods_run_the_copied_injector_and_watch_for_data_restarts_the_container() {
    let bed = TestBed::start().await.expect("test bed");
    walkthrough::run(&bed, VaultSetup::Cli, &mut Narrator::quiet())
        .await
        .unwrap();
    let node = Node::start(&bed).await.expect("node");
    let images = bed.dir().join("images");
    node.load_image(&ssi_tests::images::busybox_image(&images).unwrap())
        .unwrap();
    node.load_image(&ssi_tests::images::injector_image(&images).unwrap())
        .unwrap();
    let webhook = Webhook::start(&bed, &[]).await.unwrap();
    webhook.register(&bed).await.unwrap();
    // The guide's subPath variant never reaches the node.
    let subpath = bed
        .kubectl()
        .args(["apply", "-f"])
        .arg(workspace_path(
            "tests/fixtures/guide/backend-subpath-deployment.yaml",
        ))
        .output()
        .unwrap();
    assert!(!subpath.status.success());
    assert!(String::from_utf8_lossy(&subpath.stderr).contains("never sees secret rotation"));
    // Pods on the node's bridge reach OpenBao through the node's proxy at the bridge gateway.
    let port = bed.openbao().addr.rsplit(':').next().unwrap().to_owned();
    let address = format!("http://{}:{port}", node.pod_gateway);
    let pod = |name: &str, extra: serde_json::Value| {
        let mut annotations = serde_json::json!({
            "secrets-store.deckhouse.io/role": walkthrough::ROLE,
            "secrets-store.deckhouse.io/addr": address,
            "secrets-store.deckhouse.io/auth-path": "main-kube"});
        for (key, value) in extra.as_object().unwrap() {
            annotations[key] = value.clone();
        }
        serde_json::json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": walkthrough::NAMESPACE, "labels": {"app": name},
                "annotations": annotations},
            "spec": {"serviceAccountName": walkthrough::SERVICE_ACCOUNT,
                "automountServiceAccountToken": false,
                "containers": [{"name": "app", "image": "ssi-testbed/busybox:1",
                    "imagePullPolicy": "Never",
                    "command": ["sh", "-c"],
                    "args": ["echo \"DB_PASSWORD=$DB_PASSWORD\"; echo \"injector variables: $(env | grep -c SSI_INJECTOR_)\"; sleep 3600"],
                    "env": [{"name": "DB_PASSWORD",
                             "value": "secrets-store:secret/data/database-for-python-app#password"}]}]}})
    };
    let apply = |name: &str, json: serde_json::Value| {
        let path = bed.dir().join(format!("{name}.json"));
        std::fs::write(&path, json.to_string()).unwrap();
        run(bed.kubectl().args(["apply", "-f"]).arg(&path)).unwrap();
    };
    apply("env-app", pod("env-app", serde_json::json!({})));
    apply(
        "env-watch",
        pod(
            "env-watch",
            serde_json::json!({
                "secrets-store.deckhouse.io/restart-on-secret-change": "watch-for-data",
                "secrets-store.deckhouse.io/secret-poll-interval": "2s"}),
        ),
    );
    let logs = wait_for_log(
        &bed,
        "app=env-app",
        "injector variables",
        Duration::from_secs(120),
    )
    .await;
    assert!(
        logs.contains(&format!("DB_PASSWORD={}", walkthrough::PASSWORD)),
        "{logs}"
    );
    assert!(logs.contains("injector variables: 0"), "{logs}");
    wait_for_log(
        &bed,
        "app=env-watch",
        walkthrough::PASSWORD,
        Duration::from_secs(60),
    )
    .await;

    run(bed.bao().unwrap().args([
        "kv",
        "put",
        "secret/database-for-python-app",
        "password=changed-for-env",
    ]))
    .unwrap();
    wait_for_log(
        &bed,
        "app=env-watch",
        "DB_PASSWORD=changed-for-env",
        Duration::from_secs(90),
    )
    .await;
    // NB: the new container's log can show before kubelet has reported the restart.
    wait::until(
        Duration::from_secs(30),
        "the restart in the pod's status: restartCount 1, exit code 2 and its message",
        || {
            let restarts = run(bed.kubectl().args([
                "get", "pod", "env-watch", "-n", walkthrough::NAMESPACE,
                "-o", "jsonpath={.status.containerStatuses[0].restartCount} {.status.containerStatuses[0].lastState.terminated.exitCode} {.status.containerStatuses[0].lastState.terminated.message}",
            ]))
            .unwrap_or_default();
            wait::check(restarts.starts_with("1 2 secret data changed"), || restarts.clone())
        },
    )
    .await
    .unwrap();
    // The plain exec-mode pod keeps what it started with.
    let logs = wait_for_log(&bed, "app=env-app", "DB_PASSWORD=", Duration::from_secs(5)).await;
    assert!(!logs.contains("changed-for-env"), "{logs}");
    drop(webhook);
    node.stop().expect("clean teardown");
}

/// `on-file-change` on the real node: the injector, PID 1 in front of the app, sees the driver
/// swap the volume's `..data` (inotify) and sends the app SIGHUP, or restarts it in its
/// container (restartCount stays 0); an app that ignores SIGHUP is not killed by it.
#[tokio::test]
async fn a_rotation_reaches_the_apps_process_as_sighup_or_a_restart_in_its_container() {
    let (bed, node, driver, webhook) = node_with_driver_and_webhook().await;

    let pod = |name: &str, reaction: &str, script: &str| {
        serde_json::json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": walkthrough::NAMESPACE, "labels": {"app": name},
                "annotations": {"secrets-store.deckhouse.io/on-file-change": reaction}},
            "spec": {"serviceAccountName": walkthrough::SERVICE_ACCOUNT,
                "automountServiceAccountToken": false,
                "containers": [{"name": "app", "image": "ssi-testbed/busybox:1",
                    "imagePullPolicy": "Never",
                    "command": ["sh", "-c", script],
                    "volumeMounts": [{"name": "secrets", "mountPath": "/mnt/secrets"}]}],
                "volumes": [{"name": "secrets", "csi": {"driver": "secrets-store.csi.deckhouse.io",
                    "volumeAttributes": {"secretsStoreImport": "python-backend"}}}]}})
    };
    // `sleep & wait`: a shell runs a trap only between commands.
    let pods = [
        (
            "on-sighup",
            "signal:SIGHUP",
            "trap 'echo \"got SIGHUP: $(cat /mnt/secrets/db-password)\"' HUP; echo \"started: $(cat /mnt/secrets/db-password)\"; while true; do sleep 1 & wait $!; done",
        ),
        (
            "on-restart",
            "restart",
            "echo \"started: $(cat /mnt/secrets/db-password)\"; exec sleep 3600",
        ),
        (
            "ignores-sighup",
            "signal:SIGHUP",
            "trap '' HUP; echo \"started: $(cat /mnt/secrets/db-password)\"; while true; do sleep 1 & wait $!; done",
        ),
    ];
    for (name, reaction, script) in pods {
        let path = bed.dir().join(format!("{name}.json"));
        std::fs::write(&path, pod(name, reaction, script).to_string()).unwrap();
        run(bed.kubectl().args(["apply", "-f"]).arg(&path)).unwrap();
    }
    for (name, _, _) in pods {
        wait_for_log(
            &bed,
            &format!("app={name}"),
            &format!("started: {}", walkthrough::PASSWORD),
            Duration::from_secs(120),
        )
        .await;
    }

    let changed = std::time::Instant::now();
    run(bed.bao().unwrap().args([
        "kv",
        "put",
        "secret/database-for-python-app",
        "password=rotated-for-the-app",
    ]))
    .unwrap();
    wait_for_log(
        &bed,
        "app=on-sighup",
        "got SIGHUP: rotated-for-the-app",
        Duration::from_secs(60),
    )
    .await;
    let to_sighup = changed.elapsed();
    wait_for_log(
        &bed,
        "app=on-restart",
        "started: rotated-for-the-app",
        Duration::from_secs(60),
    )
    .await;
    let to_restart = changed.elapsed();
    eprintln!(
        "from `kv put` to the app: SIGHUP after {to_sighup:.1?}, restarted after {to_restart:.1?} (rotation interval 3 s)"
    );
    // Give the ignoring app the same time, then check that all three run on, never restarted.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for (name, _, _) in pods {
        let state = run(bed.kubectl().args([
            "get",
            "pod",
            name,
            "-n",
            walkthrough::NAMESPACE,
            "-o",
            "jsonpath={.status.phase} {.status.containerStatuses[0].restartCount}",
        ]))
        .unwrap();
        assert_eq!(
            state, "Running 0",
            "{name}: the pod, its volume and its leases stay"
        );
    }
    let logs = run(bed
        .kubectl()
        .args(["logs", "ignores-sighup", "-n", walkthrough::NAMESPACE]))
    .unwrap();
    assert!(
        logs.contains("sending SIGHUP to the application"),
        "the injector sent it: {logs}"
    );
    for name in ["on-sighup", "on-restart", "ignores-sighup"] {
        run(bed.kubectl().args([
            "delete",
            "pod",
            name,
            "-n",
            walkthrough::NAMESPACE,
            "--wait=true",
        ]))
        .unwrap();
    }
    drop(driver);
    drop(webhook);
    node.stop().expect("clean teardown");
}

#[tokio::test]
async fn the_shipped_images_start_on_the_node() {
    let bed = TestBed::builder()
        .without_openbao()
        .start()
        .await
        .expect("test bed");
    let node = Node::start(&bed).await.expect("node");
    for name in ["ssi-csi", "ssi-webhook", "ssi-injector"] {
        let archive = workspace_path(&format!(
            "target/images/secrets-store-integration-{name}-{}.tar",
            env!("CARGO_PKG_VERSION")
        ));
        assert!(
            archive.is_file(),
            "{} is missing; build it with scripts/build-images (scripts/test does)",
            archive.display()
        );
        node.load_image(&archive).unwrap();
    }
    // Each image is one static binary on an empty root: it starts, or this fails.
    let pods = [
        (
            "csi",
            "ssi-csi",
            vec!["/ssi-csi", "--version"],
            concat!("ssi-csi ", env!("CARGO_PKG_VERSION")),
        ),
        (
            "webhook",
            "ssi-webhook",
            vec!["/ssi-webhook", "--version"],
            concat!("ssi-webhook ", env!("CARGO_PKG_VERSION")),
        ),
        (
            "injector",
            "ssi-injector",
            vec!["/ssi-injector", "copy", "/work"],
            "copied to /work/ssi-injector",
        ),
    ];
    for (pod, image, command, _) in &pods {
        let json = serde_json::json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod, "namespace": "default"},
            "spec": {"automountServiceAccountToken": false, "restartPolicy": "Never",
                "containers": [{"name": "main", "image": format!("secrets-store-integration/{image}:{}", env!("CARGO_PKG_VERSION")),
                    "imagePullPolicy": "Never", "command": command,
                    "volumeMounts": [{"name": "work", "mountPath": "/work"}]}],
                "volumes": [{"name": "work", "emptyDir": {}}]}});
        let path = bed.dir().join(format!("{pod}.json"));
        std::fs::write(&path, json.to_string()).unwrap();
        run(bed.kubectl().args(["create", "-f"]).arg(&path)).unwrap();
    }
    for (pod, _, _, expected) in &pods {
        wait_until_succeeded(&bed, "default", pod).await;
        let logs = run(bed.kubectl().args(["logs", pod])).unwrap();
        assert!(logs.contains(expected), "{pod}: {logs}");
    }
    node.stop().expect("clean teardown");
}
