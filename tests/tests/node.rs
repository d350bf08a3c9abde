//! The real node: kubelet and containerd run pods the apiserver schedules, inside the bed's own
//! network namespace, and leave nothing behind.

// Tests fail by panicking, helpers included.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use ssi_tests::node::{NODE_NAME, Node};
use ssi_tests::{TestBed, run};
use std::time::{Duration, Instant};

#[tokio::test]
async fn the_node_comes_up_runs_a_pod_and_leaves_nothing_behind() {
    let bed = TestBed::builder()
        .without_openbao()
        .start()
        .await
        .expect("test bed");
    let node = Node::start(&bed).await.expect("node");
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
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let phase =
            run(bed
                .kubectl()
                .args(["get", "pod", "hello", "-o", "jsonpath={.status.phase}"]))
            .unwrap();
        if phase == "Succeeded" {
            break;
        }
        assert!(
            phase != "Failed",
            "{}",
            run(bed.kubectl().args(["describe", "pod", "hello"])).unwrap()
        );
        assert!(
            Instant::now() < deadline,
            "pod phase {phase}: {}",
            run(bed.kubectl().args(["describe", "pod", "hello"])).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
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
