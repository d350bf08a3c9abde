//! The real `ssi-webhook` binary: admin endpoints, a certificate renewed the way kubelet renews a
//! Secret volume while reviews keep coming (not one may fail), graceful shutdown, and start-up
//! errors that say what to fix.

// Tests fail by panicking, helpers included.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::{client_trusting, generate, swap_in};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const FIXTURE: &str = include_str!("fixtures/deployment-create.json");

struct Webhook {
    child: Child,
    url: String,
    admin: String,
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn command(volume: &Path, extra: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ssi-webhook"));
    command
        .arg("--tls-cert")
        .arg(volume.join("tls.crt"))
        .arg("--tls-key")
        .arg(volume.join("tls.key"))
        .args([
            "--ssi-lookup=false",
            "--registry-lookup=false",
            "--tls-reload-interval=100ms",
        ])
        .args(extra)
        .stdin(Stdio::null());
    command
}

async fn start(volume: &Path, extra: &[&str]) -> Webhook {
    let (port, admin_port) = (free_port(), free_port());
    let child = command(volume, extra)
        .arg(format!("--listen-addr=127.0.0.1:{port}"))
        .arg(format!("--admin-addr=127.0.0.1:{admin_port}"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let webhook = Webhook {
        child,
        url: format!("https://127.0.0.1:{port}/mutate"),
        admin: format!("http://127.0.0.1:{admin_port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(response) = reqwest::get(format!("{}/readyz", webhook.admin)).await
            && response.status() == 200
        {
            return webhook;
        }
        assert!(Instant::now() < deadline, "the webhook never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn get_text(url: String) -> (u16, String) {
    let response = reqwest::get(url).await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

fn der(cert: &Path) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(cert).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_certificate_renewed_under_load_fails_no_request() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let (ca, first_cert, first_key) = generate(&out);
    let first = der(&first_cert);
    let volume = dir.path().join("tls");
    swap_in(&volume, "..2026_11_28_06_00_00.1", &first_cert, &first_key);
    let webhook = start(&volume, &[]).await;

    let (healthz, readyz) = (
        get_text(format!("{}/healthz", webhook.admin)).await,
        get_text(format!("{}/readyz", webhook.admin)).await,
    );
    assert_eq!((healthz.0, readyz.0), (200, 200));

    // Half the workers keep connections alive, half handshake on every request: both kinds
    // must ride through the swap.
    let stop = Arc::new(AtomicBool::new(false));
    let (done, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut workers = Vec::new();
    for worker in 0..8 {
        let client = client_trusting(&ca, worker % 2 == 1);
        let (url, stop, done, failed) = (
            webhook.url.clone(),
            stop.clone(),
            done.clone(),
            failed.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let answer = match client.post(&url).body(FIXTURE).send().await {
                    Ok(response) if response.status() == 200 => response
                        .json::<serde_json::Value>()
                        .await
                        .map_err(|e| e.to_string()),
                    Ok(response) => Err(format!("HTTP {}", response.status())),
                    Err(e) => Err(format!("{e:?}")),
                };
                match answer {
                    Ok(review) if review["response"]["allowed"] == true => {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(review) => errors.push(format!("unexpected review {review}")),
                    Err(e) => errors.push(e),
                }
                if !errors.is_empty() {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
            errors
        }));
    }

    tokio::time::sleep(Duration::from_millis(500)).await;
    let before_swap = done.load(Ordering::Relaxed);
    // The users' renewal: the generator again (same CA, new pair), then kubelet's swap.
    let (_, renewed_cert, renewed_key) = generate(&out);
    let renewed = der(&renewed_cert);
    assert_ne!(first, renewed);
    swap_in(
        &volume,
        "..2026_11_28_07_00_00.2",
        &renewed_cert,
        &renewed_key,
    );

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // A new client each time: a resumed TLS session would report the old certificate.
        let probe = client_trusting(&ca, true);
        let response = probe.post(&webhook.url).body(FIXTURE).send().await.unwrap();
        let served = response
            .extensions()
            .get::<reqwest::tls::TlsInfo>()
            .and_then(|info| info.peer_certificate())
            .map(<[u8]>::to_vec)
            .unwrap();
        if served == renewed.to_vec() {
            break;
        }
        assert_eq!(served, first.to_vec(), "served neither certificate");
        assert!(Instant::now() < deadline, "the renewal was never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Keep the load on a little longer on the new certificate.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut errors = Vec::new();
    for worker in workers {
        errors.extend(worker.await.unwrap());
    }
    assert!(errors.is_empty(), "failed requests: {errors:?}");
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    let total = done.load(Ordering::Relaxed);
    eprintln!("{total} reviews answered, {before_swap} of them before the swap");
    assert!(
        before_swap > 0 && total > before_swap,
        "load ran across the swap ({before_swap} before, {total} in all)"
    );

    let (_, metrics) = get_text(format!("{}/metrics", webhook.admin)).await;
    assert!(
        metrics.contains("ssi_webhook_certificate_reloads_total{result=\"ok\"} 1"),
        "{metrics}"
    );
    let patched = metrics
        .lines()
        .find(|l| {
            l.starts_with(
                "ssi_webhook_admission_reviews_total{kind=\"Deployment\",verdict=\"patched\"}",
            )
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(patched >= total, "{patched} counted, {total} answered");
}

#[tokio::test]
async fn sigterm_fails_readiness_first_then_drains_and_exits_cleanly() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = generate(&dir.path().join("out"));
    let volume = dir.path().join("tls");
    swap_in(&volume, "..first", &cert, &key);
    let mut webhook = start(&volume, &["--shutdown-delay=1500ms"]).await;

    let pid = nix::unistd::Pid::from_raw(webhook.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _) = get_text(format!("{}/readyz", webhook.admin)).await;
    assert_eq!(status, 503, "not ready as soon as the signal arrives");
    let response = client_trusting(&ca, true)
        .post(&webhook.url)
        .body(FIXTURE)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        200,
        "reviews are still answered during the delay"
    );

    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = webhook.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "did not exit after the delay");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}");
}

#[test]
fn start_up_errors_say_what_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let output = command(&dir.path().join("missing"), &["--admin-addr=127.0.0.1:0"])
        .arg("--listen-addr=127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--tls-cert") && stderr.contains("missing/tls.crt"),
        "{stderr}"
    );

    let output = command(dir.path(), &["--subpath-policy=allow"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("[possible values: deny, warn]"), "{stderr}");
}
