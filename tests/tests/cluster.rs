//! Our chart on two real nodes (DESIGN.md section 5): one on Debian's containerd 1.6, one on
//! containerd 2.x. The driver runs on both, the webhook's replicas spread over them, and a
//! cluster's routine operations do not interrupt either: a rolling `helm upgrade` of the driver
//! keeps every mounted volume rotating, and draining a node moves the webhook without one
//! failed admission review.

use anyhow::Context;
use ssi_tests::TestBed;
use ssi_tests::chart::SYSTEM_NAMESPACE;
use ssi_tests::cluster::{Cluster, NODES};
use ssi_tests::node::Runtime;
use ssi_tests::walkthrough::{self, Narrator, VaultSetup};
use ssi_tests::{run, wait};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The driver's rotation interval on this cluster.
const ROTATION: Duration = Duration::from_secs(5);
/// Kubelet's `syncFrequency` on the bed (node.rs), plus its jitter of up to half of it: how long
/// a volume can wait for kubelet's republish, which brings its pod's tokens.
const REPUBLISH: Duration = Duration::from_secs(15);
/// The store path the guide's SecretsStoreImport reads the password from.
const PASSWORD_PATH: &str = "secret/database-for-python-app";

#[tokio::test]
async fn on_two_nodes_one_on_containerd_2_volumes_rotate_through_a_rolling_upgrade_and_a_drain_never_fails_a_review()
 {
    let bed = TestBed::start().await.expect("test bed");
    walkthrough::run(&bed, VaultSetup::Cli, &mut Narrator::quiet())
        .await
        .unwrap();
    let cluster = Cluster::start(&bed).await.expect("two nodes");
    let outcome = scenario(&bed, &cluster).await;
    if let Err(e) = &outcome {
        ssi_tests::demo::diagnose(&bed);
        panic!("{e:#}");
    }
    cluster.stop().expect("the nodes leave nothing behind");
}

async fn scenario(bed: &TestBed, cluster: &Cluster) -> ssi_tests::Result<()> {
    let runtimes = run(bed.kubectl().args([
        "get",
        "nodes",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name}={.status.nodeInfo.containerRuntimeVersion}{\"\\n\"}{end}",
    ]))?;
    for (name, runtime) in NODES {
        let expected = match runtime {
            Runtime::DebianContainerd16 => "containerd://1.6.",
            Runtime::Containerd2 => "containerd://2.",
        };
        anyhow::ensure!(
            runtimes.contains(&format!("{name}={expected}")),
            "{name} should run {expected}: {runtimes}"
        );
    }
    eprintln!("nodes and runtimes:\n{runtimes}");
    cluster.load_images(bed)?;
    let rotation = format!("{}s", ROTATION.as_secs());
    cluster.install_chart(bed, &rotation).await?;

    // The chart's anti-affinity spreads the webhook's two replicas over the two nodes.
    let webhook_nodes = pod_nodes(bed, SYSTEM_NAMESPACE, "app.kubernetes.io/name=ssi-webhook")?;
    let mut spread: Vec<&String> = webhook_nodes.values().collect();
    spread.sort();
    spread.dedup();
    anyhow::ensure!(
        spread.len() == 2,
        "the webhook's replicas should be on both nodes: {webhook_nodes:?}"
    );

    // The guide's SecretsStoreImport mounted by a two-replica Deployment, one pod per node.
    let backend = serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "backend", "namespace": walkthrough::NAMESPACE},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "backend"}},
            "template": {"metadata": {"labels": {"app": "backend"}},
                "spec": {"serviceAccountName": walkthrough::SERVICE_ACCOUNT,
                    "automountServiceAccountToken": false,
                    // Required, not preferred: the test needs a pod on each node.
                    "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                        {"topologyKey": "kubernetes.io/hostname",
                         "labelSelector": {"matchLabels": {"app": "backend"}}}]}},
                    "containers": [{"name": "backend", "image": "ssi-testbed/busybox:1",
                        "imagePullPolicy": "Never",
                        "command": ["sh", "-c", "while true; do cat /mnt/secrets/db-password; echo; sleep 1; done"],
                        "volumeMounts": [{"name": "secrets", "mountPath": "/mnt/secrets"}]}],
                    "volumes": [{"name": "secrets", "csi": {"driver": ssi_core::DRIVER_NAME,
                        "volumeAttributes": {"secretsStoreImport": "python-backend"}}}]}}}});
    let path = bed.dir().join("backend.json");
    std::fs::write(&path, backend.to_string())?;
    run(bed.kubectl().args(["apply", "-f"]).arg(&path))?;
    let files = wait::until(
        Duration::from_secs(180),
        "a running backend pod with the mounted password on each node",
        || {
            let files = password_files(bed, cluster).map_err(|e| format!("{e:#}"))?;
            let read: BTreeMap<String, String> = files
                .iter()
                .map(|(node, file)| {
                    (
                        node.clone(),
                        std::fs::read_to_string(file).unwrap_or_default(),
                    )
                })
                .collect();
            wait::check(
                read.len() == 2 && read.values().all(|v| v == walkthrough::PASSWORD),
                || format!("{read:?}"),
            )?;
            Ok(files)
        },
    )
    .await?;

    rolling_upgrade_keeps_rotating(bed, cluster, &files).await?;
    drain_never_fails_a_review(bed, &webhook_nodes).await?;
    Ok(())
}

/// `helm upgrade` changes the driver's settings, so the DaemonSet replaces its pods node by node
/// (maxUnavailable 1) while the store's value changes every 2 s. Each pod's file must follow: no
/// write may wait longer than the driver's roll plus the longer of the rotation interval and
/// kubelet's republish. (A restarted driver has a recovered volume's pod tokens only from
/// kubelet's next republish; with the product's 2-minute interval and kubelet's 1-minute sync
/// the interval is the longer, here the republish is.)
async fn rolling_upgrade_keeps_rotating(
    bed: &TestBed,
    cluster: &Cluster,
    files: &BTreeMap<String, PathBuf>,
) -> ssi_tests::Result<()> {
    let drivers_before = pod_nodes(bed, SYSTEM_NAMESPACE, "app.kubernetes.io/name=ssi-csi")?;
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let writer = {
        let stop = stop.clone();
        let bao = factory(bed.bao()?);
        std::thread::spawn(move || -> Vec<Duration> {
            let mut written = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let at = started.elapsed();
                let value = format!("generation-{}", written.len());
                let put = bao()
                    .args(["kv", "put", PASSWORD_PATH, &format!("password={value}")])
                    .output();
                if put.is_ok_and(|o| o.status.success()) {
                    written.push(at);
                }
                std::thread::sleep(Duration::from_secs(2));
            }
            written
        })
    };
    // The reader: when each node's pod first showed each generation.
    let reader_stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let stop = reader_stop.clone();
        let files = files.clone();
        std::thread::spawn(move || -> BTreeMap<String, Vec<(usize, Duration)>> {
            let mut seen: BTreeMap<String, Vec<(usize, Duration)>> = BTreeMap::new();
            while !stop.load(Ordering::Relaxed) {
                for (node, file) in &files {
                    let generation = std::fs::read_to_string(file)
                        .ok()
                        .and_then(|v| v.strip_prefix("generation-")?.parse::<usize>().ok());
                    let views = seen.entry(node.clone()).or_default();
                    if let Some(generation) = generation
                        && views.last().is_none_or(|(last, _)| *last != generation)
                    {
                        views.push((generation, started.elapsed()));
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            seen
        })
    };
    tokio::time::sleep(ROTATION * 2).await;
    let roll_started = started.elapsed();
    cluster.upgrade_chart(
        bed,
        &format!("{}s", ROTATION.as_secs()),
        &["csi.rotationConcurrency=8"],
    )?;
    run(bed.kubectl().args([
        "-n",
        SYSTEM_NAMESPACE,
        "rollout",
        "status",
        "daemonset/ssi-csi",
        "--timeout=240s",
    ]))?;
    let roll_ended = started.elapsed();
    let roll = roll_ended - roll_started;
    // Long enough after the roll for writes the rotation alone must carry.
    tokio::time::sleep(REPUBLISH + ROTATION * 3).await;
    stop.store(true, Ordering::Relaxed);
    let written = writer
        .join()
        .map_err(|_| anyhow::anyhow!("the writer thread panicked"))?;
    // The last generations still on their way get their chance before the reader stops.
    tokio::time::sleep(ROTATION * 2).await;
    reader_stop.store(true, Ordering::Relaxed);
    let seen = reader
        .join()
        .map_err(|_| anyhow::anyhow!("the reader thread panicked"))?;

    let drivers_after = pod_nodes(bed, SYSTEM_NAMESPACE, "app.kubernetes.io/name=ssi-csi")?;
    for (pod, node) in &drivers_before {
        anyhow::ensure!(
            !drivers_after.contains_key(pod) && drivers_after.values().any(|n| n == node),
            "the driver's pod {pod} on {node} should have been replaced: before {drivers_before:?}, after {drivers_after:?}"
        );
    }
    // Outside the roll a write waits at most for the next cycle: less than kubelet's republish
    // takes, so rotation itself is what is checked. A write during the roll may wait for the
    // new driver and its first republish.
    let steady = ROTATION + Duration::from_secs(2);
    let rolling = roll + ROTATION.max(REPUBLISH) + Duration::from_secs(2);
    let during_roll =
        |put_at: Duration| put_at + ROTATION >= roll_started && put_at <= roll_ended + REPUBLISH;
    let steady_writes = written.iter().filter(|at| !during_roll(**at)).count();
    anyhow::ensure!(
        steady_writes >= 8,
        "only {steady_writes} writes outside the roll: {written:?}"
    );
    anyhow::ensure!(
        written.len() >= 10,
        "only {} writes to the store",
        written.len()
    );
    for node in files.keys() {
        let views = seen.get(node).map(Vec::as_slice).unwrap_or_default();
        let (mut worst_steady, mut worst_rolling) = (Duration::ZERO, Duration::ZERO);
        for (generation, put_at) in written.iter().enumerate() {
            // When the pod first showed this generation or a later one.
            let shown = views
                .iter()
                .find(|(g, _)| *g >= generation)
                .map(|(_, at)| *at)
                .with_context(|| {
                    format!("{node}'s pod never showed generation {generation}: {views:?}")
                })?;
            let wait = shown.saturating_sub(*put_at);
            if during_roll(*put_at) {
                worst_rolling = worst_rolling.max(wait);
            } else {
                worst_steady = worst_steady.max(wait);
            }
        }
        eprintln!(
            "{node}: {} writes, longest wait for the pod's file {:.1} s outside the roll, {:.1} s during it (rotation {} s, driver roll {:.1} s)",
            written.len(),
            worst_steady.as_secs_f64(),
            worst_rolling.as_secs_f64(),
            ROTATION.as_secs(),
            roll.as_secs_f64()
        );
        anyhow::ensure!(
            worst_steady <= steady && worst_rolling <= rolling,
            "{node}'s pod waited {worst_steady:?} for a write outside the roll (at most {steady:?}) and {worst_rolling:?} during it (at most {rolling:?}): {views:?}; writes at {written:?}"
        );
    }
    Ok(())
}

/// `kubectl drain` of a node with a webhook replica while admission reviews of pods with our
/// volume go on: the PDB and anti-affinity move the replica, and not one review fails
/// (failurePolicy Fail would refuse the pod).
async fn drain_never_fails_a_review(
    bed: &TestBed,
    webhook_nodes: &BTreeMap<String, String>,
) -> ssi_tests::Result<()> {
    let drained = webhook_nodes
        .values()
        .max()
        .context("no webhook replica")?
        .clone();
    let probe = serde_json::json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "review-probe", "namespace": walkthrough::NAMESPACE},
        "spec": {"serviceAccountName": walkthrough::SERVICE_ACCOUNT,
            "containers": [{"name": "app", "image": "ssi-testbed/busybox:1",
                "volumeMounts": [{"name": "secrets", "mountPath": "/mnt/secrets"}]}],
            "volumes": [{"name": "secrets", "csi": {"driver": ssi_core::DRIVER_NAME,
                "volumeAttributes": {"secretsStoreImport": "python-backend"}}}]}});
    let probe_file = bed.dir().join("review-probe.json");
    std::fs::write(&probe_file, probe.to_string())?;
    let stop = Arc::new(AtomicBool::new(false));
    let reviewer = {
        let stop = stop.clone();
        let kubectl = factory(bed.kubectl());
        std::thread::spawn(move || -> (Vec<Instant>, Vec<String>) {
            let (mut answered, mut failed) = (Vec::new(), Vec::new());
            while !stop.load(Ordering::Relaxed) {
                // The stored pod's volume is read-only only if our webhook answered.
                let output = kubectl()
                    .args(["create", "--dry-run=server", "-f"])
                    .arg(&probe_file)
                    .args(["-o", "jsonpath={.spec.volumes[0].csi.readOnly}"])
                    .output();
                match output {
                    Ok(o) if o.status.success() && o.stdout == b"true" => {
                        answered.push(Instant::now());
                    }
                    Ok(o) => failed.push(format!(
                        "{} {}",
                        String::from_utf8_lossy(&o.stdout),
                        String::from_utf8_lossy(&o.stderr)
                    )),
                    Err(e) => failed.push(e.to_string()),
                }
            }
            (answered, failed)
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let drain_started = Instant::now();
    run(bed.kubectl().args([
        "drain",
        &drained,
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--timeout=180s",
    ]))?;
    let drain = drain_started.elapsed();
    let drain_ended = Instant::now();
    ssi_tests::chart::webhook_rolled_out(bed)?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::Relaxed);
    let (answered, failed) = reviewer
        .join()
        .map_err(|_| anyhow::anyhow!("the reviewer thread panicked"))?;
    run(bed.kubectl().args(["uncordon", &drained]))?;
    let moved = pod_nodes(bed, SYSTEM_NAMESPACE, "app.kubernetes.io/name=ssi-webhook")?;
    let in_drain = answered
        .iter()
        .filter(|at| **at >= drain_started && **at <= drain_ended)
        .count();

    eprintln!(
        "drain of {drained}: {:.1} s, {} reviews answered ({in_drain} while the drain ran), {} failed; webhook now on {moved:?}",
        drain.as_secs_f64(),
        answered.len(),
        failed.len()
    );
    anyhow::ensure!(
        failed.is_empty(),
        "{} of {} reviews failed during the drain of {drained}: {:?}",
        failed.len(),
        answered.len() + failed.len(),
        failed.iter().take(3).collect::<Vec<_>>()
    );
    anyhow::ensure!(
        in_drain >= 10,
        "only {in_drain} reviews answered while the drain ran"
    );
    anyhow::ensure!(
        moved.len() == 2 && moved.values().all(|node| *node != drained),
        "both webhook replicas should run off the drained {drained}: {moved:?}"
    );
    Ok(())
}

/// A maker of copies of `template` (program, arguments, environment) for another thread.
fn factory(template: Command) -> impl Fn() -> Command + Send + 'static {
    let program = template.get_program().to_owned();
    let args: Vec<OsString> = template.get_args().map(ToOwned::to_owned).collect();
    let envs: Vec<(OsString, Option<OsString>)> = template
        .get_envs()
        .map(|(k, v)| (k.to_owned(), v.map(ToOwned::to_owned)))
        .collect();
    move || {
        let mut command = Command::new(&program);
        command.args(&args);
        for (key, value) in &envs {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        command
    }
}

/// `(field, node)` of each running pod matching `selector` in `namespace`, where `field` is a
/// jsonpath of the pod (`.metadata.name`, `.metadata.uid`).
fn running_pods(
    bed: &TestBed,
    namespace: &str,
    selector: &str,
    field: &str,
) -> ssi_tests::Result<Vec<(String, String)>> {
    let listed = run(bed.kubectl().args([
        "get",
        "pods",
        "-n",
        namespace,
        "-l",
        selector,
        "--field-selector=status.phase=Running",
        "-o",
        &format!("jsonpath={{range .items[*]}}{{{field}}} {{.spec.nodeName}}{{\"\\n\"}}{{end}}"),
    ]))?;
    Ok(listed
        .lines()
        .filter_map(|line| line.split_once(' '))
        .map(|(value, node)| (value.to_owned(), node.to_owned()))
        .collect())
}

/// The node of each pod matching `selector` in `namespace`, by pod name.
fn pod_nodes(
    bed: &TestBed,
    namespace: &str,
    selector: &str,
) -> ssi_tests::Result<BTreeMap<String, String>> {
    Ok(running_pods(bed, namespace, selector, ".metadata.name")?
        .into_iter()
        .collect())
}

/// Each running backend pod's mounted password file, as the host reads it, by node.
fn password_files(
    bed: &TestBed,
    cluster: &Cluster,
) -> ssi_tests::Result<BTreeMap<String, PathBuf>> {
    let pods = running_pods(bed, walkthrough::NAMESPACE, "app=backend", ".metadata.uid")?;
    let mut files = BTreeMap::new();
    for (uid, node_name) in pods {
        let node = cluster.node(&node_name)?;
        let file = cluster.kubelet_root().join(format!(
            "pods/{uid}/volumes/kubernetes.io~csi/secrets/mount/db-password"
        ));
        files.insert(node_name, node.host_view(&file)?);
    }
    Ok(files)
}
