//! The driver at cluster scale, by simulation (DESIGN.md section 6): one `ssi-csi` process per
//! simulated node (its own node id, socket, state and token directories) against the bed's one
//! API server and one store, and this program as every node's kubelet: it creates each pod, asks
//! for its token and sends NodePublishVolume to the driver of the pod's node.
//!
//! It reports what the cluster's control plane and store carry per rotation cycle, counted by
//! them (their audit logs), the publish latency under that load, and each driver's RSS.
//!
//! `cargo run --release -p ssi-tests --bin cluster_bench -- [nodes] [volumes] [identities]`
//! (default 250 nodes, 10,000 volumes, 100 ServiceAccounts). Pod i runs on node i mod nodes as
//! ServiceAccount `sa-<random>`, one SecretsStoreImport of 3 KV paths for all. The rotation
//! interval is 60 s; the window counted is two intervals. One value changes in the store as the
//! window opens, so every node rotates its volumes in the same cycle and writes its entry of the
//! SSI's status (the case where all nodes write one object at once).

use futures_util::StreamExt;
use ssi_tests::audit::{api_request, store_request, tally};
use ssi_tests::bench::{DRIVER_AGENT, NS, PATHS, arg, setup};
use ssi_tests::csi::{CsiDriver, DriverOptions, create_pod, publish_request};
use ssi_tests::load::percentile;
use ssi_tests::{TestBed, run, status_kib};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// The drivers' rotation interval.
const INTERVAL: Duration = Duration::from_secs(60);
/// Publishes in flight at once over the whole cluster (kubelets of many nodes at once).
const PUBLISHES_IN_FLIGHT: usize = 16;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let nodes: usize = arg(1, 250)?;
    let volumes: usize = arg(2, 10_000)?;
    let identities: usize = arg(3, 100)?;
    anyhow::ensure!(
        nodes > 0 && volumes > 0 && identities > 0,
        "all counts must be positive"
    );
    println!("== {nodes} simulated nodes, {volumes} volumes, {identities} ServiceAccounts");
    let bed = TestBed::builder().audit_log().start().await?;
    setup(&bed, identities)?;
    let (store_log, api_log) = bed.audit_logs()?;

    let started = Instant::now();
    let mut drivers = Vec::with_capacity(nodes);
    for n in 0..nodes {
        let options = DriverOptions {
            auth_path: "kubernetes".into(),
            rotation_interval: format!("{}s", INTERVAL.as_secs()),
            store_timeout: "10s".into(),
            node_id: format!("sim-node-{n}"),
            ..Default::default()
        };
        drivers.push(CsiDriver::start(&bed, options).await?);
    }
    println!(
        "started {nodes} drivers in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let mut clients = Vec::with_capacity(nodes);
    for driver in &drivers {
        clients.push(driver.node().await?);
    }

    // Which ServiceAccount each pod runs as: random, as pods of many workloads land on a node.
    let mut rng = fastrand::Rng::with_seed(31);
    let accounts: Vec<usize> = (0..volumes).map(|_| rng.usize(..identities)).collect();
    let mut per_node: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); nodes];
    for (i, account) in accounts.iter().enumerate() {
        per_node[i % nodes].insert(*account);
    }
    let distinct: usize = per_node.iter().map(BTreeSet::len).sum();
    println!(
        "distinct (node, ServiceAccount) pairs: {distinct} (mean {:.1} per node)",
        distinct as f64 / nodes as f64
    );

    let (_, api_mark) = tally(&api_log, 0, api_request(DRIVER_AGENT))?;
    let started = Instant::now();
    let bed = &bed;
    let drivers_ref = &drivers;
    let clients_ref = &clients;
    let accounts_ref = &accounts;
    let mut latencies: Vec<Duration> = futures_util::stream::iter(0..volumes)
        .map(|i| async move {
            let node = i % nodes;
            let volume = create_pod(
                bed,
                &drivers_ref[node],
                NS,
                &format!("pod-{i}"),
                &format!("sa-{}", accounts_ref[i]),
                "bench",
            )
            .await?;
            let request = publish_request(bed, &volume).await?;
            let mut client = clients_ref[node].clone();
            let t = Instant::now();
            client
                .node_publish_volume(request)
                .await
                .map_err(|s| anyhow::anyhow!("publish {i}: {}", s.message()))?;
            anyhow::Ok(t.elapsed())
        })
        .buffer_unordered(PUBLISHES_IN_FLIGHT)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    println!(
        "published {volumes} volumes in {:.0} s ({PUBLISHES_IN_FLIGHT} in flight); publish latency p50 {:?}, p99 {:?}",
        started.elapsed().as_secs_f64(),
        percentile(&mut latencies, 0.5),
        percentile(&mut latencies, 0.99)
    );
    let (api_publishing, _) = tally(&api_log, api_mark, api_request(DRIVER_AGENT))?;
    println!("API requests of the drivers while publishing: {api_publishing:?}");

    // Settle: let every driver finish the cycle its publishes fell into, then count a window
    // of two intervals, in which each driver runs two cycles.
    tokio::time::sleep(INTERVAL + Duration::from_secs(5)).await;
    // The drivers' cycle counts are read right beside the audit marks; the window's requests
    // are divided by the cycles the drivers actually ran in it (per node), as cycles are not
    // aligned with the window.
    let cycles_before = cycle_sums(drivers_ref).await?;
    let writes_before = status_writes(drivers_ref).await?;
    run(bed
        .bao()?
        .args(["kv", "put", "secret/bench/a", "value=rotated"]))?;
    let (_, store_mark) = tally(&store_log, 0, store_request(classify_store_path))?;
    let (_, api_mark) = tally(&api_log, 0, api_request(DRIVER_AGENT))?;
    tokio::time::sleep(INTERVAL * 2).await;
    let (store_calls, _) = tally(&store_log, store_mark, store_request(classify_store_path))?;
    let (api_calls, _) = tally(&api_log, api_mark, api_request(DRIVER_AGENT))?;
    let cycles_after = cycle_sums(drivers_ref).await?;
    let writes_after = status_writes(drivers_ref).await?;
    let cycles_run: f64 = cycles_before
        .iter()
        .zip(&cycles_after)
        .map(|(before, after)| after.0 - before.0)
        .sum();
    anyhow::ensure!(
        cycles_run > 0.0,
        "no driver ran a rotation cycle in the window"
    );
    let cluster_cycles = cycles_run / nodes as f64;
    let per_cycle = |counts: &BTreeMap<String, u64>| -> BTreeMap<String, f64> {
        counts
            .iter()
            .map(|(k, v)| (k.clone(), (*v as f64 / cluster_cycles).round()))
            .collect()
    };
    println!(
        "per rotation cycle of the cluster ({cycles_run} driver cycles in {} s, {cluster_cycles:.2} per node): store {:?}; API {:?}",
        (INTERVAL * 2).as_secs(),
        per_cycle(&store_calls),
        per_cycle(&api_calls)
    );
    let mut cycle_times: Vec<f64> = cycles_before
        .iter()
        .zip(&cycles_after)
        .filter(|(before, after)| after.0 > before.0)
        .map(|(before, after)| (after.1 - before.1) / (after.0 - before.0))
        .collect();
    cycle_times.sort_by(f64::total_cmp);
    if let (Some(first), Some(last)) = (cycle_times.first(), cycle_times.last()) {
        println!(
            "cycle time per driver ({} drivers cycled): min {:.3} s, median {:.3} s, max {:.3} s",
            cycle_times.len(),
            first,
            cycle_times[cycle_times.len() / 2],
            last
        );
    }
    for (field, name) in [("VmRSS:", "RSS"), ("VmHWM:", "peak RSS")] {
        let mut mib = Vec::with_capacity(nodes);
        for (n, driver) in drivers.iter().enumerate() {
            let kib = driver.pid().map_or(0, |pid| status_kib(pid, field));
            anyhow::ensure!(
                kib > 0,
                "the driver of sim-node-{n} is not running:\n{}",
                driver.log()
            );
            mib.push(kib as f64 / 1024.0);
        }
        mib.sort_by(f64::total_cmp);
        println!(
            "driver {name} at ~{} volumes each: min {:.1} MiB, median {:.1} MiB, max {:.1} MiB, all {:.0} MiB",
            volumes / nodes,
            mib[0],
            mib[mib.len() / 2],
            mib[mib.len() - 1],
            mib.iter().sum::<f64>()
        );
    }
    let stored = run(bed.kubectl().args([
        "get",
        "secretsstoreimport",
        "bench",
        "-n",
        NS,
        "-o",
        "json",
        "--show-managed-fields",
    ]))?;
    let status_entries = serde_json::from_str::<serde_json::Value>(&stored)?["status"]["nodes"]
        .as_array()
        .map_or(0, Vec::len);
    println!("status entries on the SecretsStoreImport: {status_entries} (one per node)");
    println!(
        "status writes of all drivers in the window (one rotation of every volume): {} taken, {} failed; since start: {} taken, {} failed",
        writes_after.0 - writes_before.0,
        writes_after.1 - writes_before.1,
        writes_after.0,
        writes_after.1
    );
    println!(
        "the SecretsStoreImport as stored (managed fields included): {} bytes",
        stored.len()
    );
    println!(
        "model: store reads per cycle = distinct (node, ServiceAccount) pairs x paths = {distinct} x {} = {}; logins only when a store token nears its end (1 h)",
        PATHS.len(),
        distinct * PATHS.len()
    );
    for driver in &drivers {
        driver.unmount_volumes()?;
    }
    Ok(())
}

/// A store request named by what it is: a login, a read of a KV path, or its path.
fn classify_store_path(path: &str) -> String {
    if path.starts_with("auth/") && path.ends_with("/login") {
        "login".to_owned()
    } else if PATHS.contains(&path) {
        "read".to_owned()
    } else {
        path.to_owned()
    }
}

/// All drivers' status writes: (taken, failed).
async fn status_writes(drivers: &[CsiDriver]) -> anyhow::Result<(f64, f64)> {
    let mut sums = (0.0, 0.0);
    for driver in drivers {
        sums.0 += driver
            .metric("ssi_csi_status_writes_total{result=\"ok\"}")
            .await?;
        sums.1 += driver
            .metric("ssi_csi_status_writes_total{result=\"error\"}")
            .await?;
    }
    Ok(sums)
}

/// Each driver's (count, sum) of `ssi_csi_rotation_cycle_seconds`.
async fn cycle_sums(drivers: &[CsiDriver]) -> anyhow::Result<Vec<(f64, f64)>> {
    let mut sums = Vec::with_capacity(drivers.len());
    for driver in drivers {
        sums.push((
            driver
                .metric("ssi_csi_rotation_cycle_seconds_count")
                .await?,
            driver.metric("ssi_csi_rotation_cycle_seconds_sum").await?,
        ));
    }
    Ok(sums)
}
