//! The README's main job, run as CI runs it: the walkthrough binary must play the whole guide on
//! the real node and exit 0, and its output must show each thing the guide promises.

use ssi_tests::demo::{ROTATED, UPGRADED};
use ssi_tests::walkthrough::PASSWORD;
use std::process::Command;

#[test]
fn the_main_job_plays_the_guide_on_the_real_node_and_cleans_up() {
    let output = Command::new(env!("CARGO_BIN_EXE_walkthrough"))
        .output()
        .expect("run the walkthrough binary");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the main job failed:\n{stdout}\n{stderr}"
    );
    for expected in [
        // The guide's Deployment stored with the read-only volume, and its pod's log.
        "volumeMounts: [{\"mountPath\":\"/mnt/secrets\",\"name\":\"secrets\",\"readOnly\":true}]",
        &format!("db-password: {PASSWORD}"),
        // The change seen by the app's inotify watch on the directory, then the new value.
        "inotify on /mnt/secrets: ",
        "IN_MOVED_TO ..data",
        &format!("db-password: {ROTATED}"),
        "the pod's restart count is 0",
        // Installed and upgraded with Helm; the volume rotated through the upgrade.
        "helm install ssi ",
        "helm upgrade ssi ",
        &format!("db-password: {UPGRADED}"),
        // The subPath variant refused with our message.
        "denied the request: Deployment backend-subpath: container \"backend\" mounts secrets-store volume \"app-config\" at \"/app/settings.ini\" with subPath; such a mount never sees secret rotation",
        // The env-injected pod.
        concat!(
            "initContainers: secrets-store-injector-copy secrets-store-integration/ssi-injector:",
            env!("CARGO_PKG_VERSION")
        ),
        &format!("DB_PASSWORD={ROTATED}"),
        // Uninstalled, and the node's teardown check passed.
        "release \"ssi\" uninstalled",
        "nothing is left behind",
        "\nDone in ",
    ] {
        assert!(
            stdout.contains(expected),
            "the main job's output lacks {expected:?}:\n{stdout}"
        );
    }
}
