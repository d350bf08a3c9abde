//! The harness itself: every part comes up for real, answers, and is gone after teardown.

// Tests fail by panicking, helpers included.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use ssi_tests::{KUBE_API_AUDIENCE, SA_ISSUER, TestBed, run};

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

#[tokio::test]
async fn full_bed_comes_up_and_tears_down_completely() {
    let bed = TestBed::start().await.expect("test bed starts");
    let dir = bed.dir().to_owned();

    // The release pinned in tests/bed/kube/go.mod answers as the admin, and kubectl is its own.
    let pinned = std::fs::read_to_string(ssi_tests::workspace_path("tests/bed/kube/go.mod"))
        .expect("go.mod");
    let pinned = pinned
        .lines()
        .find_map(|line| line.strip_prefix("require k8s.io/kubernetes "))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("k8s.io/kubernetes pinned");
    let version = run(bed.kubectl().args(["version", "-o", "json"])).expect("kubectl version");
    let version: serde_json::Value = serde_json::from_str(&version).expect("version JSON");
    assert_eq!(version["serverVersion"]["gitVersion"], pinned, "{version}");
    assert_eq!(version["clientVersion"]["gitVersion"], pinned, "{version}");

    // kube-controller-manager works: namespaces get their default ServiceAccount.
    let client = bed.kube_client().await.expect("kube client");
    let namespaces: Api<Namespace> = Api::all(client);
    let ns =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "probe"}})).expect("ns");
    namespaces
        .create(&Default::default(), &ns)
        .await
        .expect("create namespace");
    ssi_tests::wait::until(
        std::time::Duration::from_secs(10),
        "the controller manager to create probe/default",
        || {
            run(bed
                .kubectl()
                .args(["-n", "probe", "get", "serviceaccount", "default"]))
            .map(drop)
            .map_err(|e| format!("{e:#}"))
        },
    )
    .await
    .expect("controller manager creates the default ServiceAccount");

    // OpenBao answers with the root token, through the real CLI.
    let status = run(bed.bao().expect("bao").args(["status", "-format=json"])).expect("bao status");
    let status: serde_json::Value = serde_json::from_str(&status).expect("status JSON");
    assert_eq!(status["sealed"], false);

    // A ServiceAccount token as kubelet gets it for a pod by default: for the apiserver's own
    // audience, which on a stock apiserver is the issuer alone.
    let token = bed
        .service_account_token("probe", "default", KUBE_API_AUDIENCE)
        .await
        .expect("token");
    assert_eq!(token.split('.').count(), 3, "a JWT");
    let claims = token.split('.').nth(1).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, claims).unwrap(),
    )
    .unwrap();
    assert_eq!(claims["aud"], serde_json::json!([SA_ISSUER]), "{claims}");

    let processes = bed.process_ids();
    let names: Vec<&str> = processes.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        [
            "openbao",
            "etcd",
            "kube-apiserver",
            "kube-controller-manager"
        ]
    );
    for (name, pid) in &processes {
        assert!(alive(*pid), "{name} ({pid}) is not running");
    }
    drop(bed);
    for (name, pid) in processes {
        assert!(!alive(pid), "{name} ({pid}) survived teardown");
    }
    assert!(
        !dir.exists(),
        "bed directory {} survived teardown",
        dir.display()
    );
}

#[test]
fn a_panicking_test_still_tears_the_bed_down() {
    let (pids_tx, pids_rx) = std::sync::mpsc::channel();
    let outcome = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let bed = TestBed::builder()
                .without_kube()
                .start()
                .await
                .expect("test bed");
            pids_tx
                .send((bed.process_ids(), bed.dir().to_owned()))
                .unwrap();
            panic!("a failing assertion while the bed runs");
        })
    })
    .join();
    assert!(outcome.is_err(), "the thread panicked");
    let (processes, dir) = pids_rx.recv().unwrap();
    assert!(!processes.is_empty());
    for (name, pid) in processes {
        assert!(!alive(pid), "{name} ({pid}) survived the panic");
    }
    assert!(!dir.exists(), "{} survived the panic", dir.display());
}

#[tokio::test]
async fn teardown_unmounts_what_a_test_left_mounted() {
    let bed = TestBed::builder()
        .without_kube()
        .without_openbao()
        .start()
        .await
        .expect("empty bed");
    let target = bed.dir().join("pods/x/volumes/mount");
    std::fs::create_dir_all(&target).unwrap();
    ssi_csi::mount::mount_tmpfs(&target, "1m").unwrap();
    assert!(ssi_csi::mount::is_mount_point(&target).unwrap());
    let dir = bed.dir().to_owned();
    drop(bed);
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mountinfo.contains(dir.to_str().unwrap()),
        "a mount under {} survived",
        dir.display()
    );
    assert!(!dir.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_api_server_answers_again_with_what_it_stored() {
    let bed = TestBed::builder()
        .without_openbao()
        .start()
        .await
        .expect("test bed starts");
    run(bed.kubectl().args(["create", "namespace", "kept"])).unwrap();
    let (_, pid) = bed
        .process_ids()
        .into_iter()
        .find(|(name, _)| name == "kube-apiserver")
        .unwrap();
    let log = bed.dir().join("kube-apiserver-restarted.log");
    let restarted = ssi_tests::process::restart(pid, "kube-apiserver", &log).unwrap();
    assert!(!alive(pid), "the old one is gone");
    let back = ssi_tests::wait::until(
        std::time::Duration::from_secs(60),
        "the API server back",
        || {
            let out = bed.kubectl().args(["get", "namespace", "kept"]).output();
            let ok = out.as_ref().is_ok_and(|o| o.status.success());
            ssi_tests::wait::check(ok, || {
                std::fs::read_to_string(&log)
                    .unwrap_or_default()
                    .lines()
                    .rev()
                    .take(10)
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        },
    )
    .await;
    back.unwrap();
    assert!(alive(restarted.pid()));
}
