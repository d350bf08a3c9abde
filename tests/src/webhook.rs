//! The real `ssi-webhook` binary on loopback, registered with the bed's kube-apiserver through
//! the shipped MutatingWebhookConfiguration and a CA made by the users' generator.

use crate::csi::workspace_binary;
use crate::process::{Process, free_port};
use crate::{TestBed, run, workspace_path};
use anyhow::{Context, bail};
use base64::Engine;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// The allocator's setting the chart's webhook Deployment gives `ssi-webhook`
/// (charts/secrets-store-integration/templates/webhook.yaml): freed memory goes back to the
/// system at once. Whatever runs the webhook here, or stands beside it in a benchmark, runs with
/// it too.
pub const CHART_ALLOCATOR_ENV: (&str, &str) = ("MIMALLOC_PURGE_DELAY", "0");

/// A running `ssi-webhook`; dropping it kills the process.
#[derive(Debug)]
pub struct Webhook {
    process: Process,
    /// `https://127.0.0.1:<port>/mutate`
    pub url: String,
    /// `http://127.0.0.1:<port>` of /healthz, /readyz and /metrics.
    pub admin: String,
    /// `certs/generate.sh`'s output: ca.crt, tls.crt, tls.key, secret.yaml.
    pub certs: PathBuf,
}

impl Webhook {
    /// Generates certificates (SAN 127.0.0.1 added), starts the binary with the bed's kubeconfig
    /// and `extra_args`, and waits until it is ready.
    pub async fn start(bed: &TestBed, extra_args: &[&str]) -> crate::Result<Webhook> {
        Webhook::start_binary(bed, workspace_binary("ssi-webhook")?, extra_args).await
    }

    /// [`Webhook::start`] with the binary the image ships, for memory figures of what users run.
    pub async fn start_shipped(bed: &TestBed, extra_args: &[&str]) -> crate::Result<Webhook> {
        Webhook::start_binary(bed, crate::csi::shipped_binary("ssi-webhook")?, extra_args).await
    }

    async fn start_binary(
        bed: &TestBed,
        binary: PathBuf,
        extra_args: &[&str],
    ) -> crate::Result<Webhook> {
        let certs = bed.dir().join("webhook-certs");
        run(Command::new(workspace_path("certs/generate.sh"))
            .args(["--ip", "127.0.0.1", "--out"])
            .arg(&certs))?;
        let (port, admin_port) = (free_port()?, free_port()?);
        let mut command = Command::new(binary);
        command
            .env("KUBECONFIG", &bed.kube().kubeconfig)
            .env("RUST_LOG", "info,ssi_webhook=debug")
            .env(CHART_ALLOCATOR_ENV.0, CHART_ALLOCATOR_ENV.1)
            .arg(format!("--tls-cert={}", certs.join("tls.crt").display()))
            .arg(format!("--tls-key={}", certs.join("tls.key").display()))
            .arg(format!("--listen-addr=127.0.0.1:{port}"))
            .arg(format!("--admin-addr=127.0.0.1:{admin_port}"))
            .arg("--shutdown-delay=0s")
            .args(extra_args);
        let mut process =
            Process::spawn("ssi-webhook", command, &bed.dir().join("ssi-webhook.log"))?;
        let admin = format!("http://127.0.0.1:{admin_port}");
        let readyz = format!("{admin}/readyz");
        crate::wait::process_ready(&mut process, Duration::from_secs(20), || async {
            reqwest::get(&readyz).await.is_ok_and(|r| r.status() == 200)
        })
        .await?;
        Ok(Webhook {
            process,
            url: format!("https://127.0.0.1:{port}/mutate"),
            admin,
            certs,
        })
    }

    /// The webhook's process id (for RSS readings and signals).
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// An HTTPS client that trusts the webhook's CA, as the apiserver does.
    fn client(&self) -> crate::Result<reqwest::Client> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ca = std::fs::read(self.certs.join("ca.crt"))?;
        Ok(reqwest::Client::builder()
            .tls_certs_only(reqwest::Certificate::from_pem_bundle(&ca)?)
            .timeout(Duration::from_secs(15))
            .build()?)
    }

    /// Sends an AdmissionReview straight to the webhook, as the apiserver would, and returns the
    /// review it answers.
    pub async fn review(&self, review: &serde_json::Value) -> crate::Result<serde_json::Value> {
        let client = self.client()?;
        let response = client.post(&self.url).json(review).send().await?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            bail!("the webhook answered HTTP {status}: {text}");
        }
        Ok(serde_json::from_str(&text)?)
    }

    /// POSTs `body` as it is to `path` (`/enforce`, `/inject`, `/mutate`): the HTTP status and
    /// the answer's text.
    pub async fn post(&self, path: &str, body: Vec<u8>) -> crate::Result<(u16, String)> {
        let client = self.client()?;
        let url = format!("{}{path}", self.url.trim_end_matches("/mutate"));
        let response = client
            .post(url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        Ok((response.status().as_u16(), response.text().await?))
    }

    /// A TLS connection to the webhook from `source` (another loopback address than the
    /// apiserver's 127.0.0.1, as a pod's would be), handshake done.
    pub async fn connect_from(
        &self,
        source: std::net::IpAddr,
    ) -> crate::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        use rustls_pki_types::pem::PemObject;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut roots = rustls::RootCertStore::empty();
        let ca = std::fs::read(self.certs.join("ca.crt"))?;
        for certificate in rustls_pki_types::CertificateDer::pem_slice_iter(&ca) {
            roots.add(certificate?)?;
        }
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let port: u16 = self
            .url
            .rsplit(':')
            .next()
            .and_then(|rest| rest.split('/').next())
            .context("the webhook's port")?
            .parse()?;
        let socket = tokio::net::TcpSocket::new_v4()?;
        // A client that reads slowly or not at all: what it is sent stays with the webhook
        // rather than in this socket's buffer.
        socket.set_recv_buffer_size(4096)?;
        socket.bind(std::net::SocketAddr::new(source, 0))?;
        let tcp = socket
            .connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
            .await?;
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
        let name = rustls_pki_types::ServerName::try_from("127.0.0.1")?.to_owned();
        Ok(connector.connect(name, tcp).await?)
    }

    /// The last 200 lines of the webhook's log, for failure messages.
    pub fn log(&self) -> String {
        self.process.log_tail(200)
    }

    /// Applies the chart's MutatingWebhookConfiguration as it renders it, except that the
    /// apiserver calls this process by URL (a Service needs a cluster network) with the
    /// generated CA as caBundle; waits until the apiserver sends reviews here.
    pub async fn register(&self, bed: &TestBed) -> crate::Result<()> {
        let rendered = crate::chart::render(
            &bed.dir().join("helm"),
            &["store.address=https://vault.example.com:8200"],
        )?;
        let objects = crate::chart::objects(&rendered)?;
        let mut config = crate::chart::find(&objects, "MutatingWebhookConfiguration")?.clone();
        let ca = std::fs::read(self.certs.join("ca.crt"))?;
        let webhooks = config["webhooks"]
            .as_array_mut()
            .context("the chart's configuration has no webhooks")?;
        // Each webhook keeps its own endpoint (its service path), on this process.
        let base = self.url.trim_end_matches("/mutate");
        for webhook in webhooks {
            let path = webhook["clientConfig"]["service"]["path"]
                .as_str()
                .context("a webhook without a service path")?
                .to_owned();
            webhook["clientConfig"] = serde_json::json!({
                "url": format!("{base}{path}"),
                "caBundle": base64::engine::general_purpose::STANDARD.encode(&ca),
            });
        }
        bed.apply_yaml(&config.to_string())?;
        // NB: the apiserver picks configurations up from its informer, not at once.
        let probe = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"webhook-probe","namespace":"default"},
            "spec":{"containers":[{"name":"c","image":"x","volumeMounts":[{"name":"s","mountPath":"/s","subPath":"f"}]}],
            "volumes":[{"name":"s","csi":{"driver":"secrets-store.csi.deckhouse.io","volumeAttributes":{"secretsStoreImport":"probe"}}}]}}"#;
        let path = bed.dir().join("webhook-probe.json");
        std::fs::write(&path, probe)?;
        crate::wait::until(
            Duration::from_secs(10),
            "the apiserver to call the webhook",
            || {
                let output = bed
                    .kubectl()
                    .args(["create", "--dry-run=server", "-f"])
                    .arg(&path)
                    .output()
                    .map_err(|e| e.to_string())?;
                let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
                crate::wait::check(stderr.contains("subPath"), || {
                    format!("{stderr}\n{}", self.log())
                })
            },
        )
        .await
    }
}

/// A bed without OpenBao holding what the webhook looks at: the CRD, the guide's namespace,
/// ServiceAccount and SecretsStoreImport.
pub async fn bed_with_the_guides_ssi() -> crate::Result<TestBed> {
    let bed = TestBed::builder().without_openbao().start().await?;
    bed.install_crd()?;
    run(bed.kubectl().args(["create", "namespace", "my-namespace1"]))?;
    for file in ["backend-sa.yaml", "python-backend-ssi.yaml"] {
        run(bed
            .kubectl()
            .args(["apply", "-f"])
            .arg(workspace_path(&format!("tests/fixtures/guide/{file}"))))?;
    }
    Ok(bed)
}
