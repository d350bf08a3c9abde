//! The webhook against the real kube-apiserver: the SecretsStoreImport existence warnings, and
//! the real binary called by the apiserver through the shipped MutatingWebhookConfiguration.

// Tests fail by panicking, helpers included.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use ssi_tests::webhook::{Webhook, bed_with_the_guides_ssi};
use ssi_tests::{TestBed, run, workspace_path};
use ssi_webhook::router::SsiChecker;
use std::time::Duration;

/// A review deadline that does not get in the way.
fn later() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(60)
}

#[tokio::test]
async fn missing_ssis_are_warned_about_and_a_failed_lookup_is_only_a_warning() {
    let bed = bed_with_the_guides_ssi().await.expect("test bed");

    let checker = SsiChecker::new(
        bed.kube_client().await.unwrap(),
        Duration::from_secs(2),
        Duration::from_secs(60),
    );
    let names = vec!["python-backend".to_owned(), "typo-backend".to_owned()];
    let warnings = checker.warnings("my-namespace1", &names, later()).await;
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("my-namespace1/typo-backend")
            && warnings[0].contains("does not exist"),
        "{warnings:?}"
    );
    // A name that is no object name never reaches the API (it would land in the URL).
    let warnings = checker
        .warnings(
            "my-namespace1",
            &["../../namespaces/kube-system/x".to_owned()],
            later(),
        )
        .await;
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("is not a SecretsStoreImport name"),
        "{warnings:?}"
    );
    // At most 32 names per object reach the apiserver; the rest are named as unchecked.
    let many: Vec<String> = (0..40).map(|i| format!("ssi-{i}")).collect();
    let warnings = checker.warnings("my-namespace1", &many, later()).await;
    assert_eq!(warnings.len(), 33, "{warnings:?}");
    assert!(
        warnings[32].contains("8 more SecretsStoreImport names were not checked"),
        "{warnings:?}"
    );
    // The namespace comes from the review's body: one that is no namespace name never reaches
    // the API either.
    let warnings = checker
        .warnings("../../namespaces/kube-system", &names[..1], later())
        .await;
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("not a namespace name"), "{warnings:?}");
    // The SSI is looked up in the object's namespace only.
    let warnings = checker.warnings("default", &names[..1], later()).await;
    assert!(
        warnings[0].contains("default/python-backend"),
        "{warnings:?}"
    );

    // The review's own deadline bounds the lookups, whatever the checker's.
    let warnings = checker
        .warnings(
            "my-namespace1",
            &["not-asked-yet".to_owned()],
            tokio::time::Instant::now(),
        )
        .await;
    assert!(warnings[0].contains("no answer within"), "{warnings:?}");

    // The apiserver goes away: answers from the cache stay, new lookups become warnings.
    let client = bed.kube_client().await.unwrap();
    drop(bed);
    let cold = SsiChecker::new(client, Duration::from_millis(500), Duration::from_secs(60));
    let warnings = cold.warnings("my-namespace1", &names[..1], later()).await;
    assert!(warnings[0].contains("could not check"), "{warnings:?}");
    assert!(
        checker
            .warnings("my-namespace1", &names[..1], later())
            .await
            .is_empty(),
        "cached answer"
    );
}

/// Reviews the apiserver sent to our two webhooks so far (its own counter).
fn reviews_sent(bed: &TestBed) -> f64 {
    let (ok, metrics, stderr) = kubectl_output(bed, &["get", "--raw", "/metrics"]);
    assert!(ok, "{stderr}");
    metrics
        .lines()
        .filter(|line| {
            line.starts_with("apiserver_admission_webhook_request_total{")
                && line.contains(".secrets-store.deckhouse.io\"")
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn only_objects_that_use_secrets_store_reach_the_webhook_and_its_outage_stops_only_them() {
    let bed = bed_with_the_guides_ssi().await.expect("test bed");
    let webhook = Webhook::start(&bed, &[]).await.unwrap();
    webhook.register(&bed).await.unwrap();
    let ours = serde_json::json!({"name": "s", "csi": {"driver": "secrets-store.csi.deckhouse.io",
        "volumeAttributes": {"secretsStoreImport": "python-backend"}}});
    let pod = |name: &str, annotations: serde_json::Value, volumes: serde_json::Value| {
        serde_json::json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "my-namespace1", "annotations": annotations},
            "spec": {"containers": [{"name": "c", "image": "x", "command": ["/app"]}], "volumes": volumes}})
    };
    let deployment = |name: &str, template: serde_json::Value| {
        serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "my-namespace1"},
            "spec": {"selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}, "annotations": template["metadata"]["annotations"]},
                    "spec": template["spec"]}}})
    };
    let cronjob = |name: &str, volumes: serde_json::Value| {
        serde_json::json!({"apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": name, "namespace": "my-namespace1"},
            "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": {
                "restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}], "volumes": volumes}}}}}})
    };
    let template = |annotations: serde_json::Value, volumes: serde_json::Value| {
        serde_json::json!({"metadata": {"annotations": annotations},
            "spec": {"containers": [{"name": "c", "image": "x"}], "volumes": volumes}})
    };
    let empty = serde_json::json!({});
    let other = serde_json::json!([{"name": "e", "emptyDir": {}}]);
    let objects = [
        pod("plain", empty.clone(), other.clone()),
        pod(
            "annotated-elsewhere",
            serde_json::json!({"example.com/x": "secrets-store"}),
            other.clone(),
        ),
        pod("with-volume", empty.clone(), serde_json::json!([ours])),
        pod(
            "with-import",
            serde_json::json!({"secrets-store.deckhouse.io/import": "python-backend"}),
            other.clone(),
        ),
        pod(
            "with-role",
            serde_json::json!({"secrets-store.deckhouse.io/role": "r"}),
            other.clone(),
        ),
        deployment("plain-deployment", template(empty.clone(), other.clone())),
        deployment(
            "deployment-with-volume",
            template(empty.clone(), serde_json::json!([ours])),
        ),
        deployment(
            "deployment-with-import",
            template(
                serde_json::json!({"secrets-store.deckhouse.io/import": "python-backend"}),
                other.clone(),
            ),
        ),
        cronjob("plain-cronjob", other.clone()),
        cronjob("cronjob-with-volume", serde_json::json!([ours])),
    ];
    let create = |object: &serde_json::Value| {
        let path = bed.dir().join("matching.json");
        std::fs::write(&path, object.to_string()).unwrap();
        let path = path.display().to_string();
        kubectl_output(&bed, &["create", "--dry-run=server", "-f", &path])
    };

    // With the webhook up: the objects that are not ours are admitted without a review.
    let before = reviews_sent(&bed);
    let mut ours_count = 0.0;
    for object in &objects {
        let concerns = ssi_webhook::matching::enforce_concerns(object)
            || ssi_webhook::matching::inject_concerns(object);
        let sent = reviews_sent(&bed);
        let (ok, _, stderr) = create(object);
        let name = &object["metadata"]["name"];
        let sent = reviews_sent(&bed) - sent;
        if concerns {
            ours_count += 1.0;
            assert!(sent >= 1.0, "{name}: reviewed ({sent})");
        } else {
            assert!(ok, "{name}: {stderr}");
            assert_eq!(sent, 0.0, "{name}: not reviewed");
        }
    }
    eprintln!(
        "[matching] {} objects, {ours_count} of them ours: {} reviews sent",
        objects.len(),
        reviews_sent(&bed) - before
    );

    // With the webhook gone (failurePolicy Fail): what is not ours is still admitted, what is
    // ours is refused; the apiserver's CEL and the webhook's code agree on every object.
    drop(webhook);
    for object in &objects {
        let concerns = ssi_webhook::matching::enforce_concerns(object)
            || ssi_webhook::matching::inject_concerns(object);
        let (ok, _, stderr) = create(object);
        let name = &object["metadata"]["name"];
        assert_eq!(
            ok, !concerns,
            "{name}: admitted without the webhook: {ok}; {stderr}"
        );
        if concerns {
            assert!(
                stderr.contains("failed calling webhook"),
                "{name}: {stderr}"
            );
        }
    }
}

/// The chart's memory limit of the webhook (values.yaml, `webhook.resources.limits`).
const WEBHOOK_LIMIT_KIB: u64 = 80 * 1024;

/// A review of `object` as the apiserver sends it.
fn review_of(object: &serde_json::Value) -> Vec<u8> {
    serde_json::json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "u-attack", "kind": {"group": "", "version": "v1", "kind": object["kind"]},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "my-namespace1", "operation": "CREATE", "object": object}})
    .to_string()
    .into_bytes()
}

#[tokio::test]
async fn a_tenant_can_neither_bloat_nor_starve_the_webhook() {
    use tokio::io::AsyncWriteExt;
    let bed = bed_with_the_guides_ssi().await.expect("test bed");
    // The binary the image ships: its peak is what the chart's limit is for.
    let webhook = Webhook::start_shipped(&bed, &[]).await.unwrap();
    let peak_of = |step: &str| {
        eprintln!(
            "[attack] after {step}: peak {} KiB",
            ssi_tests::status_kib(webhook.pid(), "VmHWM:")
        );
    };
    peak_of("start");
    let peak = || ssi_tests::status_kib(webhook.pid(), "VmHWM:");
    let a_real_review = || {
        review_of(
            &serde_json::json!({"kind": "Pod", "metadata": {"name": "real"},
            "spec": {"containers": [{"name": "c", "image": "x", "command": ["/app"],
                "volumeMounts": [{"name": "s", "mountPath": "/s"}]}],
                "volumes": [{"name": "s", "csi": {"driver": "secrets-store.csi.deckhouse.io",
                    "volumeAttributes": {"secretsStoreImport": "python-backend"}}}]}}),
        )
    };
    let answered = |status: u16, text: &str| {
        assert_eq!(status, 200, "{text}");
        serde_json::from_str::<serde_json::Value>(text).unwrap()
    };

    // A 3 MiB Pod of 100,000 tiny volumes and one of ours, at the volume policy and at injection.
    let mut volumes: Vec<serde_json::Value> = (0..100_000)
        .map(|i| serde_json::json!({"name": format!("v{i}"), "emptyDir": {}}))
        .collect();
    volumes.push(
        serde_json::json!({"name": "s", "csi": {"driver": "secrets-store.csi.deckhouse.io",
        "volumeAttributes": {"secretsStoreImport": "python-backend"}}}),
    );
    let dense = review_of(
        &serde_json::json!({"kind": "Pod", "metadata": {"name": "dense",
        "annotations": {"secrets-store.deckhouse.io/role": "r"}},
        "spec": {"containers": [{"name": "c", "image": "x", "command": ["/app"]}], "volumes": volumes}}),
    );
    assert!(dense.len() > 3_000_000);
    for path in ["/enforce", "/inject"] {
        let started = std::time::Instant::now();
        let (status, text) = webhook.post(path, dense.clone()).await.unwrap();
        let answer = answered(status, &text);
        eprintln!(
            "[attack] dense review at {path}: answered in {:?}",
            started.elapsed()
        );
        assert_eq!(answer["response"]["allowed"], false, "{path}: {answer}");
        let message = answer["response"]["status"]["message"].as_str().unwrap();
        assert!(
            message.contains(&format!(
                "more than {} JSON values",
                ssi_webhook::shape::MAX_VALUES
            )),
            "{path}: {message}"
        );
        peak_of(path);
    }

    // A 4 MiB body that is no review: refused, its uid (none) not echoed, nothing built.
    let garbage = format!(
        "{{\"apiVersion\": \"v0\", \"x\": [{}0]}}",
        "{},".repeat(1_390_000)
    );
    assert!(garbage.len() < 4 * 1024 * 1024);
    let (status, text) = webhook.post("/mutate", garbage.into_bytes()).await.unwrap();
    assert_eq!(answered(status, &text)["response"]["allowed"], false);
    peak_of("the garbage body");

    // 64 clients that send headers and then a byte now and then, from a pod's address: real
    // reviews are still answered at once, as a slow body holds no turn.
    let pod_address: std::net::IpAddr = [127, 0, 0, 2].into();
    let mut slow = Vec::new();
    for _ in 0..64 {
        let mut stream = webhook.connect_from(pod_address).await.unwrap();
        stream
            .write_all(b"POST /enforce HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 4000000\r\n\r\n{")
            .await
            .unwrap();
        slow.push(stream);
    }
    for _ in 0..5 {
        let started = std::time::Instant::now();
        let (status, text) = webhook.post("/enforce", a_real_review()).await.unwrap();
        assert_eq!(
            answered(status, &text)["response"]["allowed"],
            true,
            "{text}"
        );
        let took = started.elapsed();
        eprintln!("[attack] a real review beside 64 slow bodies: {took:?}");
        assert!(
            took < Duration::from_secs(10),
            "within the apiserver's timeout"
        );
        for stream in &mut slow {
            let _ = stream.write_all(b" ").await;
        }
    }
    drop(slow);
    peak_of("the slow bodies");

    // 64 clients that send a review whose uid is as long as a body allows, and never read what
    // they get: the uid is not echoed (64 answers of 4 MiB held unread took the webhook past its
    // limit), and what answers hold stays within the review budget (the peak below).
    let long_uid = {
        let mut review: serde_json::Value = serde_json::from_slice(&a_real_review()).unwrap();
        review["request"]["uid"] = serde_json::json!("u".repeat(3_900_000));
        review.to_string()
    };
    let head = format!(
        "POST /enforce HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        long_uid.len()
    );
    let mut unread = Vec::new();
    for _ in 0..64 {
        // The slow clients' connections may still be counted for a moment: those are refused.
        let Ok(mut stream) = webhook.connect_from(pod_address).await else {
            continue;
        };
        if stream.write_all(head.as_bytes()).await.is_ok()
            && stream.write_all(long_uid.as_bytes()).await.is_ok()
        {
            unread.push(stream);
        }
        // One at a time, so that each is reviewed and answered rather than left waiting for the
        // review budget (64 full bodies sent at once fill it: docs/security.md).
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("[attack] {} long-uid reviews sent, none read", unread.len());
    assert!(unread.len() >= 48, "{} sent", unread.len());
    let started = std::time::Instant::now();
    let (status, text) = webhook.post("/enforce", a_real_review()).await.unwrap();
    assert_eq!(
        answered(status, &text)["response"]["allowed"],
        true,
        "{text}"
    );
    eprintln!(
        "[attack] a real review beside 64 unread answers: {:?}",
        started.elapsed()
    );
    drop(unread);
    peak_of("the unread answers");

    // A connection flood from that address: at most 64 are held, the rest closed at accept, and
    // reviews from the apiserver's address are answered.
    let mut flood = Vec::new();
    let mut refused = 0;
    for _ in 0..400 {
        match webhook.connect_from(pod_address).await {
            Ok(stream) => flood.push(stream),
            Err(_) => refused += 1,
        }
    }
    eprintln!(
        "[attack] connection flood: {} held, {refused} closed",
        flood.len()
    );
    assert!(
        flood.len() <= ssi_webhook::server::MAX_CONNECTIONS_PER_PEER + 8,
        "{} connections held",
        flood.len()
    );
    let (status, text) = webhook.post("/enforce", a_real_review()).await.unwrap();
    assert_eq!(answered(status, &text)["response"]["allowed"], true);
    drop(flood);

    let peak = peak();
    eprintln!("[attack] the webhook's peak RSS: {peak} KiB (limit {WEBHOOK_LIMIT_KIB} KiB)");
    assert!(peak > 0 && peak < WEBHOOK_LIMIT_KIB, "peak {peak} KiB");
}

/// `kubectl` with everything it printed: (success, stdout, stderr).
fn kubectl_output(bed: &TestBed, args: &[&str]) -> (bool, String, String) {
    let output = bed.kubectl().args(args).output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn get_json(bed: &TestBed, args: &[&str]) -> serde_json::Value {
    let mut command = bed.kubectl();
    command.arg("get").args(args).args(["-o", "json"]);
    serde_json::from_str(&run(&mut command).unwrap()).unwrap()
}

fn guide(file: &str) -> String {
    workspace_path(&format!("tests/fixtures/guide/{file}"))
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn the_apiserver_stores_mutated_workloads_and_refuses_the_guides_subpath_mount() {
    let bed = bed_with_the_guides_ssi().await.expect("test bed");
    let webhook = Webhook::start(&bed, &[]).await.unwrap();
    webhook.register(&bed).await.unwrap();

    // The guide's Deployment, applied as the guide says: stored read-only, nothing to warn about.
    let (ok, _, stderr) = kubectl_output(&bed, &["apply", "-f", &guide("backend-deployment.yaml")]);
    assert!(ok, "{stderr}");
    assert!(!stderr.contains("Warning"), "{stderr}");
    let stored = get_json(&bed, &["-n", "my-namespace1", "deployment", "backend"]);
    let pod = &stored["spec"]["template"]["spec"];
    assert_eq!(pod["volumes"][0]["csi"]["readOnly"], true, "{pod}");
    assert_eq!(pod["containers"][0]["volumeMounts"][0]["readOnly"], true);
    assert_eq!(
        pod["containers"][0]["volumeMounts"][0]["mountPath"],
        "/mnt/secrets"
    );
    assert_eq!(stored["metadata"]["labels"]["app"], "backend", "untouched");
    // Applying it again changes nothing (the stored object is a fixed point).
    let generation = stored["metadata"]["generation"].clone();
    let (ok, stdout, _) = kubectl_output(&bed, &["apply", "-f", &guide("backend-deployment.yaml")]);
    assert!(ok && stdout.contains("unchanged"), "{stdout}");
    let again = get_json(&bed, &["-n", "my-namespace1", "deployment", "backend"]);
    assert_eq!(again["metadata"]["generation"], generation);

    // The guide's subPath example: refused, and kubectl prints why and what to do.
    let (ok, _, stderr) = kubectl_output(
        &bed,
        &["apply", "-f", &guide("backend-subpath-deployment.yaml")],
    );
    eprintln!("kubectl apply of the subPath Deployment printed:\n{stderr}");
    assert!(!ok);
    for part in [
        "admission webhook \"workloads.secrets-store.deckhouse.io\" denied the request",
        "Deployment backend-subpath",
        "container \"backend\"",
        "\"/app/settings.ini\"",
        "volume \"app-config\"",
        "Mount the volume as a directory",
    ] {
        assert!(stderr.contains(part), "{part:?} missing from {stderr}");
    }
    let (found, _, _) = kubectl_output(
        &bed,
        &[
            "get",
            "-n",
            "my-namespace1",
            "deployment",
            "backend-subpath",
        ],
    );
    assert!(!found, "a denied object is not stored");

    // With the per-object annotation it is admitted, and kubectl prints our warning.
    let allowed = std::fs::read_to_string(guide("backend-subpath-deployment.yaml"))
        .unwrap()
        .replacen(
            "  labels:\n    app: backend-subpath\nspec:",
            "  labels:\n    app: backend-subpath\n  annotations:\n    secrets-store.deckhouse.io/allow-subpath: \"true\"\nspec:",
            1,
        );
    let path = bed.dir().join("allowed-subpath.yaml");
    std::fs::write(&path, allowed).unwrap();
    let (ok, _, stderr) = kubectl_output(&bed, &["apply", "-f", path.to_str().unwrap()]);
    eprintln!("kubectl apply with allow-subpath printed:\n{stderr}");
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("Warning: Deployment backend-subpath: container \"backend\" mounts secrets-store volume \"app-config\""),
        "{stderr}"
    );

    // The shorthand annotation: the volume and read-only mounts appear in the stored object;
    // a dry run shows the same mutation and stores nothing.
    let shorthand = r#"{"apiVersion":"apps/v1","kind":"Deployment",
        "metadata":{"name":"shorthand","namespace":"my-namespace1"},
        "spec":{"selector":{"matchLabels":{"app":"shorthand"}},"template":{
          "metadata":{"labels":{"app":"shorthand"},
                      "annotations":{"secrets-store.deckhouse.io/import":"python-backend"}},
          "spec":{"serviceAccountName":"backend-sa",
                  "containers":[{"name":"app","image":"some/app:0.0.1"}]}}}}"#;
    let path = bed.dir().join("shorthand.json");
    std::fs::write(&path, shorthand).unwrap();
    let (ok, stdout, stderr) = kubectl_output(
        &bed,
        &[
            "apply",
            "--dry-run=server",
            "-o",
            "json",
            "-f",
            path.to_str().unwrap(),
        ],
    );
    assert!(ok, "{stderr}");
    let dry: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        dry["spec"]["template"]["spec"]["volumes"][0]["csi"]["volumeAttributes"]["secretsStoreImport"],
        "python-backend"
    );
    let (found, _, _) = kubectl_output(
        &bed,
        &["get", "-n", "my-namespace1", "deployment", "shorthand"],
    );
    assert!(!found, "a dry run stores nothing");
    run(bed.kubectl().args(["apply", "-f", path.to_str().unwrap()])).unwrap();
    let stored = get_json(&bed, &["-n", "my-namespace1", "deployment", "shorthand"]);
    let pod = &stored["spec"]["template"]["spec"];
    assert_eq!(
        pod["volumes"][0]["csi"]["driver"],
        "secrets-store.csi.deckhouse.io"
    );
    assert_eq!(pod["volumes"][0]["csi"]["readOnly"], true);
    let mount = &pod["containers"][0]["volumeMounts"][0];
    assert_eq!(mount["mountPath"], "/mnt/secrets");
    assert_eq!(mount["readOnly"], true);
    assert_eq!(mount["name"], pod["volumes"][0]["name"]);

    // An SSI that does not exist: admitted with a warning.
    let typo = shorthand
        .replace("\"shorthand\"", "\"typo\"")
        .replace("\"python-backend\"", "\"pyhton-backend\"");
    std::fs::write(&path, typo).unwrap();
    let (ok, _, stderr) = kubectl_output(&bed, &["apply", "-f", path.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("Warning: SecretsStoreImport my-namespace1/pyhton-backend does not exist"),
        "{stderr}"
    );

    // An UPDATE that adds a subPath mount to the stored Deployment is refused too.
    let (ok, _, stderr) = kubectl_output(
        &bed,
        &[
            "patch",
            "-n",
            "my-namespace1",
            "deployment",
            "backend",
            "--type=json",
            "-p",
            r#"[{"op":"add","path":"/spec/template/spec/containers/0/volumeMounts/0/subPath","value":"db-password"}]"#,
        ],
    );
    assert!(!ok && stderr.contains("with subPath"), "{stderr}");

    // A CronJob whose init container uses subPathExpr, and a Pod whose
    // volume names no SSI: both refused.
    let cronjob = r#"{"apiVersion":"batch/v1","kind":"CronJob",
        "metadata":{"name":"nightly","namespace":"my-namespace1"},
        "spec":{"schedule":"0 3 * * *","jobTemplate":{"spec":{"template":{"spec":{
          "restartPolicy":"Never",
          "initContainers":[{"name":"prepare","image":"x","volumeMounts":[
            {"name":"secrets","mountPath":"/s","subPathExpr":"$(POD_NAME)"}]}],
          "containers":[{"name":"job","image":"x"}],
          "volumes":[{"name":"secrets","csi":{"driver":"secrets-store.csi.deckhouse.io",
                      "volumeAttributes":{"secretsStoreImport":"python-backend"}}}]}}}}}}"#;
    std::fs::write(&path, cronjob).unwrap();
    let (ok, _, stderr) = kubectl_output(&bed, &["apply", "-f", path.to_str().unwrap()]);
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("CronJob nightly: container \"prepare\"") && stderr.contains("subPathExpr"),
        "{stderr}"
    );
    let pod = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"nameless","namespace":"my-namespace1"},
        "spec":{"containers":[{"name":"app","image":"x"}],
                "volumes":[{"name":"secrets","csi":{"driver":"secrets-store.csi.deckhouse.io"}}]}}"#;
    std::fs::write(&path, pod).unwrap();
    let (ok, _, stderr) = kubectl_output(&bed, &["apply", "-f", path.to_str().unwrap()]);
    assert!(
        !ok && stderr.contains("without volumeAttributes.secretsStoreImport"),
        "{stderr}"
    );

    // The opt-out label on an object does not switch enforcement off: the labelled shorthand
    // Deployment is still rewritten, the labelled subPath variant still refused.
    let opted_out = shorthand
        .replace("\"shorthand\"", "\"opted-out\"")
        .replacen(
            "\"namespace\":\"my-namespace1\"",
            "\"namespace\":\"my-namespace1\",\"labels\":{\"secrets-store.deckhouse.io/webhook\":\"disabled\"}",
            1,
        );
    std::fs::write(&path, opted_out).unwrap();
    run(bed.kubectl().args(["apply", "-f", path.to_str().unwrap()])).unwrap();
    let stored = get_json(&bed, &["-n", "my-namespace1", "deployment", "opted-out"]);
    assert_eq!(
        stored["spec"]["template"]["spec"]["volumes"][0]["csi"]["readOnly"], true,
        "{stored}"
    );
    let labelled_subpath = std::fs::read_to_string(guide("backend-subpath-deployment.yaml"))
        .unwrap()
        .replacen(
            "  labels:\n    app: backend-subpath\n",
            "  labels:\n    app: backend-subpath\n    secrets-store.deckhouse.io/webhook: disabled\n",
            1,
        );
    std::fs::write(&path, labelled_subpath).unwrap();
    let (ok, _, stderr) = kubectl_output(&bed, &["apply", "-f", path.to_str().unwrap()]);
    assert!(!ok && stderr.contains("subPath"), "{stderr}");

    // kube-system and the components' own namespace are left alone by name (the label every
    // namespace carries since 1.21): the guide's subPath Deployment passes there unchecked.
    run(bed
        .kubectl()
        .args(["create", "namespace", "secrets-store-integration"]))
    .unwrap();
    let subpath = std::fs::read_to_string(guide("backend-subpath-deployment.yaml")).unwrap();
    assert!(subpath.contains("namespace: my-namespace1"), "{subpath}");
    for namespace in ["kube-system", "secrets-store-integration"] {
        let moved = bed.dir().join(format!("subpath-in-{namespace}.yaml"));
        std::fs::write(
            &moved,
            subpath.replace(
                "namespace: my-namespace1",
                &format!("namespace: {namespace}"),
            ),
        )
        .unwrap();
        let (ok, _, stderr) = kubectl_output(
            &bed,
            &["apply", "--dry-run=server", "-f", moved.to_str().unwrap()],
        );
        assert!(ok, "{namespace}: {stderr}");
    }

    // Env injection: a Pod with the role annotation is stored with the init container, the
    // in-memory volume, the projected token and its command running through the injector.
    let injected = r#"{"apiVersion":"v1","kind":"Pod",
        "metadata":{"name":"env-app","namespace":"my-namespace1","annotations":{
          "secrets-store.deckhouse.io/role":"my-namespace1_backend",
          "secrets-store.deckhouse.io/addr":"https://vault.example.com:8200",
          "secrets-store.deckhouse.io/auth-path":"main-kube"}},
        "spec":{"serviceAccountName":"backend-sa","automountServiceAccountToken":false,
          "containers":[{"name":"app","image":"busybox","command":["sh","-c"],"args":["echo $DB_PASSWORD"],
            "env":[{"name":"DB_PASSWORD","value":"secrets-store:secret/data/database-for-python-app#password"}]}]}}"#;
    // Injection is what an object may opt out of: the labelled copy is stored as written.
    let labelled = injected.replacen(
        "\"name\":\"env-app\",",
        "\"name\":\"env-app-opted-out\",\"labels\":{\"secrets-store.deckhouse.io/webhook\":\"disabled\"},",
        1,
    );
    std::fs::write(&path, &labelled).unwrap();
    run(bed.kubectl().args(["apply", "-f", path.to_str().unwrap()])).unwrap();
    let stored = get_json(&bed, &["-n", "my-namespace1", "pod", "env-app-opted-out"]);
    assert!(stored["spec"]["initContainers"].is_null(), "{stored}");
    assert_eq!(
        stored["spec"]["containers"][0]["command"],
        serde_json::json!(["sh", "-c"])
    );
    std::fs::write(&path, injected).unwrap();
    run(bed.kubectl().args(["apply", "-f", path.to_str().unwrap()])).unwrap();
    let stored = get_json(&bed, &["-n", "my-namespace1", "pod", "env-app"]);
    let spec = &stored["spec"];
    assert_eq!(
        spec["initContainers"][0]["name"], "secrets-store-injector-copy",
        "{spec}"
    );
    let app = &spec["containers"][0];
    assert_eq!(
        app["command"],
        serde_json::json!(["/secrets-store-injector/ssi-injector"])
    );
    assert_eq!(
        app["args"],
        serde_json::json!(["sh", "-c", "echo $DB_PASSWORD"])
    );
    let env: Vec<&str> = app["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    for name in [
        "SSI_INJECTOR_ROLE",
        "SSI_INJECTOR_ADDR",
        "SSI_INJECTOR_AUTH_PATH",
        "SSI_INJECTOR_TOKEN_PATH",
    ] {
        assert!(env.contains(&name), "{name} missing from {env:?}");
    }
    let token = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "secrets-store-injector-token")
        .expect("projected token volume");
    // No audience: kubelet projects a token for the apiserver's own, which the guide's roles
    // (no `audience`) accept.
    assert_eq!(
        token["projected"]["sources"][0]["serviceAccountToken"],
        serde_json::json!({"expirationSeconds": 3600, "path": "token"})
    );
}

/// A Pod whose container leaves `command` to its image and refers to the store.
fn image_pod(name: &str, image: &str, service_account: &str, pull_secret: Option<&str>) -> String {
    let pull_secrets =
        pull_secret.map_or(serde_json::json!([]), |s| serde_json::json!([{"name": s}]));
    serde_json::json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "apps", "annotations": {
            "secrets-store.deckhouse.io/role": "apps_reader",
            "secrets-store.deckhouse.io/addr": "https://vault.example.com:8200"}},
        "spec": {"serviceAccountName": service_account, "automountServiceAccountToken": false,
            "imagePullSecrets": pull_secrets,
            "containers": [{"name": "app", "image": image,
                "env": [{"name": "DB_PASSWORD", "value": "secrets-store:secret/data/db#password"}]}]}})
    .to_string()
}

/// A dockerconfigjson pull Secret for `host`.
fn pull_secret(name: &str, host: &str, user: &str, password: &str) -> String {
    use base64::Engine;
    let b64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
    let config = serde_json::json!({"auths": {host: {"auth": b64(&format!("{user}:{password}"))}}});
    serde_json::json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
        "metadata": {"name": name, "namespace": "apps"},
        "data": {".dockerconfigjson": b64(&config.to_string())}})
    .to_string()
}

fn manifest_requests(registry_log: &std::path::Path, repository: &str) -> usize {
    std::fs::read_to_string(registry_log)
        .unwrap()
        .matches(&format!("GET /v2/{repository}/manifests/"))
        .count()
}

#[tokio::test]
async fn containers_without_command_start_their_images_entrypoint_found_with_the_pods_pull_secrets()
{
    use ssi_tests::registry::{ImageCommand, Registry};
    let bed = TestBed::builder()
        .without_openbao()
        .start()
        .await
        .expect("test bed");
    let open = Registry::start(&bed.dir().join("registry-open"), None)
        .await
        .unwrap();
    let private = Registry::start(
        &bed.dir().join("registry-private"),
        Some(("puller", "pull-pw")),
    )
    .await
    .unwrap();
    let app = open
        .push(
            "team/app:1",
            ImageCommand {
                entrypoint: &["/bin/app", "-v"],
                cmd: &["--serve"],
            },
        )
        .unwrap();
    let multi = open
        .push_index(
            "multi:1",
            &[
                (
                    "arm64",
                    ImageCommand {
                        entrypoint: &["/bin/arm64-app"],
                        cmd: &[],
                    },
                ),
                (
                    "amd64",
                    ImageCommand {
                        entrypoint: &["/bin/amd64-app"],
                        cmd: &["run"],
                    },
                ),
            ],
        )
        .unwrap();
    let burst = open
        .push(
            "burst:1",
            ImageCommand {
                entrypoint: &[],
                cmd: &["/bin/burst"],
            },
        )
        .unwrap();
    let secret_image = private
        .push(
            "private:1",
            ImageCommand {
                entrypoint: &["/bin/private"],
                cmd: &[],
            },
        )
        .unwrap();
    // One bundle trusts both registries' CAs.
    let bundle = bed.dir().join("registry-cas.pem");
    let mut pem = std::fs::read(&open.ca_cert).unwrap();
    pem.extend(std::fs::read(&private.ca_cert).unwrap());
    std::fs::write(&bundle, pem).unwrap();

    // The test registries listen on loopback, which the webhook refuses unless the operator
    // names the registry.
    let webhook = Webhook::start(
        &bed,
        &[
            &format!("--registry-ca-file={}", bundle.display()),
            &format!("--registry-allowed-hosts={},{}", open.host, private.host),
            "--ssi-lookup=false",
        ],
    )
    .await
    .unwrap();
    webhook.register(&bed).await.unwrap();
    run(bed.kubectl().args(["create", "namespace", "apps"])).unwrap();
    let apply = |name: &str, json: String| {
        let path = bed.dir().join(format!("{name}.json"));
        std::fs::write(&path, json).unwrap();
        path
    };
    for (name, account_secret) in [
        ("with-secret", Some("regcred-account")),
        ("no-secret", None),
    ] {
        let account = serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": "apps"},
            "imagePullSecrets": account_secret.map_or(serde_json::json!([]), |s| serde_json::json!([{"name": s}]))});
        run(bed
            .kubectl()
            .args(["apply", "-f"])
            .arg(apply(name, account.to_string())))
        .unwrap();
    }
    for name in ["regcred-pod", "regcred-account"] {
        let secret = pull_secret(name, &private.host, "puller", "pull-pw");
        run(bed.kubectl().args(["apply", "-f"]).arg(apply(name, secret))).unwrap();
    }
    let args_of = |pod: &serde_json::Value| pod["spec"]["containers"][0]["args"].clone();
    // What the apiserver would store, webhook applied, without storing it.
    let dry_run = |path: &std::path::Path| -> serde_json::Value {
        let json = run(bed
            .kubectl()
            .args(["create", "--dry-run=server", "-o", "json", "-f"])
            .arg(path))
        .unwrap();
        serde_json::from_str(&json).unwrap()
    };

    // Stored by the apiserver: ENTRYPOINT + CMD of the image, started through the injector.
    let path = apply("app", image_pod("app", &app, "no-secret", None));
    run(bed.kubectl().args(["create", "-f"]).arg(&path)).unwrap();
    let stored = get_json(&bed, &["-n", "apps", "pod", "app"]);
    assert_eq!(
        stored["spec"]["containers"][0]["command"],
        serde_json::json!(["/secrets-store-injector/ssi-injector"])
    );
    assert_eq!(
        args_of(&stored),
        serde_json::json!(["/bin/app", "-v", "--serve"])
    );

    // A multi-arch index: the linux/amd64 image's.
    let path = apply("multi", image_pod("multi", &multi, "no-secret", None));
    let dry = dry_run(&path);
    assert_eq!(args_of(&dry), serde_json::json!(["/bin/amd64-app", "run"]));

    // A basic-auth registry: the pod's own pull secret, or its ServiceAccount's, opens it.
    let path = apply(
        "private-pod",
        image_pod(
            "private-pod",
            &secret_image,
            "no-secret",
            Some("regcred-pod"),
        ),
    );
    let dry = dry_run(&path);
    assert_eq!(args_of(&dry), serde_json::json!(["/bin/private"]));
    let private_log = bed.dir().join("registry-private/registry.log");
    let private_lookups = manifest_requests(&private_log, "private");
    let path = apply(
        "private-sa",
        image_pod("private-sa", &secret_image, "with-secret", None),
    );
    let dry = dry_run(&path);
    assert_eq!(args_of(&dry), serde_json::json!(["/bin/private"]));
    assert_eq!(
        manifest_requests(&private_log, "private"),
        private_lookups,
        "the same credentials from elsewhere share the cached answer"
    );
    // Without credentials: denied, saying why and what to do; the cached answer of the pods
    // with credentials is not theirs to use.
    let path = apply(
        "private-none",
        image_pod("private-none", &secret_image, "no-secret", None),
    );
    let (created, _, stderr) = kubectl_output(
        &bed,
        &["create", "--dry-run=server", "-f", path.to_str().unwrap()],
    );
    assert!(!created);
    assert!(
        stderr.contains("container \"app\" has no command")
            && stderr.contains("refused access (not authorized)")
            && stderr.contains("set command (and args) explicitly"),
        "{stderr}"
    );
    assert!(!stderr.contains("pull-pw"), "{stderr}");

    // Answers are cached per image and credentials, and concurrent lookups of one image share
    // one request.
    let log = bed.dir().join("registry-open/registry.log");
    let before = manifest_requests(&log, "team/app");
    assert_eq!(before, 1);
    let path = apply("app-again", image_pod("app-again", &app, "no-secret", None));
    run(bed
        .kubectl()
        .args(["create", "--dry-run=server", "-f"])
        .arg(&path))
    .unwrap();
    assert_eq!(manifest_requests(&log, "team/app"), before, "cached");
    let creates: Vec<_> = (0..4)
        .map(|i| {
            let path = apply(
                &format!("burst-{i}"),
                image_pod(&format!("burst-{i}"), &burst, "no-secret", None),
            );
            bed.kubectl()
                .args(["create", "--dry-run=server", "-o", "json", "-f"])
                .arg(path)
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for create in creates {
        let output = create.wait_with_output().unwrap();
        assert!(output.status.success());
        let pod: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(args_of(&pod), serde_json::json!(["/bin/burst"]));
    }
    assert_eq!(
        manifest_requests(&log, "burst"),
        manifest_requests(&log, "team/app"),
        "four concurrent lookups cost what one did"
    );

    // An image whose registry the operator did not name: no connection, a denial that says so.
    let path = apply(
        "metadata",
        image_pod(
            "metadata",
            "169.254.169.254/latest/meta-data:1",
            "no-secret",
            None,
        ),
    );
    let (created, _, stderr) = kubectl_output(
        &bed,
        &["create", "--dry-run=server", "-f", path.to_str().unwrap()],
    );
    assert!(!created);
    assert!(
        stderr.contains(
            "the registry 169.254.169.254 is not among the registries this webhook may ask"
        ),
        "{stderr}"
    );

    // Without an allow-list, a name that resolves to loopback is refused before any connection:
    // the open registry's access log does not grow.
    let strict = Webhook::start(&bed, &["--ssi-lookup=false"]).await.unwrap();
    let requests_before = std::fs::read_to_string(&log).unwrap().lines().count();
    let review = serde_json::json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "u-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "apps", "operation": "CREATE",
            "object": serde_json::from_str::<serde_json::Value>(&image_pod("loopback", &format!("localhost:{}/team/app:1", open.host.rsplit(':').next().unwrap()), "no-secret", None)).unwrap()}});
    let answer = strict.review(&review).await.unwrap();
    let message = answer["response"]["status"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(answer["response"]["allowed"], false, "{answer}");
    assert!(message.contains("a loopback address"), "{message}");
    assert_eq!(
        std::fs::read_to_string(&log).unwrap().lines().count(),
        requests_before,
        "no request reached the registry"
    );

    // A registry that hangs: the review ends at the lookup deadline with a denial naming it,
    // well before the apiserver's 10 s webhook timeout.
    ssi_tests::process::freeze(open.pid()).unwrap();
    let path = apply(
        "hanging",
        image_pod(
            "hanging",
            &format!("{}/never-answered:1", open.host),
            "no-secret",
            None,
        ),
    );
    let (created, _, stderr) = kubectl_output(
        &bed,
        &["create", "--dry-run=server", "-f", path.to_str().unwrap()],
    );
    ssi_tests::process::thaw(open.pid()).unwrap();
    assert!(!created);
    assert!(
        stderr.contains("the registry lookup took longer than 5s"),
        "{stderr}"
    );
}

/// The registry's own hops and bodies, played by a hostile mock registry (see
/// `ssi_tests::hostile_registry` for why a mock): every redirect and token realm is checked
/// like the image's own host, bodies stop at the cap with the webhook's memory unmoved, and no
/// denial repeats what the registry said.
#[tokio::test]
async fn a_slow_registry_holds_only_its_own_lookup_slots_and_a_namespace_only_its_own() {
    use ssi_tests::hostile_registry::HostileRegistry;
    let bed = TestBed::builder()
        .without_openbao()
        .start()
        .await
        .expect("test bed");
    // One tenant's registry that never answers, and another one's that answers at once.
    let (slow, other) = (
        HostileRegistry::start().await.unwrap(),
        HostileRegistry::start().await.unwrap(),
    );
    let hosts = format!("{},{}", slow.host, other.host);
    let webhook = Webhook::start(
        &bed,
        &[
            &format!("--registry-allowed-hosts={hosts}"),
            &format!("--registry-plain-http={hosts}"),
            "--ssi-lookup=false",
        ],
    )
    .await
    .unwrap();
    let review = |repository: &str, host: &str, uid: usize, namespace: &str| {
        let pod: serde_json::Value = serde_json::from_str(&image_pod(
            &format!("{repository}-{uid}"),
            &format!("{host}/{repository}:1"),
            "default",
            None,
        ))
        .unwrap();
        serde_json::json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": format!("u-{uid}"), "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": namespace, "operation": "CREATE", "object": pod}})
    };
    // More lookups at the slow registry than the webhook makes at once in all (16), from two
    // namespaces (each has at most 4 reviews looking up at once).
    let stalled: Vec<serde_json::Value> = (0..ssi_webhook::registry::CONCURRENT_LOOKUPS + 4)
        .map(|uid| review("slow", &slow.host, uid, ["apps", "apps-2"][uid % 2]))
        .collect();
    let answered_meanwhile = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let started = std::time::Instant::now();
        let answer = webhook
            .review(&review("talkative", &other.host, 99, "other-team"))
            .await
            .unwrap();
        (answer, started, std::time::Instant::now())
    };
    let stalled_reviews = futures_util::future::join_all(stalled.iter().map(|r| async {
        let answer = webhook.review(r).await;
        (answer, std::time::Instant::now())
    }));
    let (stalled, (answer, asked_at, answered_at)) =
        tokio::join!(stalled_reviews, answered_meanwhile);
    let message = answer["response"]["status"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(message.contains("answered HTTP 500"), "{answer}");
    // The other registry's lookup took no turn behind the slow ones: it was answered before
    // any of them ended (each at its lookup deadline).
    let first_stalled = stalled.iter().map(|(_, at)| *at).min().unwrap();
    eprintln!(
        "[slow registry] another registry answered after {:?}; the first stalled lookup ended {:?} after it was asked",
        answered_at - asked_at,
        first_stalled.saturating_duration_since(asked_at)
    );
    assert!(answered_at < first_stalled, "answered behind the slow ones");
    let stalled: Vec<serde_json::Value> = stalled.into_iter().map(|(a, _)| a.unwrap()).collect();
    for answer in stalled {
        assert_eq!(answer["response"]["allowed"], false, "{answer}");
    }
}

#[tokio::test]
async fn a_hostile_registry_leads_nowhere_and_fills_no_memory() {
    use ssi_tests::hostile_registry::{ENDLESS_BYTES, HostileRegistry, REGISTRY_TEXT};
    let bed = TestBed::builder()
        .without_openbao()
        .start()
        .await
        .expect("test bed");
    let hostile = HostileRegistry::start().await.unwrap();
    // The operator allowed this one registry (it is on loopback, as in-cluster ones are private).
    let webhook = Webhook::start(
        &bed,
        &[
            &format!("--registry-allowed-hosts={}", hostile.host),
            &format!("--registry-plain-http={}", hostile.host),
            "--ssi-lookup=false",
        ],
    )
    .await
    .unwrap();
    let denial = |repository: &'static str| {
        let image = format!("{}/{repository}:1", hostile.host);
        let webhook = &webhook;
        async move {
            let pod: serde_json::Value =
                serde_json::from_str(&image_pod(repository, &image, "default", None)).unwrap();
            let review = serde_json::json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                "request": {"uid": "u-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                    "resource": {"group": "", "version": "v1", "resource": "pods"},
                    "namespace": "apps", "operation": "CREATE", "object": pod}});
            let answer = webhook.review(&review).await.unwrap();
            assert_eq!(answer["response"]["allowed"], false, "{answer}");
            let message = answer["response"]["status"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            assert!(!message.contains(REGISTRY_TEXT), "{message}");
            message
        }
    };

    // A redirect to a name that resolves to loopback: refused when resolving, never followed.
    let message = denial("redirect-by-name").await;
    assert!(message.contains("leads to a loopback address"), "{message}");
    // A redirect to the metadata address, written as an address.
    let message = denial("redirect-to-metadata").await;
    assert!(
        message.contains("leads to a cloud metadata address"),
        "{message}"
    );
    // A token realm on loopback: no token request is made.
    let message = denial("hostile-realm").await;
    assert!(message.contains("leads to a loopback address"), "{message}");
    let requests = hostile.requests();
    assert!(
        !requests
            .iter()
            .any(|path| path.contains("followed") || path.contains("token")),
        "{requests:?}"
    );

    // Bodies: an announced gigabyte is refused unread, an endless stream is cut at the cap.
    let message = denial("announced-huge").await;
    assert!(
        message.contains("sent more than 1048576 bytes for the image manifest"),
        "{message}"
    );
    let peak_before = ssi_tests::status_kib(webhook.pid(), "VmHWM:");
    let message = denial("endless-config").await;
    assert!(
        message.contains("sent more than 1048576 bytes for the image config"),
        "{message}"
    );
    let peak_after = ssi_tests::status_kib(webhook.pid(), "VmHWM:");
    assert!(
        peak_before > 0 && peak_after - peak_before < (ENDLESS_BYTES as u64 / 1024) / 4,
        "the webhook's peak RSS grew from {peak_before} KiB to {peak_after} KiB"
    );

    // Content that does not match its digest, and an error page: our words only.
    let message = denial("wrong-digest").await;
    assert!(
        message.contains("sent something that is not a usable image config"),
        "{message}"
    );
    let message = denial("talkative").await;
    assert!(message.contains("answered HTTP 500"), "{message}");

    // Eight pull secrets of a megabyte of tiny registry entries each (a dense docker config, as
    // large as the API stores): read two at a time, at most 64 entries built of each.
    use base64::Engine;
    run(bed.kubectl().args(["create", "namespace", "apps"])).unwrap();
    let mut auths = serde_json::Map::new();
    for i in 0..52_000 {
        auths.insert(format!("r{i}.example"), serde_json::json!({}));
    }
    let config = serde_json::json!({ "auths": auths }).to_string();
    assert!(
        config.len() > 1_000_000 && config.len() <= 1_048_576,
        "{}",
        config.len()
    );
    let encoded = base64::engine::general_purpose::STANDARD.encode(&config);
    drop(config);
    let names: Vec<String> = (0..8).map(|i| format!("dense-{i}")).collect();
    for name in &names {
        let secret = serde_json::json!({"apiVersion": "v1", "kind": "Secret",
            "type": "kubernetes.io/dockerconfigjson",
            "metadata": {"name": name, "namespace": "apps"},
            "data": {".dockerconfigjson": encoded}});
        // NB: create, not apply: apply's last-applied annotation would double it past the API's
        // request limit.
        let path = bed.dir().join(format!("{name}.json"));
        std::fs::write(&path, secret.to_string()).unwrap();
        run(bed.kubectl().arg("create").arg("-f").arg(&path)).unwrap();
    }
    let mut pod: serde_json::Value = serde_json::from_str(&image_pod(
        "dense",
        &format!("{}/talkative:1", hostile.host),
        "default",
        None,
    ))
    .unwrap();
    pod["spec"]["imagePullSecrets"] = names
        .iter()
        .map(|n| serde_json::json!({"name": n}))
        .collect();
    let review = serde_json::json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "u-2", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "apps", "operation": "CREATE", "object": pod}});
    let peak_before = ssi_tests::status_kib(webhook.pid(), "VmHWM:");
    let started = std::time::Instant::now();
    let answer = webhook.review(&review).await.unwrap();
    let peak_after = ssi_tests::status_kib(webhook.pid(), "VmHWM:");
    eprintln!(
        "[attack] 8 dense pull secrets: answered in {:?}; peak {peak_before} -> {peak_after} KiB",
        started.elapsed()
    );
    let message = answer["response"]["status"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.contains("answered HTTP 500"),
        "the lookup went on: {answer}"
    );
    // NB: a debug build's peak is no measure of the chart's limit (a_tenant_can_neither_...
    // runs the shipped binary); what this review adds to it is.
    assert!(
        peak_before > 0 && peak_after - peak_before < 12 * 1024,
        "the webhook's peak RSS grew from {peak_before} KiB to {peak_after} KiB"
    );
}
