//! HTTPS load on the real `ssi-webhook`, driven by `wrk` (Debian) with keep-alive, the guide's
//! Deployment as the review at `/enforce` (where the chart sends workloads), SSI lookups on
//! against the test bed's apiserver. Targets (DESIGN.md
//! section 6): at least 10,000 reviews/s on 2 cores, at least 70% of a no-op TLS handler measured
//! in the same run, RSS at most 30 MiB.
//!
//! `cargo build --release --workspace --bins && target/release/webhook_bench [seconds]`
//! (default 15 per server, in 5 rounds of 3 s: the four loads take turns, so that the machine's
//! drift falls on all alike). Figures go to stdout; docs/benchmarks.md records them.
//!
//! The baselines are this binary re-run as `webhook_bench noop|parse-only <cert> <key> <addr>`:
//! the same rustls + hyper stack and certificate, a handler that reads the body and answers a
//! constant (`noop`), or that also parses the review's envelope and answers with its uid
//! (`parse-only`: the least any webhook that reads a review does).

use anyhow::{Context, bail};
use ssi_tests::load::{post_script, wrk};
use ssi_tests::webhook::{CHART_ALLOCATOR_ENV, Webhook, bed_with_the_guides_ssi};
use ssi_tests::{status_kib, workspace_path};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

// The same allocator as ssi-webhook (and its setting, below), so that the no-op handler differs
// from it only in the handler.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("noop") => return noop_server(&args[2..], false),
        Some("parse-only") => return noop_server(&args[2..], true),
        _ => {}
    }
    let seconds: u64 = args.get(1).map_or(Ok(15), |s| s.parse())?;
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

    // Warm them up, then measure all four in turn, round after round: the machine's drift over
    // the run (2 shared cores) then falls on each alike, and each round's ratios compare loads
    // run seconds apart.
    // For a Deployment the apiserver calls /enforce only: the chart sends Pods alone to /inject.
    let enforce_url = webhook.url.replace("/mutate", "/enforce");
    for url in [&noop_url, &parse_only_url, &enforce_url] {
        wrk(&script, url, 2)?;
    }
    let mut loads = [
        Measured::new(noop.id(), &script, &noop_url),
        Measured::new(parse_only.id(), &script, &parse_only_url),
        Measured::new(webhook.pid(), &script, &enforce_url),
        Measured::new(webhook.pid(), &unrelated_script, &enforce_url),
    ];
    let round_seconds = (seconds / ROUNDS).max(1);
    for _ in 0..ROUNDS {
        for load in &mut loads {
            load.run(round_seconds)?;
        }
    }
    for server in [&mut noop, &mut parse_only] {
        let _ = server.kill();
        let _ = server.wait();
    }
    let [baseline, parsed, reviews, short_path] = &loads;

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
        "ssi-webhook HTTPS benchmark: wrk -t2 -c32, keep-alive, 2 cores shared by wrk and the server; {ROUNDS} rounds of {round_seconds} s per server, run in turn; medians of the rounds"
    );
    println!("no-op TLS handler : {}", baseline.summary("req/s"));
    println!(
        "parse-only handler: {} ({} of the no-op: the same handler, parsing the review's envelope)",
        parsed.summary("req/s"),
        parsed.share_of(baseline)
    );
    println!(
        "ssi-webhook       : {} [>= 10,000/s]; {} of parse-only [>= 75%]",
        reviews.summary("reviews/s"),
        reviews.share_of(parsed)
    );
    println!(
        "  without secrets : {} ({} of parse-only [>= 90%]; a Deployment with no secrets-store volume)",
        short_path.summary("reviews/s"),
        short_path.share_of(parsed)
    );
    println!(
        "ratio             : {} of the no-op handler [>= 70%]",
        reviews.share_of(baseline)
    );
    println!(
        "server CPU per request: no-op {:.1} us, parse-only {:.1} us, review {:.1} us, without secrets {:.1} us (user + system time of the server process over its rounds; wrk's own is not counted)",
        baseline.cpu_per_request_us(),
        parsed.cpu_per_request_us(),
        reviews.cpu_per_request_us(),
        short_path.cpu_per_request_us()
    );
    println!(
        "ssi-webhook RSS   : {:.1} MiB now, {:.1} MiB peak [<= 30 MiB]",
        rss as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    println!("counted           : {patched}");
    Ok(())
}

/// Rounds each server's load is split into.
const ROUNDS: u64 = 5;

/// One server's load, run in rounds: wrk's figures of each round, and the server's CPU time.
struct Measured<'a> {
    pid: u32,
    script: &'a Path,
    url: &'a str,
    rounds: Vec<ssi_tests::load::Load>,
    requests: f64,
    cpu_seconds: f64,
}

impl<'a> Measured<'a> {
    fn new(pid: u32, script: &'a Path, url: &'a str) -> Measured<'a> {
        Measured {
            pid,
            script,
            url,
            rounds: Vec::new(),
            requests: 0.0,
            cpu_seconds: 0.0,
        }
    }

    /// One round of `seconds`, and the server's CPU time over it (user + system): a figure
    /// that does not depend on how wrk and the server shared the cores.
    fn run(&mut self, seconds: u64) -> anyhow::Result<()> {
        let before = cpu_seconds(self.pid)?;
        let load = wrk(self.script, self.url, seconds)?;
        self.cpu_seconds += cpu_seconds(self.pid)? - before;
        self.requests += load.per_second * seconds as f64;
        self.rounds.push(load);
        Ok(())
    }

    /// The median of one figure over the rounds.
    fn median(&self, figure: impl Fn(&ssi_tests::load::Load) -> f64) -> f64 {
        median(self.rounds.iter().map(figure).collect())
    }

    fn summary(&self, unit: &str) -> String {
        format!(
            "{:>8.0} {unit}  p50 {:.2} ms  p99 {:.2} ms",
            self.median(|l| l.per_second),
            self.median(|l| l.p50_ms),
            self.median(|l| l.p99_ms)
        )
    }

    /// This load's throughput as a share of `other`'s: the median of the rounds' shares (each
    /// against the other's load of the same round), and their range.
    fn share_of(&self, other: &Measured) -> String {
        let shares: Vec<f64> = self
            .rounds
            .iter()
            .zip(&other.rounds)
            .map(|(mine, theirs)| 100.0 * mine.per_second / theirs.per_second)
            .collect();
        let (low, high) = shares
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), s| (lo.min(*s), hi.max(*s)));
        format!("{:.0}% (rounds {low:.0}-{high:.0}%)", median(shares))
    }

    fn cpu_per_request_us(&self) -> f64 {
        self.cpu_seconds * 1e6 / self.requests.max(1.0)
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or_default()
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
        // The webhook's allocator setting, so that the servers differ only in their handlers.
        .env(CHART_ALLOCATOR_ENV.0, CHART_ALLOCATOR_ENV.1)
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
