//! docs/rotation.md's claims, checked against a real driver mount and a real rotation: the Python
//! and Rust examples (watching the directory) see the change; the guide's watch (IN_MODIFY on the
//! file) sees nothing, because the driver swaps a symlink instead of writing into the file.

// Tests fail by panicking, helpers included.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use ssi_tests::csi::{CsiDriver, DriverOptions, create_pod, publish, workspace_binary};
use ssi_tests::process::Process;
use ssi_tests::walkthrough::{self, NAMESPACE, Narrator, PASSWORD, SERVICE_ACCOUNT, VaultSetup};
use ssi_tests::{TestBed, run, wait, workspace_path};
use std::process::Command;
use std::time::Duration;

/// The guide's Python example with the guide's logic (a watch on the file, reporting IN_MODIFY),
/// written with inotify_simple like docs/examples/watch_secrets.py. Prints every event it gets.
const GUIDES_FILE_WATCH: &str = r#"
import sys
from inotify_simple import INotify, flags
i = INotify()
i.add_watch(sys.argv[1], flags.MODIFY | flags.ATTRIB | flags.DELETE_SELF)
print("watching", flush=True)
while True:
    for event in i.read():
        names = [f.name for f in flags.from_mask(event.mask)]
        print("event", "|".join(names), flush=True)
        if "MODIFY" in names:
            print("file modified", flush=True)
"#;

async fn wait_for(process: &Process, text: &str, within: Duration) {
    wait::until(
        within,
        &format!("{text:?} in {}'s output", process.name),
        || wait::check(process.log_contains(text), || process.log_tail(20)),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn directory_watches_see_the_rotation_and_the_guides_file_watch_does_not() {
    let bed = TestBed::start().await.expect("test bed");
    walkthrough::run(&bed, VaultSetup::Http, &mut Narrator::quiet())
        .await
        .expect("the guide's setup");
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

    let logs = bed.dir().join("watchers");
    std::fs::create_dir_all(&logs).unwrap();
    // The bed's Python (tests/bed/provision.sh), which has inotify_simple.
    let python3 = ssi_tests::tool_path("python3").unwrap();
    let mut python = Command::new(&python3);
    python
        .arg(workspace_path("docs/examples/watch_secrets.py"))
        .arg(&volume.target)
        .arg("db-password");
    let python = Process::spawn("watch_secrets.py", python, &logs.join("python.log")).unwrap();
    let mut rust = Command::new(workspace_binary("watch-secrets").unwrap());
    rust.arg(&volume.target).arg("db-password");
    let rust = Process::spawn("watch-secrets", rust, &logs.join("rust.log")).unwrap();
    let mut guide = Command::new(&python3);
    guide
        .args(["-c", GUIDES_FILE_WATCH])
        .arg(volume.target.join("db-password"));
    let guide = Process::spawn("guide's file watch", guide, &logs.join("guide.log")).unwrap();

    let start = format!("db-password: {PASSWORD}");
    for watcher in [&python, &rust] {
        wait_for(watcher, &start, Duration::from_secs(10)).await;
    }
    wait_for(&guide, "watching", Duration::from_secs(10)).await;

    // Two changes: the directory watches report both; the file watch loses its inode at the
    // first swap and is never told anything again.
    for value in ["first-rotation", "second-rotation"] {
        run(bed.bao().unwrap().args([
            "kv",
            "put",
            "secret/database-for-python-app",
            &format!("password={value}"),
        ]))
        .unwrap();
        for watcher in [&python, &rust] {
            wait_for(
                watcher,
                &format!("db-password: {value}"),
                Duration::from_secs(30),
            )
            .await;
            assert!(
                watcher.log_contains("MOVED_TO ..data"),
                "{}",
                watcher.log_tail(10)
            );
        }
    }
    let guide_log = guide.log_tail(20);
    assert!(
        !guide_log.contains("file modified"),
        "the file watch saw IN_MODIFY:\n{guide_log}"
    );
    assert!(
        guide_log.contains("DELETE_SELF"),
        "the file watch should have lost its inode:\n{guide_log}"
    );
}
