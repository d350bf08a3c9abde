//! Benchmarks of the CSI node driver on the real test bed (DESIGN.md section 6): publish latency
//! against the API and store round trips it cannot avoid, store calls per publish, and a full
//! rotation cycle with its RSS at N mounts of one identity and of N identities.
//!
//! `cargo run --release -p ssi-tests --bin csi_bench -- [mounts]` (default 1000). Figures go to
//! stdout; the README records them.

use secrecy::SecretString;
use ssi_tests::audit::{api_request, store_request, tally};
use ssi_tests::bench::{DRIVER_AGENT, NS, PATHS, calls, setup};
use ssi_tests::csi::{CsiDriver, DriverOptions, create_pod, publish_request};
use ssi_tests::load::percentile;
use ssi_tests::{KUBE_API_AUDIENCE, TestBed, status_kib};
use ssi_vault::{AuthMethod, Client, Login, Session, StoreConfig};
use std::time::{Duration, Instant};

/// What one publish cannot avoid: reading the SSI from the API and the three secrets from the
/// store, plus a login when every publish is a new identity, measured from outside the driver.
async fn round_trips(bed: &TestBed, with_login: bool) -> anyhow::Result<Duration> {
    let kube = bed.kube_client().await?;
    let api: kube::Api<ssi_core::SecretsStoreImport> = kube::Api::namespaced(kube, NS);
    let token = bed
        .service_account_token(NS, "sa-0", KUBE_API_AUDIENCE)
        .await?;
    let client = Client::new(&StoreConfig::new(bed.openbao().addr.parse()?))?;
    let new_session = || {
        Session::new(
            client.clone(),
            Login {
                method: AuthMethod::Kubernetes,
                mount: "kubernetes".into(),
                role: "bench".into(),
            },
            SecretString::from(token.clone()),
        )
    };
    let mut session = new_session();
    session.read(PATHS[0], None).await?;
    let mut samples = Vec::new();
    for _ in 0..50 {
        if with_login {
            session = new_session();
        }
        let started = Instant::now();
        api.get("bench").await?;
        for path in PATHS {
            session.read(path, None).await?;
        }
        samples.push(started.elapsed());
    }
    Ok(percentile(&mut samples, 0.5))
}

async fn scenario(mounts: usize, identities: usize) -> anyhow::Result<()> {
    println!(
        "\n== {mounts} mounts, {identities} identit{}",
        if identities == 1 { "y" } else { "ies" }
    );
    let bed = TestBed::builder().audit_log().start().await?;
    setup(&bed, identities)?;
    let (store_log, api_log) = bed.audit_logs()?;
    let ours = || api_request(DRIVER_AGENT);
    let (_, api_mark) = tally(&api_log, 0, ours())?;
    let options = DriverOptions {
        auth_path: "kubernetes".into(),
        rotation_interval: "30s".into(),
        store_timeout: "10s".into(),
        extra_args: vec!["--rotation-concurrency=16".into()],
        ..Default::default()
    };
    let driver = CsiDriver::start(&bed, options).await?;

    let mut node = driver.node().await?;
    let mut latencies = Vec::new();
    let started = Instant::now();
    for i in 0..mounts {
        let volume = create_pod(
            &bed,
            &driver,
            NS,
            &format!("pod-{i}"),
            &format!("sa-{}", i % identities),
            "bench",
        )
        .await?;
        let (logins, reads) = (calls(&driver, "login").await, calls(&driver, "read").await);
        // Kubelet's side (its TokenRequest, its connection) is not the driver's time.
        let request = publish_request(&bed, &volume).await?;
        let t = Instant::now();
        node.node_publish_volume(request)
            .await
            .map_err(|s| anyhow::anyhow!("publish {i}: {}", s.message()))?;
        latencies.push(t.elapsed());
        if i < 2 {
            println!(
                "publish #{}: {:?}, store calls: {} login + {} reads",
                i + 1,
                t.elapsed(),
                calls(&driver, "login").await - logins,
                calls(&driver, "read").await - reads
            );
        }
    }
    println!("published {mounts} volumes in {:?}", started.elapsed());
    let (api_calls, _) = tally(&api_log, api_mark, ours())?;
    println!("API requests of the driver for {mounts} publishes: {api_calls:?}");
    let warm_latencies = &mut latencies[1..];
    let warm = percentile(warm_latencies, 0.5);
    println!(
        "publish latency p99 (of {}): {:?}",
        mounts - 1,
        percentile(warm_latencies, 0.99)
    );
    // With one identity the token is warm after the first publish; with one identity per
    // mount every publish logs in, so the floor includes a login too.
    let floor = round_trips(&bed, identities > 1).await?;
    println!(
        "publish latency (median of {}): {warm:?}; API + store round trips alone: {floor:?}; overhead: {:?}",
        mounts - 1,
        warm.saturating_sub(floor)
    );

    // One full rotation cycle over every mount.
    let count_series = "ssi_csi_rotation_cycle_seconds_count";
    let before = (
        driver.metric(count_series).await?,
        driver.metric("ssi_csi_rotation_cycle_seconds_sum").await?,
    );
    let (logins, reads) = (calls(&driver, "login").await, calls(&driver, "read").await);
    let (_, store_mark) = tally(&store_log, 0, store_request(str::to_owned))?;
    let (_, api_mark) = tally(&api_log, 0, ours())?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while driver.metric(count_series).await? <= before.0 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "no rotation cycle within 2 minutes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let cycle = driver.metric("ssi_csi_rotation_cycle_seconds_sum").await? - before.1;
    println!(
        "rotation cycle over {mounts} mounts: {cycle:.3} s, store calls: {} logins + {} reads",
        calls(&driver, "login").await - logins,
        calls(&driver, "read").await - reads
    );
    // Counted again by the store and by the apiserver, not by the driver.
    let (store_calls, _) = tally(&store_log, store_mark, store_request(str::to_owned))?;
    let (api_calls, _) = tally(&api_log, api_mark, ours())?;
    println!(
        "  from the store's audit log: {store_calls:?}; from the apiserver's audit log (User-Agent {DRIVER_AGENT}): {api_calls:?}"
    );
    // Its entries in the SSI's status (all mounts use one SSI): a few writes, not one per
    // volume or per rotation.
    println!(
        "status writes of the SSI's entry, from the first publish to the end of the cycle ({:.0} s): {}",
        started.elapsed().as_secs_f64(),
        driver
            .metric("ssi_csi_status_writes_total{result=\"ok\"}")
            .await?
    );
    if let Some(pid) = driver.pid() {
        println!(
            "driver RSS at {mounts} mounts: {:.1} MiB",
            status_kib(pid, "VmRSS:") as f64 / 1024.0
        );
    }
    // Unmount everything before the bed's directory goes (the tmpfs mounts are the host's).
    driver.unmount_volumes()?;
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mounts: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(1000);
    scenario(mounts, 1).await?;
    scenario(mounts, mounts).await?;
    Ok(())
}
