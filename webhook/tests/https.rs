//! The real router over real TLS on loopback: a review round trip, and a certificate swapped the
//! way kubelet swaps a Secret volume, picked up without a restart.

// Tests fail by panicking, helpers included.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use ssi_webhook::mutate::SubpathPolicy;
use ssi_webhook::router::{AppState, SsiChecker, router};
use ssi_webhook::server::serve_https;
use ssi_webhook::tls::CertStore;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn openssl(dir: &Path, args: &[&str]) {
    let output = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs (tests/bed/provision.sh installs it)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A CA of its own and a serving pair for 127.0.0.1 signed by it: (ca, cert, key).
fn make_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "1",
    ];
    let (ca, ca_key) = (format!("{name}-ca.crt"), format!("{name}-ca.key"));
    let mut args = vec![
        "req",
        "-x509",
        "-subj",
        "/CN=test-ca",
        "-keyout",
        &ca_key,
        "-out",
        &ca,
    ];
    args.extend(ec);
    args.extend([
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ]);
    openssl(dir, &args);
    let (cert, key) = (format!("{name}.crt"), format!("{name}.key"));
    let mut args = vec![
        "req",
        "-x509",
        "-subj",
        "/CN=webhook",
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-keyout",
        &key,
        "-out",
        &cert,
    ];
    args.extend(ec);
    args.extend([
        "-addext",
        "basicConstraints=critical,CA:FALSE",
        "-addext",
        "extendedKeyUsage=serverAuth",
        "-addext",
        "subjectAltName=IP:127.0.0.1",
    ]);
    openssl(dir, &args);
    (dir.join(ca), dir.join(cert), dir.join(key))
}

fn swap_in(volume: &Path, generation: &str, cert: &Path, key: &Path) {
    let dir = volume.join(generation);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(cert, dir.join("tls.crt")).unwrap();
    std::fs::copy(key, dir.join("tls.key")).unwrap();
    let tmp = volume.join("..data_tmp");
    std::os::unix::fs::symlink(generation, &tmp).unwrap();
    std::fs::rename(&tmp, volume.join("..data")).unwrap();
    for file in ["tls.crt", "tls.key"] {
        if std::fs::symlink_metadata(volume.join(file)).is_err() {
            std::os::unix::fs::symlink(format!("..data/{file}"), volume.join(file)).unwrap();
        }
    }
}

fn client_trusting(ca: &Path) -> reqwest::Client {
    let pem = std::fs::read(ca).unwrap();
    reqwest::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(&pem).unwrap())
        .build()
        .unwrap()
}

#[tokio::test]
async fn reviews_over_tls_and_a_swapped_certificate_is_served_without_restart() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let (ca_a, cert_a, key_a) = make_pair(dir.path(), "a");
    let (ca_b, cert_b, key_b) = make_pair(dir.path(), "b");
    let volume = dir.path().join("tls");
    swap_in(&volume, "..gen1", &cert_a, &key_a);
    let certs = CertStore::load(&volume.join("tls.crt"), &volume.join("tls.key")).unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "https://127.0.0.1:{}/mutate",
        listener.local_addr().unwrap().port()
    );
    let state = Arc::new(AppState {
        policy: SubpathPolicy::Deny,
        ssis: SsiChecker::disabled(),
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_https(listener, router(state), certs.clone(), async {
        let _ = stopped.await;
    }));

    let fixture = include_str!("fixtures/deployment-create.json");
    let response = client_trusting(&ca_a)
        .post(&url)
        .body(fixture)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let review: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        review["response"]["uid"],
        "0c9f5a3e-7d1b-4e55-9a43-6f2c8e1d0a01"
    );

    swap_in(&volume, "..gen2", &cert_b, &key_b);
    assert!(certs.reload().unwrap());
    let response = client_trusting(&ca_b)
        .post(&url)
        .body(fixture)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        200,
        "new connections get the new certificate"
    );
    assert!(
        client_trusting(&ca_a)
            .post(&url)
            .body(fixture)
            .send()
            .await
            .is_err(),
        "the old one is gone"
    );

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
