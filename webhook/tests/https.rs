//! The real router over real TLS on loopback: a review round trip, and a certificate swapped the
//! way kubelet swaps a Secret volume, picked up without a restart.

// Tests fail by panicking, helpers included.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::{client_trusting, generate, swap_in};

use ssi_webhook::mutate::SubpathPolicy;
use ssi_webhook::router::{Admission, AppState, SsiChecker, router};
use ssi_webhook::server::serve_https;
use ssi_webhook::tls::CertStore;
use std::sync::Arc;

#[tokio::test]
async fn reviews_over_tls_and_a_swapped_certificate_is_served_without_restart() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    // Two runs into different directories: two unrelated CAs.
    let (ca_a, cert_a, key_a) = generate(&dir.path().join("a"));
    let (ca_b, cert_b, key_b) = generate(&dir.path().join("b"));
    let volume = dir.path().join("tls");
    swap_in(&volume, "..gen1", &cert_a, &key_a);
    let certs = CertStore::load(&volume.join("tls.crt"), &volume.join("tls.key")).unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "https://127.0.0.1:{}/mutate",
        listener.local_addr().unwrap().port()
    );
    let state = Arc::new(AppState {
        policy: SubpathPolicy::Deny.into(),
        ssis: SsiChecker::disabled(),
        registry: None,
        metrics: Arc::default(),
        admission: Admission::default(),
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_https(listener, router(state), certs.clone(), async {
        let _ = stopped.await;
    }));

    // A client that connects and never says a word is cut off after the handshake timeout,
    // while the server keeps answering others.
    let silent = {
        let addr = url
            .trim_start_matches("https://")
            .trim_end_matches("/mutate")
            .to_owned();
        tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let mut stream = std::net::TcpStream::connect(addr).unwrap();
            stream
                .set_read_timeout(Some(std::time::Duration::from_secs(20)))
                .unwrap();
            let started = std::time::Instant::now();
            let read = stream.read(&mut [0u8; 16]);
            (read.map_err(|e| e.kind()), started.elapsed())
        })
    };

    let fixture = include_str!("fixtures/deployment-create.json");
    let response = client_trusting(&ca_a, false)
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

    let (read, waited) = silent.await.unwrap();
    assert_eq!(read, Ok(0), "the server closed the silent connection");
    assert!(
        waited >= std::time::Duration::from_secs(9) && waited < std::time::Duration::from_secs(15),
        "closed after {waited:?}"
    );

    swap_in(&volume, "..gen2", &cert_b, &key_b);
    assert!(certs.reload().unwrap());
    let response = client_trusting(&ca_b, false)
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
        client_trusting(&ca_a, false)
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
