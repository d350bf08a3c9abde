//! Store requests per hour for N volumes of one leased database role (issue 17), counted from
//! the store's audit log on the real test bed: OpenBao's database engine on a real PostgreSQL,
//! the release driver with its default 2-minute rotation interval, N pods of one
//! ServiceAccount mounting docs/examples/ssi-database.yaml.
//!
//! `cargo build --release --workspace --bins && target/release/lease_bench [volumes] [lease
//! seconds] [window seconds]` (defaults 1000, 60, 240). Figures go to stdout; the README
//! records them.
//!
//! The lease is short so that a few minutes show several renewals of every volume; renewals
//! scale with 1/lease, so the per-hour figure for a one-hour lease is derived from the measured
//! one. The peers' figure is computed from their documented behaviour: the Secrets Store CSI
//! driver calls the provider's Mount for every volume at every rotation poll (2 minutes by
//! default), and vault-csi-provider reads every secret on each Mount, which for a database role
//! is a new database user each time.

use anyhow::Context;
use ssi_tests::audit::{store_request, tally};
use ssi_tests::csi::{CsiDriver, DriverOptions, create_pod, publish_request};
use ssi_tests::engines::{self, DATABASE_PATH as DB_PATH};
use ssi_tests::postgres::Postgres;
use ssi_tests::walkthrough::{self, NAMESPACE, Narrator, SERVICE_ACCOUNT, VaultSetup};
use ssi_tests::{TestBed, status_kib, workspace_path};
use std::time::{Duration, Instant};

/// The rotation poll interval of the Secrets Store CSI driver and of ours.
const POLL: Duration = Duration::from_secs(120);

/// What a store request was, by its path.
fn kind_of(path: &str) -> String {
    match path {
        p if p.ends_with("/login") => "login",
        "auth/token/renew-self" => "token renewal",
        "sys/leases/renew" => "lease renewal",
        p if p.starts_with("sys/leases/revoke") => "lease revocation",
        DB_PATH => "read (a new database user)",
        _ => "other",
    }
    .to_owned()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let volumes = *args.first().unwrap_or(&1000) as usize;
    let lease = *args.get(1).unwrap_or(&60);
    let window = Duration::from_secs(*args.get(2).unwrap_or(&240));

    let bed = TestBed::builder().audit_log().start().await?;
    let audit = bed.openbao().audit_log.clone().context("audit log")?;
    walkthrough::run(&bed, VaultSetup::Http, &mut Narrator::quiet()).await?;
    let postgres = Postgres::start(bed.dir()).await?;
    engines::database(&bed, &postgres, &format!("{lease}s"), "24h")?;
    walkthrough::backend_policy(&bed, engines::DATABASE_POLICY)?;
    let example = std::fs::read_to_string(workspace_path("docs/examples/ssi-database.yaml"))?;
    bed.apply_yaml(&example)?;
    let driver = CsiDriver::start(
        &bed,
        DriverOptions {
            rotation_interval: "2m".into(),
            store_timeout: "10s".into(),
            extra_args: vec!["--rotation-concurrency=16".into()],
            ..Default::default()
        },
    )
    .await?;

    let started = Instant::now();
    let mut node = driver.node().await?;
    for i in 0..volumes {
        let volume = create_pod(
            &bed,
            &driver,
            NAMESPACE,
            &format!("db-{i}"),
            SERVICE_ACCOUNT,
            "db",
        )
        .await?;
        let request = publish_request(&bed, &volume).await?;
        node.node_publish_volume(request)
            .await
            .map_err(|s| anyhow::anyhow!("publish {i}: {}", s.message()))?;
    }
    let (at_publish, mark) = tally(&audit, 0, store_request(kind_of))?;
    println!(
        "published {volumes} volumes of one ServiceAccount in {:?}; store requests: {at_publish:?}",
        started.elapsed()
    );
    println!("database users: {}", postgres.engine_users()?.len());

    tokio::time::sleep(window).await;
    let (counts, _) = tally(&audit, mark, store_request(kind_of))?;
    let hours = window.as_secs_f64() / 3600.0;
    println!(
        "\n{volumes} volumes, {lease} s leases, {} s window (rotation interval 2 min):",
        window.as_secs()
    );
    for (kind, n) in &counts {
        println!("  {kind}: {n} in the window, {:.0}/hour", *n as f64 / hours);
    }
    let renewals = counts.get("lease renewal").copied().unwrap_or(0) as f64 / hours;
    let reads = counts
        .get("read (a new database user)")
        .copied()
        .unwrap_or(0) as f64
        / hours;
    let per_hour_at_1h = renewals * lease as f64 / 3600.0;
    println!(
        "lease renewals per hour with one-hour leases (scaled by {lease} s / 3600 s): {per_hour_at_1h:.0}; \
         new database users per hour: {reads:.0}"
    );
    let peers = volumes as f64 * 3600.0 / POLL.as_secs_f64();
    println!(
        "every-poll re-read (Secrets Store CSI driver + vault-csi-provider, 2 min poll): {peers:.0} reads/hour, \
         each a new database user"
    );
    if let Some(pid) = driver.pid() {
        println!(
            "driver RSS: {:.1} MiB",
            status_kib(pid, "VmRSS:") as f64 / 1024.0
        );
    }
    driver.unmount_volumes()?;
    Ok(())
}
