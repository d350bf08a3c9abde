//! The CSI node driver end to end: a real driver process, real kube-apiserver and OpenBao, and
//! the harness playing kubelet over the socket with kubelet's own volume context.

// Tests fail by panicking, helpers included.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use ssi_tests::csi::{
    self, CsiDriver, DriverOptions, PodVolume, create_pod, mount_of, publish, unpublish,
};
use ssi_tests::walkthrough::{self, NAMESPACE, Narrator, PASSWORD, SERVICE_ACCOUNT, VaultSetup};
use ssi_tests::{TestBed, run};
use std::path::Path;
use std::time::{Duration, Instant};

async fn guide_bed() -> TestBed {
    let bed = TestBed::start().await.expect("test bed");
    walkthrough::run(&bed, VaultSetup::Http, &mut Narrator::quiet())
        .await
        .expect("the guide's setup");
    bed
}

fn kv_put(bed: &TestBed, path: &str, pairs: &[&str]) {
    run(bed.bao().unwrap().args(["kv", "put", path]).args(pairs)).unwrap();
}

fn read(volume: &PodVolume, file: &str) -> String {
    String::from_utf8(std::fs::read(volume.target.join(file)).unwrap()).unwrap()
}

/// Waits until `check` holds, up to `timeout`.
async fn eventually(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
    eventually(Duration::from_secs(10), "the rotated password", || {
        read(&volume, "db-password") == "rotated-password"
    })
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
