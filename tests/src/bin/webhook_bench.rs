//! HTTPS load on the real `ssi-webhook`, driven by `wrk` (Debian) with keep-alive, the guide's
//! Deployment as the review at `/enforce` (where the chart sends workloads), SSI lookups on
//! against the test bed's apiserver. Targets (DESIGN.md
//! section 6): at least 10,000 reviews/s on 2 cores, at least 70% of a no-op TLS handler measured
//! in the same run, RSS at most 30 MiB.
//!
//! `cargo build --release --workspace --bins && target/release/webhook_bench [seconds]`
//! (default 10 per server). Figures go to stdout; the README records them.
//!
//! The baselines are this binary re-run as `webhook_bench noop|parse-only <cert> <key> <addr>`:
//! the same rustls + hyper stack and certificate, a handler that reads the body and answers a
//! constant (`noop`), or that also parses the review's envelope and answers with its uid
//! (`parse-only`: the least any webhook that reads a review does).

use anyhow::{Context, bail};
use ssi_tests::load::{post_script, wrk};
use ssi_tests::webhook::{Webhook, bed_with_the_guides_ssi};
use ssi_tests::{status_kib, workspace_path};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

// The same allocator as ssi-webhook, so that the no-op handler differs from it only in the handler.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("noop") => return noop_server(&args[2..], false),
        Some("parse-only") => return noop_server(&args[2..], true),
        _ => {}
    }
    let seconds: u64 = args.get(1).map_or(Ok(10), |s| s.parse())?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(bench(seconds))
}

async fn bench(seconds: u64) -> anyhow::Result<()> {
    let bed = bed_with_the_guides_ssi().await?;
    let webhook = Webhook::start(&bed, &[]).await?;
    let guide = std::fs::read_to_string(workspace_path(
        "webhook/tests/fixtures/deployment-create.json",
    ))?;
    let script = post_script(bed.dir(), "review", &guide)?;
    // Most workloads in a cluster use no secrets-store volume: the short path.
    let unrelated = guide.replace("secrets-store.csi.deckhouse.io", "other.csi.example.com");
    let unrelated_script = post_script(bed.dir(), "unrelated", &unrelated)?;

    let (mut noop, noop_url) = baseline_server("noop", &webhook.certs)?;
    let (mut parse_only, parse_only_url) = baseline_server("parse-only", &webhook.certs)?;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Warm them up, then measure the baselines first and the webhook second, in one run.
    // For a Deployment the apiserver calls /enforce only: the chart sends Pods alone to /inject.
    let enforce_url = webhook.url.replace("/mutate", "/enforce");
    for url in [&noop_url, &parse_only_url, &enforce_url] {
        wrk(&script, url, 2)?;
    }
    let (noop_pid, parse_only_pid) = (noop.id(), parse_only.id());
    let (baseline, noop_cpu) = measured(noop_pid, &script, &noop_url, seconds)?;
    let (parsed, parse_only_cpu) = measured(parse_only_pid, &script, &parse_only_url, seconds)?;
    let (reviews, review_cpu) = measured(webhook.pid(), &script, &enforce_url, seconds)?;
    let (short_path, short_path_cpu) =
        measured(webhook.pid(), &unrelated_script, &enforce_url, seconds)?;
    for server in [&mut noop, &mut parse_only] {
        let _ = server.kill();
        let _ = server.wait();
    }

    let metrics = reqwest::get(format!("{}/metrics", webhook.admin))
        .await?
        .text()
        .await?;
    let patched = metrics
        .lines()
        .find(|l| {
            l.starts_with(
                "ssi_webhook_admission_reviews_total{kind=\"Deployment\",verdict=\"patched\"}",
            )
        })
        .context("no patched reviews counted")?;
    let (rss, peak) = (
        status_kib(webhook.pid(), "VmRSS:"),
        status_kib(webhook.pid(), "VmHWM:"),
    );
    println!(
        "ssi-webhook HTTPS benchmark: wrk -t2 -c32 -d{seconds}s, keep-alive, 2 cores shared by wrk and the server"
    );
    println!(
        "no-op TLS handler : {:>8.0} req/s  p50 {:.2} ms  p99 {:.2} ms",
        baseline.per_second, baseline.p50_ms, baseline.p99_ms
    );
    println!(
        "parse-only handler: {:>8.0} req/s  p50 {:.2} ms  p99 {:.2} ms ({:.0}% of the no-op: the same handler, parsing the review's envelope)",
        parsed.per_second,
        parsed.p50_ms,
        parsed.p99_ms,
        100.0 * parsed.per_second / baseline.per_second
    );
    println!(
        "ssi-webhook       : {:>8.0} reviews/s  p50 {:.2} ms  p99 {:.2} ms  [>= 10,000/s]",
        reviews.per_second, reviews.p50_ms, reviews.p99_ms
    );
    println!(
        "  without secrets : {:>8.0} reviews/s  p50 {:.2} ms  p99 {:.2} ms ({:.0}% of the no-op; a Deployment with no secrets-store volume)",
        short_path.per_second,
        short_path.p50_ms,
        short_path.p99_ms,
        100.0 * short_path.per_second / baseline.per_second
    );
    println!(
        "ratio             : {:.0}% of the no-op handler [>= 70%]",
        100.0 * reviews.per_second / baseline.per_second
    );
    println!(
        "server CPU per request: no-op {noop_cpu:.1} us, parse-only {parse_only_cpu:.1} us, review {review_cpu:.1} us, without secrets {short_path_cpu:.1} us (user + system time of the server process over the run; wrk's own is not counted)"
    );
    println!(
        "ssi-webhook RSS   : {:.1} MiB now, {:.1} MiB peak [<= 30 MiB]",
        rss as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    println!("counted           : {patched}");
    Ok(())
}

/// A wrk run against the server of `pid`, and that server's CPU time (user + system) per
/// request over it, in microseconds: a figure that does not depend on how wrk and the server
/// shared the cores.
fn measured(
    pid: u32,
    script: &Path,
    url: &str,
    seconds: u64,
) -> anyhow::Result<(ssi_tests::load::Load, f64)> {
    let before = cpu_seconds(pid)?;
    let load = wrk(script, url, seconds)?;
    let used = cpu_seconds(pid)? - before;
    let requests = load.per_second * seconds as f64;
    Ok((load, used * 1e6 / requests.max(1.0)))
}

/// User + system CPU seconds of a process so far, from /proc/<pid>/stat.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("no command name in /proc/<pid>/stat")?
        .1
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    // In USER_HZ, which Linux fixes at 100 for user space on every architecture it runs here.
    Ok(ticks / 100.0)
}

/// Starts this binary as a baseline server (`noop` or `parse-only`) with the webhook's
/// certificate on a free port; the process and its URL.
fn baseline_server(mode: &str, certs: &Path) -> anyhow::Result<(std::process::Child, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = Command::new(std::env::current_exe()?)
        .arg(mode)
        .arg(certs.join("tls.crt"))
        .arg(certs.join("tls.key"))
        .arg(format!("127.0.0.1:{port}"))
        .spawn()?;
    Ok((child, format!("https://127.0.0.1:{port}/mutate")))
}

/// The no-op handler's answer, whatever it was asked.
const NOOP_ANSWER: &str = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"","allowed":true}}"#;

/// What any webhook has to read of a review before it can answer: the envelope and the uid. The
/// object is skipped, but still checked to be JSON.
#[derive(serde::Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    request: EnvelopeRequest<'a>,
}

#[derive(serde::Deserialize)]
struct EnvelopeRequest<'a> {
    #[serde(borrow)]
    uid: std::borrow::Cow<'a, str>,
    #[serde(rename = "object")]
    _object: serde::de::IgnoredAny,
}

/// The baselines: the same rustls + hyper + axum stack as ssi-webhook, and a handler that reads
/// the body and answers a constant (`noop`) or parses the review's envelope first and answers
/// with its uid (`parse-only`).
fn noop_server(args: &[String], parse: bool) -> anyhow::Result<()> {
    let [cert, key, addr] = args else {
        bail!("usage: webhook_bench noop|parse-only <cert> <key> <addr>");
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Same runtime flavour as ssi-webhook's #[tokio::main].
    tokio::runtime::Runtime::new()?.block_on(async {
        let certs = ssi_webhook::tls::CertStore::load(Path::new(cert), Path::new(key))?;
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let app = axum::Router::new().route(
            "/mutate",
            axum::routing::post(move |body: axum::body::Bytes| async move {
                if !parse {
                    let _ = body.len();
                    return NOOP_ANSWER.to_owned();
                }
                let uid = serde_json::from_slice::<Envelope>(&body)
                    .map(|envelope| envelope.request.uid.into_owned())
                    .unwrap_or_default();
                // The uid as a JSON string (quoted, escaped), in an otherwise constant answer.
                let uid = serde_json::to_string(&uid).unwrap_or_default();
                format!(
                    r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{{"uid":{uid},"allowed":true}}}}"#
                )
            }),
        );
        ssi_webhook::server::serve_https(listener, app, certs, None, std::future::pending()).await?;
        Ok(())
    })
}
