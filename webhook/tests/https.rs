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

/// The HTTPS server with `certs` (and, optionally, required client certificates) on a free
/// loopback port: its /mutate URL, the stop switch, the server task.
async fn start(
    certs: &Arc<CertStore>,
    client_roots: Option<Arc<rustls::RootCertStore>>,
) -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), rustls::Error>>,
) {
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
    let server = tokio::spawn(serve_https(
        listener,
        router(state),
        certs.clone(),
        client_roots,
        async {
            let _ = stopped.await;
        },
    ));
    (url, stop, server)
}

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

    let (url, stop, server) = start(&certs, None).await;

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

/// With a client CA, only a client with a certificate of that CA (the apiserver, configured by an
/// AdmissionConfiguration) gets a review answered; anyone else fails the handshake.
#[tokio::test]
async fn with_a_client_ca_only_certified_clients_are_served() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = generate(&dir.path().join("serving"));
    // A client certificate signed by the generator's CA, as an apiserver's would be.
    let client_dir = dir.path().join("client");
    std::fs::create_dir_all(&client_dir).unwrap();
    let openssl = |args: &[&str]| {
        let output = std::process::Command::new("openssl")
            .args(args)
            .current_dir(&client_dir)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    openssl(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        "client.key",
    ]);
    openssl(&[
        "req",
        "-new",
        "-key",
        "client.key",
        "-subj",
        "/CN=kube-apiserver",
        "-out",
        "client.csr",
    ]);
    std::fs::write(client_dir.join("ext.cnf"), "extendedKeyUsage=clientAuth\n").unwrap();
    let ca_key = ca.with_file_name("ca.key");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "client.csr",
        "-CA",
        ca.to_str().unwrap(),
        "-CAkey",
        ca_key.to_str().unwrap(),
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "ext.cnf",
        "-out",
        "client.crt",
    ]);
    let volume = dir.path().join("volume");
    swap_in(&volume, "..gen1", &cert, &key);
    let certs = CertStore::load(&volume.join("tls.crt"), &volume.join("tls.key")).unwrap();
    let roots = ssi_webhook::tls::client_roots(&ca).unwrap();
    let (url, stop, server) = start(&certs, Some(roots)).await;
    let fixture = include_str!("fixtures/deployment-create.json");

    let anonymous = client_trusting(&ca, true)
        .post(&url)
        .body(fixture)
        .send()
        .await;
    assert!(
        anonymous.is_err(),
        "a client without a certificate is refused"
    );

    let mut identity = std::fs::read(client_dir.join("client.crt")).unwrap();
    identity.extend(std::fs::read(client_dir.join("client.key")).unwrap());
    let certified = reqwest::Client::builder()
        .tls_certs_only(
            reqwest::Certificate::from_pem_bundle(&std::fs::read(&ca).unwrap()).unwrap(),
        )
        .identity(reqwest::Identity::from_pem(&identity).unwrap())
        .build()
        .unwrap();
    let response = certified.post(&url).body(fixture).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let review: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        review["response"]["uid"],
        "0c9f5a3e-7d1b-4e55-9a43-6f2c8e1d0a01"
    );

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

/// Sends one review on `tls` as HTTP/1.1 with keep-alive and returns the status line and body.
async fn review_on(
    tls: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    body: &str,
) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = format!(
        "POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let read = tls.read(&mut chunk).await.unwrap();
        assert!(read > 0, "the server closed the connection");
        received.extend_from_slice(&chunk[..read]);
        let text = String::from_utf8_lossy(&received).into_owned();
        let Some((head, rest)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        let length: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length: ")
                    .map(str::to_owned)
            })
            .unwrap()
            .parse()
            .unwrap();
        if rest.len() >= length {
            return (head.lines().next().unwrap().to_owned(), rest.to_owned());
        }
    }
}

/// The apiserver keeps idle connections to a webhook for 90 s and sends the next review on one
/// of them; had the server closed it meanwhile, that review would fail with EOF. So a connection
/// idle for longer than the handshake timeout still serves the next review.
#[tokio::test]
async fn an_idle_keep_alive_connection_serves_the_next_review() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = generate(dir.path());
    let certs = CertStore::load(&cert, &key).unwrap();
    let (url, stop, server) = start(&certs, None).await;
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(ssi_webhook::tls::client_roots(&ca).unwrap())
        .with_no_client_auth();
    let addr = url
        .trim_start_matches("https://")
        .trim_end_matches("/mutate")
        .to_owned();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            rustls::pki_types::ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()),
            tcp,
        )
        .await
        .unwrap();
    let fixture = include_str!("fixtures/deployment-create.json");
    for idle in [0, 15] {
        tokio::time::sleep(std::time::Duration::from_secs(idle)).await;
        let (status, body) = review_on(&mut tls, fixture).await;
        assert_eq!(status, "HTTP/1.1 200 OK", "after {idle} s idle");
        assert!(
            body.contains("0c9f5a3e-7d1b-4e55-9a43-6f2c8e1d0a01"),
            "after {idle} s idle: {body}"
        );
    }
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
