//! The CSI node driver end to end: a real driver process, real kube-apiserver and OpenBao, and
//! the harness playing kubelet over the socket with kubelet's own volume context.

// Tests fail by panicking, helpers included.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use ssi_core::{FileTemplate, SecretFile, SecretsStoreImport, SecretsStoreImportSpec};
use ssi_tests::csi::{
    CsiDriver, DriverOptions, PodVolume, create_pod, mount_of, publish, publish_request,
    publish_with_audience, send_publish, unpublish,
};
use ssi_tests::walkthrough::{
    self, DEDICATED_AUDIENCE_AUTH_PATH, NAMESPACE, PASSWORD, SERVICE_ACCOUNT,
};
use ssi_tests::{SA_ISSUER, TestBed, VAULT_AUDIENCE, run, wait};
use std::path::Path;
use std::time::Duration;

async fn guide_bed() -> TestBed {
    walkthrough::guide_bed().await.expect("the guide's bed")
}

fn kv_put(bed: &TestBed, path: &str, pairs: &[&str]) {
    run(bed.bao().unwrap().args(["kv", "put", path]).args(pairs)).unwrap();
}

/// A publish refused as a bad request, with `needle` in the message.
fn assert_invalid(status: &tonic::Status, needle: &str) {
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains(needle), "{}", status.message());
}

fn read(volume: &PodVolume, file: &str) -> String {
    String::from_utf8(std::fs::read(volume.target.join(file)).unwrap()).unwrap()
}

/// Waits until `volume`'s `file` holds `expected`.
async fn eventually_reads(volume: &PodVolume, file: &str, expected: &str, within: Duration) {
    let what = format!("{file} to hold {expected:?}");
    wait::until(within, &what, || {
        let content = read(volume, file);
        wait::check(content == expected, || format!("{file}: {content:?}"))
    })
    .await
    .unwrap();
}

/// Names of the directory entries that inotify saw moved into place (the `..data` swaps).
fn swaps(inotify: &Inotify) -> Vec<String> {
    let mut names = Vec::new();
    while let Ok(events) = inotify.read_events() {
        for event in events {
            if event.mask.contains(AddWatchFlags::IN_MOVED_TO) {
                names.push(
                    event
                        .name
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                );
            }
        }
    }
    names
}

async fn events_of(bed: &TestBed, volume: &PodVolume) -> String {
    run(bed.kubectl().args([
        "-n",
        &volume.namespace,
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={}", volume.pod),
        "-o",
        "custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message",
    ]))
    .unwrap()
}

#[tokio::test]
async fn the_guides_secret_is_mounted_rotated_atomically_and_unpublished() {
    let bed = guide_bed().await;
    let driver = CsiDriver::start(&bed, DriverOptions::default())
        .await
        .expect("driver");
    let volume = create_pod(
        &bed,
        &driver,
        NAMESPACE,
        "backend-1",
        SERVICE_ACCOUNT,
        "python-backend",
    )
    .await
    .unwrap();

    publish(&bed, &driver, &volume).await.expect("publish");
    assert_eq!(read(&volume, "db-password"), PASSWORD);
    let (fs, options) = mount_of(&volume.target).expect("a mount at the target");
    assert_eq!(fs, "tmpfs");
    for option in ["nodev", "nosuid", "noexec", "size="] {
        assert!(options.contains(option), "{option} missing from {options}");
    }
    assert_eq!(
        std::fs::read_link(volume.target.join("db-password")).unwrap(),
        Path::new("..data/db-password")
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(volume.target.join("db-password"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o644);

    // Republish with a fresh token (kubelet does this all the time) changes nothing.
    let generation = std::fs::read_link(volume.target.join("..data")).unwrap();
    publish(&bed, &driver, &volume).await.expect("republish");
    assert_eq!(
        std::fs::read_link(volume.target.join("..data")).unwrap(),
        generation
    );

    // A watch on the directory: nothing happens while the secret stays the same...
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK).unwrap();
    inotify
        .add_watch(&volume.target, AddWatchFlags::IN_ALL_EVENTS)
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5000)).await;
    assert!(
        driver
            .metric("ssi_csi_rotations_total{result=\"unchanged\"}")
            .await
            .unwrap()
            >= 1.0,
        "cycles ran"
    );
    assert_eq!(
        swaps(&inotify),
        Vec::<String>::new(),
        "no swap without a change"
    );
    assert_eq!(
        std::fs::read_link(volume.target.join("..data")).unwrap(),
        generation
    );

    // ...and exactly one swap of ..data when it changes in the store.
    kv_put(
        &bed,
        "secret/database-for-python-app",
        &["password=rotated-password"],
    );
    eventually_reads(
        &volume,
        "db-password",
        "rotated-password",
        Duration::from_secs(10),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(5000)).await;
    assert_eq!(
        swaps(&inotify),
        vec!["..data".to_owned()],
        "one atomic swap per change"
    );
    let events = events_of(&bed, &volume).await;
    assert!(events.contains("SecretRotated"), "{events}");
    assert!(
        !events.contains("rotated-password"),
        "no value in events: {events}"
    );
    assert!(
        !driver.log().contains("rotated-password"),
        "no value in the log"
    );
    assert!(
        driver
            .metric("ssi_csi_rotations_total{result=\"changed\"}")
            .await
            .unwrap()
            >= 1.0
    );

    unpublish(&driver, &volume).await.expect("unpublish");
    assert!(mount_of(&volume.target).is_none(), "unmounted");
    assert!(!volume.target.exists(), "target removed");
    unpublish(&driver, &volume)
        .await
        .expect("unpublish is idempotent");
    assert_eq!(driver.metric("ssi_csi_mounts").await.unwrap(), 0.0);
}

fn apply(bed: &TestBed, yaml: &str) {
    bed.apply_yaml(yaml).unwrap();
}

/// An SSI of the guide's role with `files` (name, path, key, decodeBase64), built from the typed
/// spec; `adjust` changes what a case needs.
/// The binary the image ships, and its pid: its peak is what the chart's limit is for.
async fn shipped_driver(bed: &TestBed) -> (CsiDriver, u32) {
    let options = DriverOptions {
        shipped: true,
        ..Default::default()
    };
    let driver = CsiDriver::start(bed, options).await.unwrap();
    let pid = driver.pid().expect("the driver runs");
    (driver, pid)
}

fn ssi_yaml(
    namespace: &str,
    name: &str,
    files: &[(&str, &str, &str, bool)],
    adjust: impl FnOnce(&mut SecretsStoreImportSpec),
) -> String {
    let mut spec = SecretsStoreImportSpec::new(
        "my-namespace1_backend",
        files
            .iter()
            .map(|(file, path, key, decode)| SecretFile {
                decode_base64: *decode,
                ..SecretFile::new(*file, *path, *key)
            })
            .collect(),
    );
    adjust(&mut spec);
    let mut ssi = SecretsStoreImport::new(name, spec);
    ssi.metadata.namespace = Some(namespace.into());
    serde_yaml::to_string(&ssi).unwrap()
}

#[tokio::test]
async fn several_files_from_several_paths_with_base64_one_login_one_read_per_path() {
    let bed = guide_bed().await;
    walkthrough::allow_all_app_secrets(&bed).unwrap();
    kv_put(
        &bed,
        "secret/app-config",
        &["user=alice", "password=app-pass"],
    );
    // "-----BEGIN CERT-----\n" in base64.
    kv_put(
        &bed,
        "secret/app-cert",
        &["cert_b64=LS0tLS1CRUdJTiBDRVJULS0tLS0K"],
    );
    apply(
        &bed,
        &ssi_yaml(
            NAMESPACE,
            "multi",
            &[
                (
                    "db-password",
                    "secret/data/database-for-python-app",
                    "password",
                    false,
                ),
                ("user", "secret/data/app-config", "user", false),
                ("app-password", "secret/data/app-config", "password", false),
                ("tls.crt", "secret/data/app-cert", "cert_b64", true),
            ],
            |spec| {
                // A key-like file readable by its owner only (issue 17's per-file mode).
                spec.files[2].mode = Some("0400".into());
                // A .env rendered from two secrets (issue 17's rendered files).
                spec.files.push(SecretFile {
                    source: None,
                    template: Some(FileTemplate {
                        sources: [
                            (
                                "db".to_owned(),
                                "secret/data/database-for-python-app".to_owned(),
                            ),
                            ("app".to_owned(), "secret/data/app-config".to_owned()),
                        ]
                        .into(),
                        text: "DB_PASSWORD={{ db.password }}\nAPP_USER={{ app.user }}\n".into(),
                    }),
                    ..SecretFile::new("app.env", "", "")
                });
            },
        ),
    );
    let driver = CsiDriver::start(
        &bed,
        DriverOptions {
            rotation_interval: "1h".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let volume = create_pod(
        &bed,
        &driver,
        NAMESPACE,
        "multi-1",
        SERVICE_ACCOUNT,
        "multi",
    )
    .await
    .unwrap();
    publish(&bed, &driver, &volume).await.expect("publish");
    assert_eq!(read(&volume, "db-password"), PASSWORD);
    assert_eq!(read(&volume, "user"), "alice");
    assert_eq!(read(&volume, "app-password"), "app-pass");
    assert_eq!(read(&volume, "tls.crt"), "-----BEGIN CERT-----\n");
    let mode = |file: &str| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(volume.target.join(file))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("app-password"), 0o400, "the mode the SSI asks for");
    assert_eq!(
        read(&volume, "app.env"),
        format!("DB_PASSWORD={PASSWORD}\nAPP_USER=alice\n")
    );
    assert_eq!(mode("user"), 0o644, "the default");
    assert_eq!(
        driver
            .metric("ssi_csi_store_requests_total{operation=\"login\",result=\"ok\"}")
            .await
            .unwrap(),
        1.0
    );
    assert_eq!(
        driver
            .metric("ssi_csi_store_requests_total{operation=\"read\",result=\"ok\"}")
            .await
            .unwrap(),
        3.0
    );

    // A second pod of the same ServiceAccount reuses the Vault token: no second login.
    let second = create_pod(
        &bed,
        &driver,
        NAMESPACE,
        "multi-2",
        SERVICE_ACCOUNT,
        "multi",
    )
    .await
    .unwrap();
    publish(&bed, &driver, &second).await.expect("publish");
    assert_eq!(
        driver
            .metric("ssi_csi_store_requests_total{operation=\"login\",result=\"ok\"}")
            .await
            .unwrap(),
        1.0
    );

    // With the pod's fsGroup (volume_mount_group), files are root:<gid> 0640.
    let grouped = create_pod(
        &bed,
        &driver,
        NAMESPACE,
        "multi-3",
        SERVICE_ACCOUNT,
        "multi",
    )
    .await
    .unwrap();
    let mut request = publish_request(&bed, &grouped).await.unwrap();
    if let Some(ssi_csi::proto::volume_capability::AccessType::Mount(mount)) = request
        .volume_capability
        .as_mut()
        .and_then(|c| c.access_type.as_mut())
    {
        mount.volume_mount_group = "2000".into();
    }
    send_publish(&driver, request)
        .await
        .expect("publish with fsGroup");
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(grouped.target.join("user")).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.permissions().mode() & 0o777),
        (0, 2000, 0o640)
    );
}

#[tokio::test]
async fn every_mistake_fails_clearly_and_leaves_nothing_mounted() {
    let bed = guide_bed().await;
    walkthrough::allow_all_app_secrets(&bed).unwrap();
    run(bed.bao().unwrap().args([
        "write",
        "auth/main-kube/role/someone-else",
        "bound_service_account_names=someone-else",
        &format!("bound_service_account_namespaces={NAMESPACE}"),
        "policies=backend",
    ]))
    .unwrap();
    // The documented option of a dedicated token audience: a role that wants `vault`.
    walkthrough::use_a_dedicated_audience(&bed, VAULT_AUDIENCE)
        .await
        .unwrap();
    run(bed.kubectl().args(["create", "namespace", "other-ns"])).unwrap();
    let guide_file = [(
        "db-password",
        "secret/data/database-for-python-app",
        "password",
        false,
    )];
    apply(
        &bed,
        &ssi_yaml(
            NAMESPACE,
            "missing-key",
            &[("f", "secret/data/database-for-python-app", "nope", false)],
            |_| {},
        ),
    );
    apply(
        &bed,
        &ssi_yaml(
            NAMESPACE,
            "missing-path",
            &[("f", "secret/data/nothing-here", "k", false)],
            |_| {},
        ),
    );
    apply(
        &bed,
        &ssi_yaml(NAMESPACE, "denied-role", &guide_file, |spec| {
            spec.role = "someone-else".into()
        }),
    );
    apply(&bed, &ssi_yaml("other-ns", "foreign", &guide_file, |_| {}));
    apply(
        &bed,
        &ssi_yaml(
            NAMESPACE,
            "dotdot-data",
            &[(
                "..data",
                "secret/data/database-for-python-app",
                "password",
                false,
            )],
            |_| {},
        ),
    );
    apply(
        &bed,
        &ssi_yaml(
            NAMESPACE,
            "dotdot",
            &[(
                "..",
                "secret/data/database-for-python-app",
                "password",
                false,
            )],
            |_| {},
        ),
    );
    apply(
        &bed,
        &ssi_yaml(NAMESPACE, "elsewhere", &guide_file, |spec| {
            spec.address = Some("https://vault.attacker.example:8200".into())
        }),
    );
    apply(
        &bed,
        &ssi_yaml(NAMESPACE, "insecure", &guide_file, |spec| {
            spec.skip_tls_verify = Some(true)
        }),
    );
    // The role wants `vault`, the SSI leaves the audience to the driver's default.
    apply(
        &bed,
        &ssi_yaml(NAMESPACE, "audience-mismatch", &guide_file, |spec| {
            spec.auth_path = Some(DEDICATED_AUDIENCE_AUTH_PATH.into());
            spec.role = "backend-vault-audience".into();
        }),
    );
    // The SSI asks for `vault`, but the CSIDriver's tokenRequests (the shipped one) has no
    // such entry, so kubelet passes no such token.
    let dedicated = ssi_yaml(NAMESPACE, "audience-vault", &guide_file, |spec| {
        spec.audience = Some(VAULT_AUDIENCE.into());
        spec.auth_path = Some(DEDICATED_AUDIENCE_AUTH_PATH.into());
        spec.role = "backend-vault-audience".into();
    });
    apply(&bed, &dedicated);
    let driver = CsiDriver::start(&bed, DriverOptions::default())
        .await
        .unwrap();

    let issuer_audience = format!("token was issued for audience [{SA_ISSUER:?}]");
    let cases = [
        (
            "missing-key",
            tonic::Code::NotFound,
            vec![
                "python",
                "\"f\"",
                "\"nope\"",
                "secret/data/database-for-python-app",
                "password",
            ],
        ),
        (
            "missing-path",
            tonic::Code::NotFound,
            vec!["missing-path", "secret/data/nothing-here", "404"],
        ),
        (
            "denied-role",
            tonic::Code::PermissionDenied,
            vec!["denied-role", "someone-else", "403"],
        ),
        (
            "foreign",
            tonic::Code::NotFound,
            vec!["my-namespace1/foreign", "pod's namespace"],
        ),
        (
            "dotdot-data",
            tonic::Code::InvalidArgument,
            vec!["..data", "reserved"],
        ),
        (
            "dotdot",
            tonic::Code::InvalidArgument,
            vec!["\"..\"", "reserved"],
        ),
        (
            "elsewhere",
            tonic::Code::PermissionDenied,
            vec![
                "vault.attacker.example",
                "not allowed",
                "--allowed-store-addresses",
            ],
        ),
        (
            "insecure",
            tonic::Code::PermissionDenied,
            vec!["skipTLSVerify", "--allow-skip-tls-verify"],
        ),
        (
            "does-not-exist",
            tonic::Code::NotFound,
            vec!["my-namespace1/does-not-exist"],
        ),
        (
            "audience-mismatch",
            tonic::Code::PermissionDenied,
            vec![
                "backend-vault-audience",
                issuer_audience.as_str(),
                "a role with `audience` set accepts only tokens requested for that audience",
            ],
        ),
        (
            "audience-vault",
            tonic::Code::InvalidArgument,
            vec![
                "no ServiceAccount token for audience \"vault\"",
                "tokenRequests",
            ],
        ),
    ];
    for (i, (ssi, code, needles)) in cases.into_iter().enumerate() {
        let volume = create_pod(
            &bed,
            &driver,
            NAMESPACE,
            &format!("pod-{i}"),
            SERVICE_ACCOUNT,
            ssi,
        )
        .await
        .unwrap();
        let status = publish(&bed, &driver, &volume).await.expect_err(ssi);
        assert_eq!(status.code(), code, "{ssi}: {}", status.message());
        for needle in needles {
            let needle = if needle == "python" {
                "missing-key"
            } else {
                needle
            };
            assert!(
                status.message().contains(needle),
                "{ssi}: {needle:?} not in {:?}",
                status.message()
            );
        }
        assert!(
            !status.message().contains(PASSWORD),
            "{ssi}: a value leaked: {}",
            status.message()
        );
        assert!(
            !volume.target.exists(),
            "{ssi}: a failed publish left {}",
            volume.target.display()
        );
        assert!(
            mount_of(&volume.target).is_none(),
            "{ssi}: a failed publish left a mount"
        );
    }

    // With `vault` listed in the CSIDriver's tokenRequests, kubelet passes that token too, and
    // the SSI that asks for it is mounted.
    let volume = create_pod(
        &bed,
        &driver,
        NAMESPACE,
        "dedicated-audience",
        SERVICE_ACCOUNT,
        "audience-vault",
    )
    .await
    .unwrap();
    publish_with_audience(&bed, &driver, &volume, VAULT_AUDIENCE)
        .await
        .expect("a dedicated audience on both sides");
    assert_eq!(read(&volume, "db-password"), PASSWORD);
    unpublish(&driver, &volume).await.unwrap();

    // A target path outside kubelet's root is refused before anything else happens.
    let volume = create_pod(
        &bed,
        &driver,
        NAMESPACE,
        "escape",
        SERVICE_ACCOUNT,
        "python-backend",
    )
    .await
    .unwrap();
    let mut request = publish_request(&bed, &volume).await.unwrap();
    let outside = bed.dir().join("outside/mount");
    request.target_path = outside.display().to_string();
    let status = send_publish(&driver, request).await.expect_err("outside");
    assert_invalid(&status, "outside the kubelet root");
    assert!(!outside.exists());

    // A token of another ServiceAccount than the pod's is refused before anything happens.
    let volume = create_pod(
        &bed,
        &driver,
        NAMESPACE,
        "impostor",
        SERVICE_ACCOUNT,
        "python-backend",
    )
    .await
    .unwrap();
    let mut request = publish_request(&bed, &volume).await.unwrap();
    let other = bed
        .service_account_token(NAMESPACE, "default", ssi_tests::KUBE_API_AUDIENCE)
        .await
        .unwrap();
    request.volume_context.insert(
        "csi.storage.k8s.io/serviceAccount.tokens".into(),
        serde_json::json!({"": {"token": other, "expirationTimestamp": "2099-01-01T00:00:00Z"}})
            .to_string(),
    );
    let status = send_publish(&driver, request)
        .await
        .expect_err("another identity's token");
    assert_invalid(
        &status,
        "the ServiceAccount token is for my-namespace1/default",
    );
    assert!(!volume.target.exists());
    assert!(!driver.log().contains(PASSWORD), "no value in the log");
}

/// The chart's memory limit of the driver (charts/.../values.yaml, `csi.resources.limits`).
const DRIVER_LIMIT_KIB: u64 = 128 * 1024;

#[tokio::test]
async fn a_tenants_template_bombs_are_refused_and_the_driver_stays_under_its_limit() {
    let bed = guide_bed().await;
    walkthrough::allow_all_app_secrets(&bed).unwrap();
    // A value of 1000 bytes to build from (the store's own value, not the template's).
    kv_put(
        &bed,
        "secret/bomb",
        &[&format!("seed={}", "s".repeat(1000))],
    );
    let bombs = [
        // Ten levels of `~`, each four times the last: 1 GB from a 1 kB value.
        (
            "concat",
            "{% set a = b.seed ~ b.seed ~ b.seed ~ b.seed %}{% set a = a ~ a ~ a ~ a %}\
             {% set a = a ~ a ~ a ~ a %}{% set a = a ~ a ~ a ~ a %}{% set a = a ~ a ~ a ~ a %}\
             {% set a = a ~ a ~ a ~ a %}{% set a = a ~ a ~ a ~ a %}{% set a = a ~ a ~ a ~ a %}\
             {% set a = a ~ a ~ a ~ a %}{% set a = a ~ a ~ a ~ a %}{{ a|length }}",
        ),
        ("join", r#"{{ range(100000)|join("y" * 1000) }}"#),
        ("repeat", r#"{{ ("x" * 100000000)|length }}"#),
        (
            "lists",
            "{% set l = [b.seed] * 50000 %}{% set l = l + l + l + l %}{{ l|join(b.seed)|length }}",
        ),
        (
            "output",
            "{% for i in range(5000) %}{{ b.seed }}{% endfor %}",
        ),
    ];
    for (name, text) in bombs {
        apply(
            &bed,
            &ssi_yaml(NAMESPACE, &format!("bomb-{name}"), &[], |spec| {
                spec.files.push(SecretFile {
                    source: None,
                    template: Some(FileTemplate {
                        sources: [("b".to_owned(), "secret/data/bomb".to_owned())].into(),
                        text: text.into(),
                    }),
                    ..SecretFile::new("out", "", "")
                });
            }),
        );
    }
    let (driver, pid) = shipped_driver(&bed).await;
    let smaps = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                l.starts_with("Rss") || l.starts_with("Anonymous") || l.starts_with("Pss_File")
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    eprintln!(
        "[bomb] before: peak {} KiB; {}",
        ssi_tests::status_kib(pid, "VmHWM:"),
        smaps(pid)
    );
    for (i, (name, _)) in bombs.iter().enumerate() {
        let volume = create_pod(
            &bed,
            &driver,
            NAMESPACE,
            &format!("bomb-{i}"),
            SERVICE_ACCOUNT,
            &format!("bomb-{name}"),
        )
        .await
        .unwrap();
        let started = std::time::Instant::now();
        let status = publish(&bed, &driver, &volume).await.expect_err(name);
        let message = status.message();
        eprintln!(
            "[bomb] {name}: refused in {:?} (peak {} KiB): {message}",
            started.elapsed(),
            ssi_tests::status_kib(pid, "VmHWM:")
        );
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{name}: {message}"
        );
        assert!(
            message.contains("MiB of text or lists")
                || message.contains("larger than 1048576 bytes")
                || message.contains("cannot be rendered"),
            "{name}: the limit is named: {message}"
        );
        assert!(!message.contains("sssss"), "{name}: no value in {message}");
        assert!(!volume.target.exists(), "{name}: nothing is left mounted");
    }
    let peak = ssi_tests::status_kib(pid, "VmHWM:");
    eprintln!(
        "[bomb] the driver's peak RSS: {peak} KiB (limit {DRIVER_LIMIT_KIB} KiB); now {}",
        smaps(pid)
    );
    assert!(peak > 0 && peak < DRIVER_LIMIT_KIB, "peak {peak} KiB");

    // And it still renders what is no bomb.
    apply(
        &bed,
        &ssi_yaml(NAMESPACE, "fine", &[], |spec| {
            spec.files.push(SecretFile {
                source: None,
                template: Some(FileTemplate {
                    sources: [("b".to_owned(), "secret/data/bomb".to_owned())].into(),
                    text: "LENGTH={{ b.seed|length }}\n".into(),
                }),
                ..SecretFile::new("out.env", "", "")
            });
        }),
    );
    let volume = create_pod(&bed, &driver, NAMESPACE, "fine", SERVICE_ACCOUNT, "fine")
        .await
        .unwrap();
    publish(&bed, &driver, &volume).await.expect("publish");
    assert_eq!(read(&volume, "out.env"), "LENGTH=1000\n");
}

#[tokio::test]
async fn a_volume_of_256_large_files_is_refused_and_the_driver_stays_under_its_limit() {
    let bed = guide_bed().await;
    walkthrough::allow_all_app_secrets(&bed).unwrap();
    // The stores take strings of at most 1 MiB (max_json_string_value_length): three of
    // them make a secret of 3 MB, its reply under the driver's 4 MiB.
    let value_file = bed.dir().join("a-large-value");
    std::fs::write(&value_file, "L".repeat(1_000_000)).unwrap();
    let value = format!("@{}", value_file.display());
    for i in 0..8 {
        kv_put(
            &bed,
            &format!("secret/large-{i}"),
            &[
                &format!("k0={value}"),
                &format!("k1={value}"),
                &format!("k2={value}"),
            ],
        );
    }
    // 256 files of one 1 MB value: 256 MB if every file were built.
    apply(
        &bed,
        &ssi_yaml(NAMESPACE, "many-copies", &[], |spec| {
            spec.files = (0..256)
                .map(|i| SecretFile::new(format!("f{i}"), "secret/data/large-0", "k0"))
                .collect();
        }),
    );
    // Eight secrets of 3 MB, a file from each: 24 MB of secrets held at once.
    apply(
        &bed,
        &ssi_yaml(NAMESPACE, "many-secrets", &[], |spec| {
            spec.files = (0..8)
                .map(|i| SecretFile::new(format!("f{i}"), format!("secret/data/large-{i}"), "k1"))
                .collect();
        }),
    );
    // One 1 MB file: more than a fetch reserves first, within what a volume may hold.
    apply(
        &bed,
        &ssi_yaml(NAMESPACE, "one-large-file", &[], |spec| {
            spec.files = vec![SecretFile::new("f", "secret/data/large-0", "k2")];
        }),
    );
    // With the chart's tmpfs size (4m).
    let (driver, pid) = shipped_driver(&bed).await;

    // Sixteen such volumes published at once, as kubelet does for a node's new pods.
    let mut volumes = Vec::new();
    for i in 0..16 {
        let ssi = if i % 2 == 0 {
            "many-copies"
        } else {
            "many-secrets"
        };
        volumes.push(
            create_pod(
                &bed,
                &driver,
                NAMESPACE,
                &format!("large-{i}"),
                SERVICE_ACCOUNT,
                ssi,
            )
            .await
            .unwrap(),
        );
    }
    let started = std::time::Instant::now();
    let results =
        futures_util::future::join_all(volumes.iter().map(|volume| publish(&bed, &driver, volume)))
            .await;
    eprintln!(
        "[large] 16 volumes refused in {:?} (peak {} KiB)",
        started.elapsed(),
        ssi_tests::status_kib(pid, "VmHWM:")
    );
    for (volume, result) in volumes.iter().zip(results) {
        let status = result.expect_err(&volume.ssi);
        assert_invalid(&status, "need more than 8192 KiB at once");
        assert!(!status.message().contains("LLLL"), "no value: {status:?}");
        assert!(!volume.target.exists(), "nothing is left mounted");
    }

    let fits = create_pod(
        &bed,
        &driver,
        NAMESPACE,
        "fits",
        SERVICE_ACCOUNT,
        "one-large-file",
    )
    .await
    .unwrap();
    publish(&bed, &driver, &fits).await.expect("publish");
    assert_eq!(
        std::fs::metadata(fits.target.join("f")).unwrap().len(),
        1_000_000
    );

    // A connection flood on the admin port: at most MAX_ADMIN_CONNECTIONS are held, the rest
    // closed at accept; once the flood ends, the probes are answered again.
    let mut flood = Vec::new();
    for _ in 0..400 {
        if let Ok(stream) = tokio::net::TcpStream::connect(&driver.admin).await {
            flood.push(stream);
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held = flood
        .iter()
        .filter(|stream| {
            let mut byte = [0u8; 1];
            matches!(stream.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        })
        .count();
    eprintln!("[large] admin flood: {held} of 400 connections held");
    assert!(
        held <= ssi_runtime::admin::MAX_ADMIN_CONNECTIONS + 1,
        "{held} connections held"
    );
    drop(flood);
    let answered = wait::until_async(Duration::from_secs(5), "the admin port answers", || async {
        wait::check(driver.metrics().await.is_ok(), String::new)
    })
    .await;
    answered.unwrap();

    let peak = ssi_tests::status_kib(pid, "VmHWM:");
    eprintln!("[large] the driver's peak RSS: {peak} KiB (limit {DRIVER_LIMIT_KIB} KiB)");
    assert!(peak > 0 && peak < DRIVER_LIMIT_KIB, "peak {peak} KiB");
}

#[tokio::test]
async fn a_store_outage_keeps_the_old_files_and_rotation_recovers() {
    let bed = guide_bed().await;
    let options = DriverOptions {
        store_timeout: "500ms".into(),
        ..Default::default()
    };
    let driver = CsiDriver::start(&bed, options).await.unwrap();
    let volume = create_pod(
        &bed,
        &driver,
        NAMESPACE,
        "backend-1",
        SERVICE_ACCOUNT,
        "python-backend",
    )
    .await
    .unwrap();
    publish(&bed, &driver, &volume).await.expect("publish");
    let generation = std::fs::read_link(volume.target.join("..data")).unwrap();

    let pid = bed.openbao().pid();
    ssi_tests::process::freeze(pid).unwrap();
    wait::until_async(Duration::from_secs(30), "a failed rotation", || async {
        let failed = driver
            .metric("ssi_csi_rotations_total{result=\"failed\"}")
            .await
            .map_err(|e| e.to_string())?;
        wait::check(failed >= 2.0, || driver.log())
    })
    .await
    .unwrap();
    assert_eq!(read(&volume, "db-password"), PASSWORD, "old content kept");
    assert_eq!(
        std::fs::read_link(volume.target.join("..data")).unwrap(),
        generation,
        "files untouched"
    );
    ssi_tests::process::thaw(pid).unwrap();
    let events = events_of(&bed, &volume).await;
    assert!(
        events.contains("SecretRotationFailed") && events.contains("old files are kept"),
        "{events}"
    );

    kv_put(
        &bed,
        "secret/database-for-python-app",
        &["password=after-outage"],
    );
    eventually_reads(
        &volume,
        "db-password",
        "after-outage",
        Duration::from_secs(15),
    )
    .await;
}

#[tokio::test]
async fn publishes_that_arrive_together_share_one_read_and_later_ones_read_again() {
    let bed = guide_bed().await;
    // No rotation meanwhile: its reads would be counted with the publishes'.
    let options = DriverOptions {
        store_timeout: "20s".into(),
        rotation_interval: "1h".into(),
        ..Default::default()
    };
    let driver = CsiDriver::start(&bed, options).await.unwrap();
    let mut volumes = Vec::new();
    for i in 0..6 {
        let pod = format!("backend-{i}");
        let volume = create_pod(
            &bed,
            &driver,
            NAMESPACE,
            &pod,
            SERVICE_ACCOUNT,
            "python-backend",
        )
        .await
        .unwrap();
        volumes.push(volume);
    }
    let reads = || async {
        driver
            .metric("ssi_csi_store_requests_total{operation=\"read\",result=\"ok\"}")
            .await
            .unwrap_or(0.0)
    };
    // The first logs in, so that the others need the store only for the read.
    publish(&bed, &driver, &volumes[0]).await.expect("publish");
    assert_eq!(reads().await, 1.0);

    // A Deployment's pods arriving on one node together: while the store hangs, every publish
    // reaches the read that is under way, and waits for it.
    let pid = bed.openbao().pid();
    ssi_tests::process::freeze(pid).unwrap();
    let together = futures_util::future::join_all(
        volumes[1..5]
            .iter()
            .map(|volume| publish(&bed, &driver, volume)),
    );
    let thaw = async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        ssi_tests::process::thaw(pid).unwrap();
    };
    let (published, ()) = tokio::join!(together, thaw);
    for result in published {
        result.expect("publish");
    }
    assert_eq!(
        reads().await,
        2.0,
        "four publishes, one read:\n{}",
        driver.log()
    );
    for volume in &volumes[..5] {
        assert_eq!(read(volume, "db-password"), PASSWORD);
    }

    // A publish after that read is done reads again, and sees what the store holds now.
    kv_put(&bed, "secret/database-for-python-app", &["password=later"]);
    publish(&bed, &driver, &volumes[5]).await.expect("publish");
    assert_eq!(reads().await, 3.0);
    assert_eq!(read(&volumes[5], "db-password"), "later");
}

#[tokio::test]
async fn after_sigkill_and_restart_unpublish_works_and_rotation_resumes() {
    let bed = guide_bed().await;
    let mut driver = CsiDriver::start(&bed, DriverOptions::default())
        .await
        .unwrap();
    let first = create_pod(
        &bed,
        &driver,
        NAMESPACE,
        "backend-1",
        SERVICE_ACCOUNT,
        "python-backend",
    )
    .await
    .unwrap();
    let second = create_pod(
        &bed,
        &driver,
        NAMESPACE,
        "backend-2",
        SERVICE_ACCOUNT,
        "python-backend",
    )
    .await
    .unwrap();
    publish(&bed, &driver, &first).await.expect("publish first");
    publish(&bed, &driver, &second)
        .await
        .expect("publish second");

    driver.kill();
    assert_eq!(
        read(&first, "db-password"),
        PASSWORD,
        "the mount outlives the driver"
    );
    driver.restart().await.expect("restart");
    assert_eq!(
        driver.metric("ssi_csi_mounts").await.unwrap(),
        2.0,
        "both volumes recovered from the state dir"
    );

    // Unpublish needs no token: it works straight after the restart.
    unpublish(&driver, &second)
        .await
        .expect("unpublish after restart");
    assert!(!second.target.exists() && mount_of(&second.target).is_none());

    // Kubelet's next republish brings a token; rotation resumes.
    publish(&bed, &driver, &first)
        .await
        .expect("republish after restart");
    kv_put(
        &bed,
        "secret/database-for-python-app",
        &["password=after-restart"],
    );
    eventually_reads(
        &first,
        "db-password",
        "after-restart",
        Duration::from_secs(10),
    )
    .await;
    unpublish(&driver, &first).await.expect("unpublish");
    assert_eq!(
        std::fs::read_dir(driver.state_dir.join("volumes"))
            .unwrap()
            .count(),
        0,
        "no record left"
    );
}

/// grpcurl on a unix socket with a vendored proto of `csi/proto`.
fn grpcurl(socket: &std::path::Path, proto: &str, method: &str, body: Option<String>) -> String {
    let proto_dir = ssi_tests::workspace_path("csi/proto");
    let mut command = std::process::Command::new(ssi_tests::tool_path("grpcurl").unwrap());
    command.args([
        "-plaintext",
        "-unix",
        // NB: kubelet's plugin registration (and before 1.26 every CSI call) sends the socket
        // path as :authority, which HTTP/2 forbids; the driver must cope (csi/src/authority.rs),
        // so send it exactly so.
        "-authority",
        socket.to_str().unwrap(),
        "-import-path",
        proto_dir.to_str().unwrap(),
        "-proto",
        proto,
    ]);
    if let Some(body) = &body {
        command.args(["-d", body]);
    }
    command.arg(socket.to_str().unwrap()).arg(method);
    run(&mut command).unwrap()
}

#[tokio::test]
async fn kubelets_plugin_watcher_can_register_the_driver_without_a_registrar_sidecar() {
    let bed = guide_bed().await;
    let registration = bed
        .dir()
        .join("csi/kubelet/plugins_registry/secrets-store.csi.deckhouse.io-reg.sock");
    let driver = CsiDriver::start(
        &bed,
        DriverOptions {
            extra_args: vec![
                format!("--registration-socket={}", registration.display()),
                "--kubelet-csi-socket=/var/lib/kubelet/plugins/secrets-store.csi.deckhouse.io/csi.sock".into(),
                // The harness's own CSI connection stays open; do not wait the default 10 s.
                "--shutdown-grace=1s".into(),
            ],
            ..DriverOptions::default()
        },
    )
    .await
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&registration)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "root only");
    let info: serde_json::Value = serde_json::from_str(&grpcurl(
        &registration,
        "pluginregistration/api.proto",
        "pluginregistration.Registration/GetInfo",
        None,
    ))
    .unwrap();
    assert_eq!(
        info,
        serde_json::json!({"type": "CSIPlugin", "name": "secrets-store.csi.deckhouse.io",
            "endpoint": "/var/lib/kubelet/plugins/secrets-store.csi.deckhouse.io/csi.sock",
            "supportedVersions": ["1.0.0"]})
    );
    grpcurl(
        &registration,
        "pluginregistration/api.proto",
        "pluginregistration.Registration/NotifyRegistrationStatus",
        Some(r#"{"pluginRegistered": false, "error": "version mismatch"}"#.into()),
    );
    grpcurl(
        &registration,
        "pluginregistration/api.proto",
        "pluginregistration.Registration/NotifyRegistrationStatus",
        Some(r#"{"pluginRegistered": true}"#.into()),
    );
    let log = driver.log();
    assert!(
        log.contains("kubelet refused to register the driver")
            && log.contains("version mismatch")
            && log.contains("kubelet registered the driver"),
        "{log}"
    );
    // On SIGTERM both sockets go, so that kubelet deregisters the driver.
    let pid = nix::unistd::Pid::from_raw(driver.pid().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    wait::until(Duration::from_secs(10), "both sockets to go", || {
        wait::check(!registration.exists() && !driver.socket.exists(), || {
            driver.log()
        })
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn grpcurl_drives_the_driver_with_the_vendored_proto() {
    let bed = guide_bed().await;
    let driver = CsiDriver::start(&bed, DriverOptions::default())
        .await
        .unwrap();
    let grpcurl = |method: &str, body: Option<String>| -> String {
        grpcurl(&driver.socket, "csi.proto", method, body)
    };
    let info: serde_json::Value =
        serde_json::from_str(&grpcurl("csi.v1.Identity/GetPluginInfo", None)).unwrap();
    assert_eq!(info["name"], "secrets-store.csi.deckhouse.io");
    assert_eq!(info["vendorVersion"], env!("CARGO_PKG_VERSION"));
    let probe: serde_json::Value =
        serde_json::from_str(&grpcurl("csi.v1.Identity/Probe", None)).unwrap();
    assert_eq!(probe["ready"], true);
    let node: serde_json::Value =
        serde_json::from_str(&grpcurl("csi.v1.Node/NodeGetInfo", None)).unwrap();
    assert_eq!(node["nodeId"], "testbed-node");

    let volume = create_pod(
        &bed,
        &driver,
        NAMESPACE,
        "backend-1",
        SERVICE_ACCOUNT,
        "python-backend",
    )
    .await
    .unwrap();
    let request = publish_request(&bed, &volume).await.unwrap();
    let body = serde_json::json!({
        "volumeId": request.volume_id,
        "targetPath": request.target_path,
        "volumeCapability": {"mount": {}, "accessMode": {"mode": "SINGLE_NODE_WRITER"}},
        "readonly": true,
        "volumeContext": request.volume_context,
    });
    grpcurl("csi.v1.Node/NodePublishVolume", Some(body.to_string()));
    assert_eq!(read(&volume, "db-password"), PASSWORD);
    let body =
        serde_json::json!({"volumeId": request.volume_id, "targetPath": request.target_path});
    grpcurl("csi.v1.Node/NodeUnpublishVolume", Some(body.to_string()));
    assert!(!volume.target.exists());
}

/// What a pod could do if its volume were writable: the driver refuses to publish it writable,
/// and even in a volume made writable behind its back (the test writes as root, as a pod would),
/// a FIFO, a link to /dev/zero and a `..data` pointing outside neither hang, bloat nor steer the
/// driver; the other volumes keep rotating.
#[tokio::test]
async fn a_pod_writing_into_its_volume_cannot_hang_bloat_or_steer_the_driver() {
    let bed = guide_bed().await;
    let driver = CsiDriver::start(&bed, DriverOptions::default())
        .await
        .unwrap();
    let mut volumes = Vec::new();
    for name in ["healthy", "fifo", "zero", "elsewhere", "writable"] {
        volumes.push(
            create_pod(
                &bed,
                &driver,
                NAMESPACE,
                name,
                SERVICE_ACCOUNT,
                "python-backend",
            )
            .await
            .unwrap(),
        );
    }
    let writable = volumes.pop().unwrap();
    let mut request = publish_request(&bed, &writable).await.unwrap();
    request.readonly = false;
    let status = send_publish(&driver, request)
        .await
        .expect_err("a writable volume");
    assert_invalid(&status, "must be read-only");
    assert!(!writable.target.exists() && mount_of(&writable.target).is_none());

    for volume in &volumes {
        publish(&bed, &driver, volume).await.expect("publish");
        assert_eq!(read(volume, "db-password"), PASSWORD);
    }
    let generation = |volume: &PodVolume| {
        volume
            .target
            .join(std::fs::read_link(volume.target.join("..data")).unwrap())
    };
    // A FIFO: reading it would block the reader until a writer comes.
    let planted = generation(&volumes[1]).join("db-password");
    std::fs::remove_file(&planted).unwrap();
    nix::unistd::mkfifo(&planted, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    // A link to an endless source: reading it would fill the driver's memory.
    let planted = generation(&volumes[2]).join("db-password");
    std::fs::remove_file(&planted).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &planted).unwrap();
    // `..data` pointing outside the volume: the old generation is what the driver deletes.
    let outside = bed.dir().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("precious"), "keep me").unwrap();
    let data = volumes[3].target.join("..data");
    std::fs::remove_file(&data).unwrap();
    std::os::unix::fs::symlink(&outside, &data).unwrap();

    kv_put(
        &bed,
        "secret/database-for-python-app",
        &["password=after-the-attack"],
    );
    eventually_reads(
        &volumes[0],
        "db-password",
        "after-the-attack",
        Duration::from_secs(30),
    )
    .await;
    wait::until(
        Duration::from_secs(30),
        "each attacked volume's refusal",
        || {
            let refusals = driver
                .log()
                .matches("the volume holds something the driver did not write")
                .count();
            wait::check(refusals >= 3, || format!("{refusals} refusals"))
        },
    )
    .await
    .unwrap();
    let log = driver.log();
    for needle in [
        "is not a regular file",
        "as a plain file",
        "not at a generation of the driver",
    ] {
        assert!(
            log.contains(needle),
            "{needle} not in the driver's log:\n{log}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(outside.join("precious")).unwrap(),
        "keep me"
    );
    assert!(!log.contains("after-the-attack"), "a value in the log");
    // Still serving, and still rotating after the refusals.
    kv_put(
        &bed,
        "secret/database-for-python-app",
        &["password=once-more"],
    );
    eventually_reads(
        &volumes[0],
        "db-password",
        "once-more",
        Duration::from_secs(30),
    )
    .await;
    for volume in &volumes {
        unpublish(&driver, volume).await.expect("unpublish");
        assert!(mount_of(&volume.target).is_none());
    }
    assert_eq!(
        std::fs::read_to_string(outside.join("precious")).unwrap(),
        "keep me"
    );
}

/// After a switch from another driver of the same name (the Deckhouse module's), kubelet asks
/// ours to unpublish volumes it never published: the target is unmounted and removed anyway, so
/// that the old pods stop cleanly.
#[tokio::test]
async fn a_volume_another_driver_published_is_still_unpublished() {
    let bed = guide_bed().await;
    let driver = CsiDriver::start(&bed, DriverOptions::default())
        .await
        .unwrap();
    let volume = create_pod(
        &bed,
        &driver,
        NAMESPACE,
        "mounted-by-another",
        SERVICE_ACCOUNT,
        "python-backend",
    )
    .await
    .unwrap();
    // What the other driver left: a tmpfs at the target with a file in it.
    std::fs::create_dir_all(&volume.target).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &volume.target,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=1m"),
    )
    .unwrap();
    std::fs::write(volume.target.join("db-password"), "old").unwrap();
    assert!(mount_of(&volume.target).is_some());

    unpublish(&driver, &volume).await.expect("unpublish");
    assert!(mount_of(&volume.target).is_none(), "unmounted");
    assert!(!volume.target.exists(), "removed");
}

/// This node's entries of one SSI's status, by node (`kubectl get ssi -o json`).
fn status_of(bed: &TestBed, ssi: &str) -> std::collections::BTreeMap<String, serde_json::Value> {
    let json = run(bed
        .kubectl()
        .args(["-n", NAMESPACE, "get", "ssi", ssi, "-o", "json"]))
    .unwrap();
    let object: serde_json::Value = serde_json::from_str(&json).unwrap();
    object["status"]["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|entry| (entry["node"].as_str().unwrap().to_owned(), entry.clone()))
        .collect()
}

/// Waits until the SSI's status entries satisfy `ok`.
async fn until_status(
    bed: &TestBed,
    what: &str,
    ok: impl Fn(&std::collections::BTreeMap<String, serde_json::Value>) -> bool,
) -> std::collections::BTreeMap<String, serde_json::Value> {
    wait::until_async(Duration::from_secs(40), what, || {
        let nodes = status_of(bed, "python-backend");
        let done = ok(&nodes);
        async move {
            match done {
                true => Ok(nodes),
                false => Err(format!("{nodes:?}")),
            }
        }
    })
    .await
    .unwrap()
}

/// The SSI's status: two drivers, playing two nodes, each write their own entry of the guide's
/// SSI (server-side apply, one field manager per node); a store that stops answering shows in
/// both entries and clears once it answers again; an SSI mounted by nobody has no entries.
#[tokio::test]
async fn each_node_writes_its_own_status_entry_and_a_failing_store_shows_and_clears() {
    let bed = guide_bed().await;
    let options = |node: &str| DriverOptions {
        node_id: node.into(),
        store_timeout: "500ms".into(),
        ..Default::default()
    };
    let a = CsiDriver::start(&bed, options("node-a")).await.unwrap();
    let b = CsiDriver::start(&bed, options("node-b")).await.unwrap();
    let mut volumes = Vec::new();
    for (driver, pod) in [(&a, "backend-a1"), (&a, "backend-a2"), (&b, "backend-b1")] {
        let volume = create_pod(
            &bed,
            driver,
            NAMESPACE,
            pod,
            SERVICE_ACCOUNT,
            "python-backend",
        )
        .await
        .unwrap();
        publish(&bed, driver, &volume).await.expect("publish");
        volumes.push(volume);
    }
    let counts = |entry: &serde_json::Value| {
        (
            entry["volumes"].as_u64(),
            entry["pods"].as_u64(),
            entry["failing"].as_u64(),
        )
    };
    let status = until_status(&bed, "an entry per node", |nodes| {
        nodes.get("node-a").map(counts) == Some((Some(2), Some(2), Some(0)))
            && nodes.get("node-b").map(counts) == Some((Some(1), Some(1), Some(0)))
    })
    .await;
    for entry in status.values() {
        assert!(entry["lastRotation"].is_string() && entry["lastSuccess"].is_string());
        assert!(entry.get("lastError").is_none(), "{entry}");
    }
    let managers = run(bed.kubectl().args([
        "-n",
        NAMESPACE,
        "get",
        "ssi",
        "python-backend",
        "--show-managed-fields",
        "-o",
        "jsonpath={.metadata.managedFields[*].manager}",
    ]))
    .unwrap();
    assert!(
        managers.contains("ssi-csi-node-a") && managers.contains("ssi-csi-node-b"),
        "one field manager per node: {managers}"
    );
    let table = run(bed
        .kubectl()
        .args(["-n", NAMESPACE, "get", "ssi", "-o", "wide"]))
    .unwrap();
    eprintln!("kubectl get ssi -o wide:\n{table}");
    assert!(
        table.contains("PODS") && table.contains("LAST ROTATION"),
        "{table}"
    );
    assert!(!table.contains("unavailable"), "no failing node: {table}");

    let pid = bed.openbao().pid();
    ssi_tests::process::freeze(pid).unwrap();
    let failing = until_status(&bed, "the failing store in both entries", |nodes| {
        nodes.len() == 2
            && nodes
                .values()
                .all(|entry| entry["failing"].as_u64() > Some(0) && entry["lastError"].is_object())
    })
    .await;
    ssi_tests::process::thaw(pid).unwrap();
    let error = &failing["node-a"]["lastError"];
    assert_eq!(error["code"], "unavailable", "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("rotation failed"),
        "{error}"
    );
    assert!(
        !error.to_string().contains(PASSWORD),
        "no value in the status"
    );
    let table = run(bed.kubectl().args(["-n", NAMESPACE, "get", "ssi"])).unwrap();
    eprintln!("kubectl get ssi, store frozen:\n{table}");
    assert!(
        table.contains("FAILING ON") && table.contains("unavailable"),
        "{table}"
    );
    let described = run(bed
        .kubectl()
        .args(["-n", NAMESPACE, "describe", "ssi", "python-backend"]))
    .unwrap();
    eprintln!("kubectl describe ssi, store frozen:\n{described}");
    until_status(&bed, "the failure cleared", |nodes| {
        nodes.len() == 2
            && nodes.values().all(|entry| {
                entry["failing"].as_u64() == Some(0) && entry.get("lastError").is_none()
            })
    })
    .await;

    for (driver, volume) in [(&a, &volumes[0]), (&a, &volumes[1])] {
        unpublish(driver, volume).await.unwrap();
    }
    until_status(&bed, "node-a's entry gone with its last volume", |nodes| {
        !nodes.contains_key("node-a") && nodes.contains_key("node-b")
    })
    .await;
    unpublish(&b, &volumes[2]).await.unwrap();
    until_status(&bed, "no entries for an SSI mounted by nobody", |nodes| {
        nodes.is_empty()
    })
    .await;
    assert_eq!(
        a.metric("ssi_csi_status_writes_total{result=\"error\"}")
            .await
            .unwrap(),
        0.0
    );
}
