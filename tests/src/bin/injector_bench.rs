//! Benchmarks of the shipped `ssi-injector` (static, from `scripts/build-injector`) on the real
//! test bed (DESIGN.md section 6): binary size, start-to-exec overhead beyond the store round
//! trips, and RSS in watch mode.
//!
//! `scripts/build-injector && cargo run --release -p ssi-tests --bin injector_bench -- [runs]`
//! (default 50). Figures go to stdout; the README records them.
//!
//! The store is the bed's OpenBao over plain HTTP, reached by host name (`localhost`), so the
//! static binary's name resolution is part of the figure. Over TLS the handshake counts as store
//! time; without a CA bundle (no tls-secret) building the client also loads the system's roots,
//! about 6 ms on this machine, which this figure does not include.
//!
//! Overhead = wall time from spawning the injector to its child's exit, minus the time the
//! injector reports waiting for the store (its debug line), minus the same child run directly.

use anyhow::{Context, bail};
use ssi_tests::load::percentile;
use ssi_tests::walkthrough::{self, AUTH_PATHS, ROLE};
use ssi_tests::{status_kib, workspace_path};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn injector_binary() -> anyhow::Result<PathBuf> {
    let path = workspace_path("target/x86_64-unknown-linux-gnu/injector/ssi-injector");
    if !path.is_file() {
        bail!(
            "{} is missing: run scripts/build-injector first",
            path.display()
        );
    }
    Ok(path)
}

struct Setup {
    binary: PathBuf,
    address: String,
    token: PathBuf,
}

impl Setup {
    fn command(&self, env: &[(&str, &str)], argv: &[&str]) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("SSI_INJECTOR_ADDR", &self.address)
            .env("SSI_INJECTOR_AUTH_PATH", AUTH_PATHS[0])
            .env("SSI_INJECTOR_ROLE", ROLE)
            .env("SSI_INJECTOR_TOKEN_PATH", &self.token)
            .envs(env.iter().copied())
            .args(argv)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        command
    }
}

/// Runs `command` `runs` times; wall times, and the store time each run reported.
fn time_runs(
    mut make: impl FnMut() -> Command,
    runs: usize,
) -> anyhow::Result<Vec<(Duration, Duration)>> {
    let mut samples = Vec::new();
    for _ in 0..runs {
        let mut command = make();
        let started = Instant::now();
        let output = command.stderr(Stdio::piped()).output()?;
        let wall = started.elapsed();
        if !output.status.success() {
            bail!("run failed: {}", String::from_utf8_lossy(&output.stderr));
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let store_us: u64 = stderr
            .split(" us of it waiting for the store")
            .next()
            .and_then(|head| head.rsplit(", ").next())
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        samples.push((wall, Duration::from_micros(store_us)));
    }
    Ok(samples)
}

fn report(name: &str, samples: &mut [Duration]) {
    let (p50, p90) = (percentile(samples, 0.5), percentile(samples, 0.9));
    println!(
        "{name}: p50 {:.2} ms, p90 {:.2} ms",
        p50.as_secs_f64() * 1e3,
        p90.as_secs_f64() * 1e3
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let runs: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(50);
    let binary = injector_binary()?;
    let size = std::fs::metadata(&binary)?.len();
    println!(
        "binary: {} ({:.2} MiB, static, stripped)",
        binary.display(),
        size as f64 / 1048576.0
    );

    let (bed, token) = walkthrough::injector_bench_bed().await?;
    let setup = Setup {
        binary,
        address: bed.openbao().addr.replace("127.0.0.1", "localhost"),
        token,
    };
    let references = [
        (
            "DB_PASSWORD",
            "secrets-store:secret/data/database-for-python-app#password",
        ),
        (
            "DSN",
            "secrets-store:secret/data/database-for-python-app#postgres://app:${.password}@db/app",
        ),
        ("API_KEY", "secrets-store:secret/data/bench-other#api_key"),
        ("SSI_INJECTOR_LOG_LEVEL", "debug"),
    ];

    // Warm the page cache and the store once.
    time_runs(|| setup.command(&references, &["/bin/true"]), 3)?;
    let direct = time_runs(
        || {
            let mut c = Command::new("/bin/true");
            c.stdout(Stdio::null());
            c
        },
        runs,
    )?;
    let mut direct_wall: Vec<Duration> = direct.iter().map(|s| s.0).collect();
    let direct_p50 = percentile(&mut direct_wall, 0.5);
    report("/bin/true run directly", &mut direct_wall);

    let mut no_refs: Vec<Duration> = time_runs(
        || setup.command(&[("SSI_INJECTOR_LOG_LEVEL", "debug")], &["/bin/true"]),
        runs,
    )?
    .iter()
    .map(|s| s.0.saturating_sub(direct_p50))
    .collect();
    report(
        "injector overhead without references (no store call)",
        &mut no_refs,
    );

    let samples = time_runs(|| setup.command(&references, &["/bin/true"]), runs)?;
    let mut store: Vec<Duration> = samples.iter().map(|s| s.1).collect();
    let mut overhead: Vec<Duration> = samples
        .iter()
        .map(|(wall, store)| wall.saturating_sub(*store).saturating_sub(direct_p50))
        .collect();
    report(
        "store round trips (1 login + 2 reads) as the injector waited for them",
        &mut store,
    );
    report(
        "start-to-exec overhead beyond the store round trips [target <= 10 ms]",
        &mut overhead,
    );

    // Watch mode: the injector stays as PID 1 of the app and polls every second.
    let mut watch = setup
        .command(
            &[
                references[0],
                ("SSI_INJECTOR_MODE", "watch-for-data"),
                ("SSI_INJECTOR_POLL_INTERVAL", "1s"),
            ],
            &["sleep", "60"],
        )
        .stderr(Stdio::null())
        .spawn()
        .context("start the injector in watch mode")?;
    tokio::time::sleep(Duration::from_secs(15)).await;
    let pid = watch.id();
    let (rss, peak) = (status_kib(pid, "VmRSS:"), status_kib(pid, "VmHWM:"));
    let _ = watch.kill();
    let _ = watch.wait();
    println!(
        "watch-for-data RSS after ~15 polls: {:.1} MiB, peak {:.1} MiB [target <= 8 MiB]",
        rss as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    Ok(())
}
