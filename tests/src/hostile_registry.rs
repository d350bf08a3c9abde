//! A MOCK registry, named as such: a plain-HTTP server that plays the faults a real registry
//! cannot produce on demand (redirects to loopback and metadata addresses, a token realm on
//! loopback, endless and lying bodies, an error page full of its own text). The real
//! `docker-registry` in [`crate::registry`] covers everything a registry normally does.
//!
//! Repositories (all with tag `1`):
//! - `redirect-by-name`: 307 to `https://localhost:<port>/...` (a name that resolves to loopback);
//! - `redirect-to-metadata`: 307 to `https://169.254.169.254/...`;
//! - `hostile-realm`: 401 with a Bearer realm on `https://localhost:<port>/token`;
//! - `endless-config`: a manifest whose config blob is streamed without a length, forever;
//! - `announced-huge`: a manifest announced with a 1 GiB `Content-Length`;
//! - `wrong-digest`: a config blob that does not match the manifest's digest;
//! - `talkative`: HTTP 500 with a body and a header of [`REGISTRY_TEXT`];
//! - `slow`: the request is read and never answered (the connection is held for a minute).

use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Text the mock puts in bodies and headers; no denial may contain it.
pub const REGISTRY_TEXT: &str = "REGISTRY-CONTROLLED-TEXT";

/// Bytes of the endless config the mock sends at most before giving up (64 MiB): a client
/// that read it all would show it in its peak RSS.
pub const ENDLESS_BYTES: usize = 64 << 20;

/// The running mock; dropping it stops the server.
#[derive(Debug)]
pub struct HostileRegistry {
    /// `127.0.0.1:<port>`.
    pub host: String,
    requests: Arc<Mutex<Vec<String>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for HostileRegistry {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl HostileRegistry {
    /// Serves on a free loopback port until dropped.
    pub async fn start() -> crate::Result<HostileRegistry> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(answer(stream, port, seen.clone()));
            }
        });
        Ok(HostileRegistry {
            host: format!("127.0.0.1:{port}"),
            requests,
            server,
        })
    }

    /// Request paths received so far, in order.
    pub fn requests(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    let hex: String = sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

fn manifest_naming(config_digest: &str) -> String {
    serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": 2},
        "layers": []})
    .to_string()
}

async fn answer(mut stream: TcpStream, port: u16, requests: Arc<Mutex<Vec<String>>>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.split(' ').nth(1).unwrap_or_default().to_owned();
    requests
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(path.clone());
    let config = br#"{"config":{"Entrypoint":["/bin/never"]}}"#;
    let endless_digest = sha256(b"endless");
    let reply = |status: &str, headers: &str, body: &str| {
        format!(
            "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    if path == "/v2/slow/manifests/1" {
        tokio::time::sleep(std::time::Duration::from_secs(60)).await;
        return;
    }
    let response = match path.as_str() {
        "/v2/redirect-by-name/manifests/1" => reply(
            "307 Temporary Redirect",
            &format!("Location: https://localhost:{port}/v2/followed/manifests/1\r\n"),
            "",
        ),
        "/v2/redirect-to-metadata/manifests/1" => reply(
            "307 Temporary Redirect",
            "Location: https://169.254.169.254/latest/meta-data/\r\n",
            "",
        ),
        "/v2/hostile-realm/manifests/1" => reply(
            "401 Unauthorized",
            &format!(
                "WWW-Authenticate: Bearer realm=\"https://localhost:{port}/token\",service=\"mock\"\r\n"
            ),
            "",
        ),
        "/v2/endless-config/manifests/1" => reply(
            "200 OK",
            "Content-Type: application/vnd.oci.image.manifest.v1+json\r\n",
            &manifest_naming(&endless_digest),
        ),
        p if p == format!("/v2/endless-config/blobs/{endless_digest}") => {
            let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
            if stream.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let chunk = vec![b' '; 64 * 1024];
            let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
            framed.extend_from_slice(&chunk);
            framed.extend_from_slice(b"\r\n");
            for _ in 0..ENDLESS_BYTES / chunk.len() {
                if stream.write_all(&framed).await.is_err() {
                    return;
                }
            }
            return;
        }
        "/v2/announced-huge/manifests/1" => {
            let head =
                "HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\nConnection: close\r\n\r\n{";
            let _ = stream.write_all(head.as_bytes()).await;
            return;
        }
        "/v2/wrong-digest/manifests/1" => reply(
            "200 OK",
            "Content-Type: application/vnd.oci.image.manifest.v1+json\r\n",
            &manifest_naming(&sha256(b"something else")),
        ),
        p if p == format!("/v2/wrong-digest/blobs/{}", sha256(b"something else")) => reply(
            "200 OK",
            "",
            std::str::from_utf8(config).unwrap_or_default(),
        ),
        "/v2/talkative/manifests/1" => reply(
            "500 Internal Server Error",
            &format!("X-Detail: {REGISTRY_TEXT}\r\n"),
            &format!("{{\"errors\": [{{\"message\": \"{REGISTRY_TEXT}\"}}]}}"),
        ),
        _ => reply("404 Not Found", "", ""),
    };
    let _ = stream.write_all(response.as_bytes()).await;
}
