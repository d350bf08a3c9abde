//! Ours against the Go peers, in one run, on the same bed, doing the same work (issue 19):
//! - webhook: the same env-injected Pod, each with its own annotations and reference syntax, as
//!   an AdmissionReview over HTTPS (wrk -t2 -c32, keep-alive) to ssi-webhook's `/inject` and to
//!   bank-vaults' vault-secrets-webhook `/pods`, beside a no-op rustls handler; RSS under load;
//! - injector: ssi-injector, bank-vaults' vault-env and bank-vaults' secret-init resolving the
//!   same three references over two paths (one Kubernetes login each) on the bed's OpenBao
//!   before exec'ing `/bin/true`; binary size; RSS of each one's stay-resident mode;
//! - CSI: ours only (the peer pair cannot be built here): the publish latency of the real
//!   kubelet's calls for the guide's Deployment on the bed's node, and the requests of one
//!   rotation cycle as the apiserver's and the store's audit logs count them;
//! - sync (issue 32): ours beside HashiCorp's Vault Secrets Operator, which keeps the value in a
//!   Secret the pods mount: pod start, rotation to each pod's file, idle requests and RSS, on a
//!   node whose kubelet runs at its default sync period.
//!
//! `bench/compare` builds the peers from their Go modules (bench/peers/) and runs this; by hand:
//! `cargo build --release --workspace --bins && scripts/build-injector &&
//! target/release/peer_bench [seconds per load run] [runs per injector figure] [pods] [peers dir]`
//! (defaults 10, 30, 40, $SSI_TESTBED_CACHE/peers as bench/peers/build writes it). A peer whose binary is missing is reported
//! as not built; the figures go to stdout as a Markdown table for docs/benchmarks.md.
//! `target/release/peer_bench csi [pods]` runs the CSI part alone,
//! `target/release/peer_bench sync [pods] [peers dir]` the sync part.

use anyhow::{Context, bail};
use serde_json::{Value, json};
use ssi_tests::audit::{api_request, store_request, tally};
use ssi_tests::chart::apply_csidriver;
use ssi_tests::csi::{CsiDriver, DriverOptions};
use ssi_tests::images::busybox_image;
use ssi_tests::load::{Load, percentile, post_script, wrk};
use ssi_tests::node::Node;
use ssi_tests::process::{Process, cache_dir, free_port};
use ssi_tests::walkthrough::{self, AUTH_PATHS, Narrator, PASSWORD, ROLE, VaultSetup};
use ssi_tests::webhook::{Webhook, bed_with_the_guides_ssi};
use ssi_tests::{TestBed, run, status_kib, wait, workspace_path};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One row of the printed table.
struct Row {
    what: String,
    ours: String,
    peer: String,
    peer_name: &'static str,
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    // The CSI part alone, for a driver change: `peer_bench csi [pods]`.
    if args.get(1).map(String::as_str) == Some("csi") {
        let pods: usize = args.get(2).map_or(Ok(40), |s| s.parse())?;
        let rows = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(csi_driver(pods))?;
        print_rows(rows);
        return Ok(());
    }
    // The sync alternative alone: `peer_bench sync [pods] [peers dir]`.
    if args.get(1).map(String::as_str) == Some("sync") {
        let pods: usize = args.get(2).map_or(Ok(40), |s| s.parse())?;
        let peers = args
            .get(3)
            .map_or_else(|| cache_dir().join("peers"), PathBuf::from);
        let rows = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(sync_comparison(&peers, pods))?;
        print_rows(rows);
        return Ok(());
    }
    let seconds: u64 = args.get(1).map_or(Ok(10), |s| s.parse())?;
    let runs: usize = args.get(2).map_or(Ok(30), |s| s.parse())?;
    let pods: usize = args.get(3).map_or(Ok(40), |s| s.parse())?;
    let peers = args
        .get(4)
        .map_or_else(|| cache_dir().join("peers"), PathBuf::from);
    let rows = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let mut rows = webhooks(&peers, seconds).await?;
            rows.extend(injectors(&peers, runs).await?);
            rows.extend(csi_driver(pods).await?);
            rows.extend(sync_comparison(&peers, pods).await?);
            anyhow::Ok(rows)
        })?;
    print_rows(rows);
    Ok(())
}

/// The rows as the Markdown table docs/benchmarks.md records.
fn print_rows(rows: Vec<Row>) {
    println!("\n| figure | ours | peer | peer figure |\n| --- | --- | --- | --- |");
    for row in rows {
        println!(
            "| {} | {} | {} | {} |",
            row.what, row.ours, row.peer_name, row.peer
        );
    }
}

/// The peer's binary, or `None` (reported as not built) when bench/peers/build did not make it.
fn peer_binary(peers: &Path, name: &str) -> Option<PathBuf> {
    let path = peers.join(name);
    path.is_file().then_some(path)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn load_text(load: &Load) -> String {
    format!(
        "{:.0}/s (p50 {:.2} ms, p99 {:.2} ms)",
        load.per_second, load.p50_ms, load.p99_ms
    )
}

/// An AdmissionReview v1 of a Pod CREATE in the guide's namespace, with the fields the
/// apiserver always sends (kubewebhook, under bank-vaults, needs `requestKind`).
fn pod_review(annotations: Value, env: Value) -> String {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "0b6c5b8e-4a44-4d4e-9a3c-2f1f0e6f4a11",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "my-namespace1",
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "generateName": "backend-5d8f7c9b6-",
                    "namespace": "my-namespace1",
                    "labels": {"app": "backend", "pod-template-hash": "5d8f7c9b6"},
                    "annotations": annotations,
                },
                "spec": {
                    "serviceAccountName": "backend-sa",
                    "containers": [{
                        "name": "backend",
                        "image": "registry.example.com/backend:1.4.2",
                        // An explicit command: neither webhook needs the registry.
                        "command": ["python3", "-m", "app"],
                        "env": env,
                        "resources": {"limits": {"memory": "128Mi"}},
                    }],
                },
            },
            "oldObject": null,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    })
    .to_string()
}

/// POSTs `body` once and insists on an allowed answer with a patch: the load that follows must
/// measure the injection, not a refusal or a pass-through.
async fn expect_patched(client: &reqwest::Client, url: &str, body: &str) -> anyhow::Result<()> {
    let answer: Value = client
        .post(url)
        .header("Content-Type", "application/json")
        .body(body.to_owned())
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let response = &answer["response"];
    if response["allowed"] != json!(true) || !response["patch"].is_string() {
        bail!("{url} did not inject the pod: {response}");
    }
    Ok(())
}

async fn webhooks(peers: &Path, seconds: u64) -> anyhow::Result<Vec<Row>> {
    let bed = bed_with_the_guides_ssi().await?;
    let ours = Webhook::start(&bed, &[]).await?;
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ours.certs.join("ca.crt"))?)?;
    let client = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()?;
    let (cert, key) = (ours.certs.join("tls.crt"), ours.certs.join("tls.key"));

    let env = |reference: &str| json!([{"name": "DB_PASSWORD", "value": reference}]);
    let our_review = pod_review(
        json!({
            "secrets-store.deckhouse.io/role": ROLE,
            "secrets-store.deckhouse.io/addr": "https://vault.example.com:8200",
            "secrets-store.deckhouse.io/auth-path": AUTH_PATHS[0],
        }),
        env("secrets-store:secret/data/database-for-python-app#password"),
    );
    let their_review = pod_review(
        json!({
            "vault.security.banzaicloud.io/vault-addr": "https://vault.example.com:8200",
            "vault.security.banzaicloud.io/vault-role": ROLE,
            "vault.security.banzaicloud.io/vault-path": AUTH_PATHS[0],
        }),
        env("vault:secret/data/database-for-python-app#password"),
    );
    let our_url = ours.url.replace("/mutate", "/inject");
    expect_patched(&client, &our_url, &our_review).await?;
    let our_script = post_script(bed.dir(), "ours", &our_review)?;

    // The no-op handler: webhook_bench's, the same rustls + hyper stack and certificate.
    let noop_port = free_port()?;
    let noop_url = format!("https://127.0.0.1:{noop_port}/mutate");
    let noop = Process::spawn(
        "noop",
        {
            let mut command =
                Command::new(std::env::current_exe()?.with_file_name("webhook_bench"));
            command
                .arg("noop")
                .arg(&cert)
                .arg(&key)
                .arg(format!("127.0.0.1:{noop_port}"));
            command
        },
        &bed.dir().join("noop.log"),
    )?;

    let peer = match peer_binary(peers, "vault-secrets-webhook") {
        Some(binary) => {
            let port = free_port()?;
            let mut command = Command::new(binary);
            command
                .env("KUBECONFIG", &bed.kube().kubeconfig)
                .env("KUBERNETES_NAMESPACE", "default")
                .env("LISTEN_ADDRESS", format!("127.0.0.1:{port}"))
                .env(
                    "TELEMETRY_LISTEN_ADDRESS",
                    format!("127.0.0.1:{}", free_port()?),
                )
                .env("TLS_CERT_FILE", &cert)
                .env("TLS_PRIVATE_KEY_FILE", &key);
            let process = Process::spawn(
                "vault-secrets-webhook",
                command,
                &bed.dir().join("vault-secrets-webhook.log"),
            )?;
            let url = format!("https://127.0.0.1:{port}/pods");
            let healthz = format!("https://127.0.0.1:{port}/healthz");
            let started = Instant::now();
            while !client
                .get(&healthz)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
            {
                if started.elapsed() > Duration::from_secs(20) {
                    bail!(
                        "vault-secrets-webhook is not ready:\n{}",
                        process.log_tail(20)
                    );
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            expect_patched(&client, &url, &their_review).await?;
            Some((
                process,
                url,
                post_script(bed.dir(), "theirs", &their_review)?,
            ))
        }
        None => None,
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Warm all up, then measure one after the other in the same run.
    wrk(&our_script, &noop_url, 2)?;
    wrk(&our_script, &our_url, 2)?;
    if let Some((_, url, script)) = &peer {
        wrk(script, url, 2)?;
    }
    let baseline = wrk(&our_script, &noop_url, seconds)?;
    let our_load = wrk(&our_script, &our_url, seconds)?;
    // Each webhook answers HTTP 200 whatever it decides: still injecting after the load.
    expect_patched(&client, &our_url, &our_review).await?;
    let our_rss = (
        status_kib(ours.pid(), "VmRSS:"),
        status_kib(ours.pid(), "VmHWM:"),
    );
    drop(noop);
    let peer_name = "bank-vaults vault-secrets-webhook";
    let mut rows = vec![Row {
        what: format!("webhook: no-op rustls handler, same run (wrk -t2 -c32, {seconds} s)"),
        ours: load_text(&baseline),
        peer: String::new(),
        peer_name: "",
    }];
    match &peer {
        Some((process, url, script)) => {
            let their_load = wrk(script, url, seconds)?;
            expect_patched(&client, url, &their_review).await?;
            let their_rss = (
                status_kib(process.pid(), "VmRSS:"),
                status_kib(process.pid(), "VmHWM:"),
            );
            rows.push(Row {
                what: "webhook: reviews/s of an env-injected Pod".into(),
                ours: format!(
                    "{} = {:.0}% of no-op",
                    load_text(&our_load),
                    100.0 * our_load.per_second / baseline.per_second
                ),
                peer: format!(
                    "{} = {:.0}% of no-op",
                    load_text(&their_load),
                    100.0 * their_load.per_second / baseline.per_second
                ),
                peer_name,
            });
            rows.push(Row {
                what: "webhook: RSS after the load (peak)".into(),
                ours: format!("{} ({})", mib(our_rss.0), mib(our_rss.1)),
                peer: format!("{} ({})", mib(their_rss.0), mib(their_rss.1)),
                peer_name,
            });
        }
        None => rows.push(Row {
            what: "webhook: reviews/s of an env-injected Pod".into(),
            ours: load_text(&our_load),
            peer: "not built (bench/peers/build)".into(),
            peer_name,
        }),
    }
    Ok(rows)
}

/// How to run one injector: its binary and the environment that points it at the bed.
struct Injector {
    binary: PathBuf,
    env: Vec<(String, String)>,
    /// The env-var reference syntax: `{path}#{key}` becomes the value.
    prefix: &'static str,
    /// The variable that keeps it resident with the app as its child.
    resident: (&'static str, &'static str),
}

impl Injector {
    fn command(&self, references: bool, argv: &[&str]) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .args(argv)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if references {
            for (name, reference) in [
                (
                    "DB_PASSWORD",
                    "secret/data/database-for-python-app#password",
                ),
                ("API_KEY", "secret/data/bench-other#api_key"),
                ("API_USER", "secret/data/bench-other#user"),
            ] {
                command.env(name, format!("{}{reference}", self.prefix));
            }
        }
        command
    }

    /// Wall times of `runs` runs of `/bin/true` (checked to have run, and with references to
    /// have seen the right password first).
    fn wall_times(&self, references: bool, runs: usize) -> anyhow::Result<Vec<Duration>> {
        if references {
            let check = self
                .command(
                    true,
                    &["/bin/sh", "-c", "[ \"$DB_PASSWORD\" = \"$EXPECTED\" ]"],
                )
                .env("EXPECTED", PASSWORD)
                .output()?;
            if !check.status.success() {
                bail!(
                    "{} did not hand the app the password: {}",
                    self.binary.display(),
                    String::from_utf8_lossy(&check.stderr)
                );
            }
        }
        let mut samples = Vec::with_capacity(runs);
        for _ in 0..runs {
            let started = Instant::now();
            let output = self.command(references, &["/bin/true"]).output()?;
            samples.push(started.elapsed());
            if !output.status.success() {
                bail!(
                    "{} failed: {}",
                    self.binary.display(),
                    String::from_utf8_lossy(&output.stderr)
                );
            }
        }
        Ok(samples)
    }

    /// RSS of the injector itself after 15 s resident beside `sleep`.
    async fn resident_rss(&self) -> anyhow::Result<(u64, u64)> {
        let mut child = self
            .command(true, &["/bin/sleep", "60"])
            .env(self.resident.0, self.resident.1)
            .stderr(Stdio::null())
            .spawn()
            .context("start resident")?;
        tokio::time::sleep(Duration::from_secs(15)).await;
        let pid = child.id();
        // An injector that ignored its resident setting has exec'ed `sleep` under this pid:
        // its figure would be sleep's.
        let running = std::fs::read_link(format!("/proc/{pid}/exe"));
        let rss = (status_kib(pid, "VmRSS:"), status_kib(pid, "VmHWM:"));
        let _ = child.kill();
        let _ = child.wait();
        if running? != std::fs::canonicalize(&self.binary)? || rss.0 == 0 {
            bail!("{} did not stay resident", self.binary.display());
        }
        Ok(rss)
    }
}

fn millis_p50_p90(samples: &mut [Duration], minus: Duration) -> String {
    let (p50, p90) = (percentile(samples, 0.5), percentile(samples, 0.9));
    format!(
        "p50 {:.1} ms, p90 {:.1} ms",
        p50.saturating_sub(minus).as_secs_f64() * 1e3,
        p90.saturating_sub(minus).as_secs_f64() * 1e3
    )
}

async fn injectors(peers: &Path, runs: usize) -> anyhow::Result<Vec<Row>> {
    let (bed, token) = walkthrough::injector_bench_bed().await?;
    let address = bed.openbao().addr.replace("127.0.0.1", "localhost");
    let text = |path: &Path| path.display().to_string();
    let ours = Injector {
        binary: workspace_path("target/x86_64-unknown-linux-gnu/injector/ssi-injector"),
        env: vec![
            ("SSI_INJECTOR_ADDR".into(), address.clone()),
            ("SSI_INJECTOR_AUTH_PATH".into(), AUTH_PATHS[0].into()),
            ("SSI_INJECTOR_ROLE".into(), ROLE.into()),
            ("SSI_INJECTOR_TOKEN_PATH".into(), text(&token)),
        ],
        prefix: "secrets-store:",
        resident: ("SSI_INJECTOR_MODE", "watch-for-data"),
    };
    if !ours.binary.is_file() {
        bail!(
            "{} is missing: run scripts/build-injector first",
            ours.binary.display()
        );
    }
    // Both bank-vaults injectors: a JWT login at the guide's auth path, no token file.
    let bank_vaults_env = vec![
        ("VAULT_ADDR".to_owned(), address.clone()),
        ("VAULT_ROLE".into(), ROLE.into()),
        ("VAULT_PATH".into(), AUTH_PATHS[0].into()),
        ("VAULT_AUTH_METHOD".into(), "jwt".into()),
        ("KUBERNETES_SERVICE_ACCOUNT_TOKEN".into(), text(&token)),
        ("HOME".into(), text(bed.dir())),
    ];
    // Both take the same settings and reference syntax; each has its own resident switch.
    let peers_found = [
        ("bank-vaults vault-env", "vault-env", "VAULT_ENV_DAEMON"),
        (
            "bank-vaults secret-init",
            "secret-init",
            "SECRET_INIT_DAEMON",
        ),
    ]
    .map(|(peer_name, file, daemon)| {
        let peer = peer_binary(peers, file).map(|binary| Injector {
            binary,
            env: bank_vaults_env.clone(),
            prefix: "vault:",
            resident: (daemon, "true"),
        });
        (peer_name, peer)
    });

    let direct = {
        let mut samples = Vec::new();
        for _ in 0..runs {
            let started = Instant::now();
            Command::new("/bin/true").status()?;
            samples.push(started.elapsed());
        }
        percentile(&mut samples, 0.5)
    };
    // Warm the page cache and the store once for each.
    ours.wall_times(true, 3)?;
    let mut our_bare = ours.wall_times(false, runs)?;
    let mut our_full = ours.wall_times(true, runs)?;
    let our_resident = ours.resident_rss().await?;
    let our_size = std::fs::metadata(&ours.binary)?.len();

    let mut rows = Vec::new();
    for (peer_name, peer) in peers_found {
        let Some(peer) = peer else {
            rows.push(Row {
                what: "injector".into(),
                ours: String::new(),
                peer: "not built (bench/peers/build)".into(),
                peer_name,
            });
            continue;
        };
        peer.wall_times(true, 3)?;
        let mut bare = peer.wall_times(false, runs)?;
        let mut full = peer.wall_times(true, runs)?;
        let resident = peer.resident_rss().await?;
        let size = std::fs::metadata(&peer.binary)?.len();
        rows.push(Row {
            what: "injector: binary (stripped)".into(),
            ours: format!("{:.1} MiB", our_size as f64 / 1048576.0),
            peer: format!("{:.1} MiB", size as f64 / 1048576.0),
            peer_name,
        });
        rows.push(Row {
            what: "injector: start to exec, no reference (minus /bin/true alone)".into(),
            ours: millis_p50_p90(&mut our_bare, direct),
            peer: millis_p50_p90(&mut bare, direct),
            peer_name,
        });
        rows.push(Row {
            what: "injector: start to exec, 3 references over 2 paths, 1 login (same)".into(),
            ours: millis_p50_p90(&mut our_full, direct),
            peer: millis_p50_p90(&mut full, direct),
            peer_name,
        });
        rows.push(Row {
            what: format!(
                "injector: RSS resident beside the app after 15 s, peak (ours {}={}, theirs {}={})",
                ours.resident.0, ours.resident.1, peer.resident.0, peer.resident.1
            ),
            ours: format!("{} ({})", mib(our_resident.0), mib(our_resident.1)),
            peer: format!("{} ({})", mib(resident.0), mib(resident.1)),
            peer_name,
        });
    }
    Ok(rows)
}

/// The `elapsed_ms` of every `published` line of the driver's log.
fn publish_latencies(log: &Path) -> anyhow::Result<Vec<Duration>> {
    let text = std::fs::read_to_string(log)?;
    text.lines()
        .filter(|line| line.contains(" published "))
        .filter_map(|line| line.split_once("elapsed_ms=").map(|(_, rest)| rest))
        .map(|rest| {
            let number = rest.split_whitespace().next().unwrap_or_default();
            Ok(Duration::from_secs_f64(number.parse::<f64>()? / 1e3))
        })
        .collect()
}

/// Our CSI driver under the real kubelet: `pods` replicas of the guide's Deployment (one
/// ServiceAccount) on the bed's node, publish latency as the driver measures each of kubelet's
/// calls, then one rotation cycle counted from the apiserver's and the store's audit logs. The
/// peer pair (Secrets Store CSI driver + vault-csi-provider) cannot be built here (README).
async fn csi_driver(pods: usize) -> anyhow::Result<Vec<Row>> {
    let bed = TestBed::builder().audit_log().start().await?;
    walkthrough::run(&bed, VaultSetup::Cli, &mut Narrator::quiet()).await?;
    let node = Node::start(&bed).await?;
    node.load_image(&busybox_image(&bed.dir().join("images"))?)?;
    apply_csidriver(&bed)?;
    let driver = CsiDriver::start(
        &bed,
        DriverOptions {
            kubelet_root: Some(node.kubelet_root.clone()),
            rotation_interval: "20s".into(),
            ..DriverOptions::default()
        },
    )
    .await?;
    driver.registered_by_kubelet(&bed).await?;

    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "backend", "namespace": walkthrough::NAMESPACE},
        "spec": {"replicas": pods, "selector": {"matchLabels": {"app": "backend"}},
            "template": {"metadata": {"labels": {"app": "backend"}},
                "spec": {"serviceAccountName": walkthrough::SERVICE_ACCOUNT,
                    "automountServiceAccountToken": false,
                    "terminationGracePeriodSeconds": 0,
                    "containers": [{"name": "backend", "image": "ssi-testbed/busybox:1",
                        "imagePullPolicy": "Never", "command": ["sleep", "3600"],
                        "volumeMounts": [{"name": "secrets", "mountPath": "/mnt/secrets", "readOnly": true}]}],
                    // Read-only, as the webhook (not started here) would make it.
                    "volumes": [{"name": "secrets", "csi": {"driver": ssi_core::DRIVER_NAME, "readOnly": true,
                        "volumeAttributes": {"secretsStoreImport": "python-backend"}}}]}}}});
    let (store_log, api_log) = bed.audit_logs()?;
    let agent = "ssi-csi/";
    let (_, store_mark) = tally(&store_log, 0, store_request(str::to_owned))?;
    let (_, api_mark) = tally(&api_log, 0, api_request(agent))?;
    let manifest = bed.dir().join("backend.json");
    std::fs::write(&manifest, deployment.to_string())?;
    run(bed.kubectl().args(["apply", "-f"]).arg(&manifest))?;
    let log = driver.log_path();
    wait::until(
        Duration::from_secs(600),
        "kubelet to publish every pod's volume",
        || {
            let published = publish_latencies(&log).map(|l| l.len()).unwrap_or(0);
            wait::check(published >= pods, || {
                format!("{published} of {pods} published:\n{}", driver.log())
            })
        },
    )
    .await?;
    let mut latencies = publish_latencies(&log)?;
    let rss = driver.pid().map(|pid| status_kib(pid, "VmRSS:"));
    let (store_at_publish, _) = tally(&store_log, store_mark, store_request(str::to_owned))?;
    let (api_at_publish, _) = tally(&api_log, api_mark, api_request(agent))?;

    // One whole rotation cycle between two cycle ends, counted by the store and the apiserver.
    let cycles = "ssi_csi_rotation_cycle_seconds_count";
    let cycle_end = |after: f64| {
        let driver = &driver;
        async move {
            for _ in 0..600 {
                let count = driver.metric(cycles).await?;
                if count > after {
                    return anyhow::Ok(count);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            bail!("no rotation cycle ended within a minute")
        }
    };
    let first = cycle_end(driver.metric(cycles).await?).await?;
    let (_, store_mark) = tally(&store_log, 0, store_request(str::to_owned))?;
    let (_, api_mark) = tally(&api_log, 0, api_request(agent))?;
    cycle_end(first).await?;
    let (store_calls, _) = tally(&store_log, store_mark, store_request(str::to_owned))?;
    let (api_calls, _) = tally(&api_log, api_mark, api_request(agent))?;
    let listed = |counts: &std::collections::BTreeMap<String, u64>| {
        let total: u64 = counts.values().sum();
        let each: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
        format!("{total} ({})", each.join(", "))
    };

    node.delete_deployment(
        &bed,
        "backend",
        walkthrough::NAMESPACE,
        Duration::from_secs(120),
        || driver.log(),
    )
    .await?;
    drop(driver);
    node.stop()?;

    let peer_name = "Secrets Store CSI driver + vault-csi-provider";
    let peer = "not built here (README)".to_owned();
    Ok(vec![
        Row {
            what: format!(
                "CSI: publish latency of kubelet's calls, {pods} pods of the guide's Deployment (one ServiceAccount), inside the driver"
            ),
            ours: format!(
                "p50 {:.1} ms, p99 {:.1} ms",
                percentile(&mut latencies, 0.5).as_secs_f64() * 1e3,
                percentile(&mut latencies, 0.99).as_secs_f64() * 1e3
            ),
            peer: peer.clone(),
            peer_name,
        },
        Row {
            what: format!(
                "CSI: requests for the {pods} publishes, from the apiserver's and the store's audit logs"
            ),
            ours: format!(
                "API {}; store {}",
                listed(&api_at_publish),
                listed(&store_at_publish)
            ),
            peer: peer.clone(),
            peer_name,
        },
        Row {
            what: format!("CSI: driver RSS with {pods} mounts"),
            ours: rss.map_or_else(|| "unknown".to_owned(), mib),
            peer: peer.clone(),
            peer_name,
        },
        Row {
            what: format!(
                "CSI: API requests per rotation cycle at {pods} mounts, from the apiserver's audit log (User-Agent {agent})"
            ),
            ours: listed(&api_calls),
            peer: peer.clone(),
            peer_name,
        },
        Row {
            what: format!(
                "CSI: store requests per rotation cycle at {pods} mounts, from the store's audit log"
            ),
            ours: listed(&store_calls),
            peer,
            peer_name,
        },
    ])
}

/// What the sync comparison reads of one way of getting the secret into the pods.
struct SyncRun {
    /// Per pod, from the Deployment's apply to the pod's Ready.
    start: Vec<Duration>,
    /// Per pod and rotation, from `kv put` to the new value in the pod's file.
    propagation: Vec<Duration>,
    /// API requests of the component over the idle minutes, by verb and resource.
    api_idle: std::collections::BTreeMap<String, u64>,
    /// Store requests over the same minutes, by path.
    store_idle: std::collections::BTreeMap<String, u64>,
    /// RSS of the component's process after the rotations, KiB.
    rss_kib: u64,
}

/// The rotations each way is timed over.
const ROTATIONS: usize = 6;
/// The refresh interval both are set to: ours' rotation interval, the operator's refreshAfter.
const SYNC_INTERVAL: &str = "20s";
const SYNC_INTERVAL_SECONDS: f64 = 20.0;
/// The idle window whose requests are counted (and reported per minute).
const IDLE_MINUTES: u64 = 3;

/// The guide's Deployment, `pods` replicas of busybox, with `volume` (or none) at /mnt/secrets.
fn sync_deployment(name: &str, pods: usize, volume: Option<Value>) -> Value {
    let mounts = volume.as_ref().map_or_else(Vec::new, |_| {
        vec![json!({"name": "secrets", "mountPath": "/mnt/secrets", "readOnly": true})]
    });
    let volumes: Vec<Value> = volume.into_iter().collect();
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": walkthrough::NAMESPACE},
        "spec": {"replicas": pods, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"serviceAccountName": walkthrough::SERVICE_ACCOUNT,
                    "automountServiceAccountToken": false,
                    "terminationGracePeriodSeconds": 0,
                    "containers": [{"name": "app", "image": "ssi-testbed/busybox:1",
                        "imagePullPolicy": "Never", "command": ["sleep", "3600"],
                        "readinessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 1},
                        "volumeMounts": mounts}],
                    "volumes": volumes}}}})
}

/// Applies `deployment` and polls its pods until `pods` are Ready: per pod, the time from the
/// apply to when it was first seen Ready (polled every 50 ms). Returns the pods' uids too.
async fn start_times(
    bed: &ssi_tests::TestBed,
    deployment: &Value,
    pods: usize,
) -> anyhow::Result<(Vec<Duration>, Vec<String>)> {
    use k8s_openapi::api::core::v1::Pod;
    let name = deployment["metadata"]["name"].as_str().unwrap_or_default();
    let api: kube::Api<Pod> =
        kube::Api::namespaced(bed.kube_client().await?, walkthrough::NAMESPACE);
    let manifest = bed.dir().join(format!("{name}.json"));
    std::fs::write(&manifest, deployment.to_string())?;
    let applied = Instant::now();
    run(bed.kubectl().args(["apply", "-f"]).arg(&manifest))?;
    let mut ready: std::collections::BTreeMap<String, Duration> = Default::default();
    let selector = kube::api::ListParams::default().labels(&format!("app={name}"));
    while ready.len() < pods {
        if applied.elapsed() > Duration::from_secs(600) {
            bail!(
                "{} of {pods} pods of {name} Ready after 10 minutes",
                ready.len()
            );
        }
        for pod in api.list(&selector).await? {
            let is_ready = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            if let (true, Some(uid)) = (is_ready, pod.metadata.uid) {
                ready.entry(uid).or_insert_with(|| applied.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let uids = ready.keys().cloned().collect();
    Ok((ready.into_values().collect(), uids))
}

/// Writes a new password `ROTATIONS` times; each time, per pod, the time until the file at
/// `file` (below the pod's directory in the node's kubelet root) holds it, read every 50 ms.
async fn propagation_times(
    bed: &ssi_tests::TestBed,
    node: &Node,
    uids: &[String],
    file: &str,
    round_name: &str,
) -> anyhow::Result<Vec<Duration>> {
    let mut times = Vec::new();
    for round in 0..ROTATIONS {
        // A round starts just after a refresh delivered the last value: writing at once would
        // always meet a whole interval. Each write waits a different share of the interval, so
        // that the writes sample every phase of it, as users' writes do.
        let phase = (round as f64 + 0.5) / ROTATIONS as f64;
        tokio::time::sleep(Duration::from_secs_f64(phase * SYNC_INTERVAL_SECONDS)).await;
        let value = format!("{round_name}-{round}-{}", std::process::id());
        let paths: Vec<PathBuf> = uids
            .iter()
            .map(|uid| node.host_view(&node.kubelet_root.join("pods").join(uid).join(file)))
            .collect::<Result<_, _>>()?;
        let put = Instant::now();
        run(bed.bao()?.args([
            "kv",
            "put",
            "secret/database-for-python-app",
            &format!("password={value}"),
        ]))?;
        let mut pending: Vec<&PathBuf> = paths.iter().collect();
        while !pending.is_empty() {
            if put.elapsed() > Duration::from_secs(180) {
                bail!(
                    "{} of {} pods without the new value 3 minutes after kv put",
                    pending.len(),
                    uids.len()
                );
            }
            pending.retain(|path| {
                let arrived = std::fs::read_to_string(path).is_ok_and(|text| text.trim() == value);
                if arrived {
                    times.push(put.elapsed());
                }
                !arrived
            });
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(times)
}

/// The component's requests over [`IDLE_MINUTES`] idle minutes, from the two audit logs.
async fn idle_minute(
    bed: &ssi_tests::TestBed,
    agent: &str,
) -> anyhow::Result<(
    std::collections::BTreeMap<String, u64>,
    std::collections::BTreeMap<String, u64>,
)> {
    let (store_log, api_log) = bed.audit_logs()?;
    let (_, store_mark) = tally(&store_log, 0, store_request(str::to_owned))?;
    let (_, api_mark) = tally(&api_log, 0, api_request(agent))?;
    tokio::time::sleep(Duration::from_secs(60 * IDLE_MINUTES)).await;
    let (store, _) = tally(&store_log, store_mark, store_request(str::to_owned))?;
    let (api, _) = tally(&api_log, api_mark, api_request(agent))?;
    Ok((api, store))
}

/// Ours beside HashiCorp's Vault Secrets Operator (the "sync" alternative: the store's value
/// kept in a Kubernetes Secret that pods mount as a secret volume), on one bed and node, the
/// same pods, the same 20 s refresh, and pods without any secret volume as the floor.
async fn sync_comparison(peers: &Path, pods: usize) -> anyhow::Result<Vec<Row>> {
    let peer_name = "Vault Secrets Operator v0.10.0 (Secret + secret volume)";
    let Some(operator) = peer_binary(peers, "vault-secrets-operator") else {
        return Ok(vec![Row {
            what: "sync: the Vault Secrets Operator".into(),
            ours: "-".into(),
            peer: "not built (bench/peers/build)".into(),
            peer_name,
        }]);
    };
    let bed = TestBed::builder().audit_log().start().await?;
    walkthrough::run(&bed, VaultSetup::Cli, &mut Narrator::quiet()).await?;
    // kubelet as users run it: the operator's value reaches a pod's secret volume at the pod's
    // next sync, so the bed's shorter one would flatter it.
    let node = Node::start_with(
        &bed,
        ssi_tests::node::NodeOptions {
            sync_frequency: Duration::from_secs(60),
            ..Default::default()
        },
    )
    .await?;
    node.load_image(&busybox_image(&bed.dir().join("images"))?)?;
    apply_csidriver(&bed)?;
    // The floor, the same pods with no secret at all, right before each: the node warms up.
    let floor = |round: usize| {
        let (bed, node) = (&bed, &node);
        async move {
            let name = format!("plain-{round}");
            let (times, _) = start_times(bed, &sync_deployment(&name, pods, None), pods).await?;
            node.delete_deployment(
                bed,
                &name,
                walkthrough::NAMESPACE,
                Duration::from_secs(120),
                String::new,
            )
            .await?;
            anyhow::Ok(times)
        }
    };
    let our_floor = floor(0).await?;

    // Ours.
    let driver = CsiDriver::start(
        &bed,
        DriverOptions {
            kubelet_root: Some(node.kubelet_root.clone()),
            rotation_interval: SYNC_INTERVAL.into(),
            ..DriverOptions::default()
        },
    )
    .await?;
    driver.registered_by_kubelet(&bed).await?;
    let csi = json!({"name": "secrets", "csi": {"driver": ssi_core::DRIVER_NAME, "readOnly": true,
        "volumeAttributes": {"secretsStoreImport": "python-backend"}}});
    let (start, uids) =
        start_times(&bed, &sync_deployment("backend", pods, Some(csi)), pods).await?;
    let propagation = propagation_times(
        &bed,
        &node,
        &uids,
        "volumes/kubernetes.io~csi/secrets/mount/db-password",
        "ours",
    )
    .await?;
    let (api_idle, store_idle) = idle_minute(&bed, "ssi-csi/").await?;
    let ours = SyncRun {
        start,
        propagation,
        api_idle,
        store_idle,
        rss_kib: driver.pid().map_or(0, |pid| status_kib(pid, "VmRSS:")),
    };
    node.delete_deployment(
        &bed,
        "backend",
        walkthrough::NAMESPACE,
        Duration::from_secs(120),
        || driver.log(),
    )
    .await?;
    drop(driver);

    // The operator, run as its docs run it in a cluster, here a process with the admin's
    // kubeconfig: leader election off (it finds no namespace for its lock outside a pod), its
    // two HTTP servers on loopback.
    let crds = peers.join("vault-secrets-operator-crds");
    run(bed.kubectl().args(["apply", "-f"]).arg(&crds))?;
    run(bed
        .kubectl()
        .args(["create", "namespace", "vault-secrets-operator"]))?;
    let mut command = Command::new(&operator);
    command
        .env("OPERATOR_NAMESPACE", "vault-secrets-operator")
        .env_remove("VAULT_TOKEN")
        .env_remove("VAULT_ADDR")
        .arg(format!("--kubeconfig={}", bed.kube().kubeconfig.display()))
        .arg("--leader-elect=false")
        .arg(format!("--metrics-bind-address=127.0.0.1:{}", free_port()?))
        .arg(format!(
            "--health-probe-bind-address=127.0.0.1:{}",
            free_port()?
        ));
    let mut process = Process::spawn(
        "vault-secrets-operator",
        command,
        &bed.dir().join("vso.log"),
    )?;
    let objects = format!(
        r#"
apiVersion: secrets.hashicorp.com/v1beta1
kind: VaultConnection
metadata: {{name: store, namespace: {namespace}}}
spec: {{address: "{address}", skipTLSVerify: false}}
---
apiVersion: secrets.hashicorp.com/v1beta1
kind: VaultAuth
metadata: {{name: backend, namespace: {namespace}}}
spec:
  vaultConnectionRef: store
  method: kubernetes
  mount: {mount}
  kubernetes: {{role: {role}, serviceAccount: {account}}}
---
apiVersion: secrets.hashicorp.com/v1beta1
kind: VaultStaticSecret
metadata: {{name: backend-secrets, namespace: {namespace}}}
spec:
  vaultAuthRef: backend
  type: kv-v2
  mount: secret
  path: database-for-python-app
  refreshAfter: {SYNC_INTERVAL}
  destination: {{name: backend-secrets, create: true}}
"#,
        namespace = walkthrough::NAMESPACE,
        address = bed.openbao().addr,
        mount = AUTH_PATHS[0],
        role = ROLE,
        account = walkthrough::SERVICE_ACCOUNT,
    );
    bed.apply_yaml(&objects)?;
    wait::until(
        Duration::from_secs(120),
        "the operator to create the Secret",
        || {
            if let Some(status) = process.exited() {
                return Err(format!(
                    "the operator exited ({status}):\n{}",
                    process.log_tail(40)
                ));
            }
            let got = std::process::Command::new(&bed.kube().kubectl)
                .env("KUBECONFIG", &bed.kube().kubeconfig)
                .args([
                    "-n",
                    walkthrough::NAMESPACE,
                    "get",
                    "secret",
                    "backend-secrets",
                ])
                .output();
            wait::check(got.is_ok_and(|o| o.status.success()), || {
                process.log_tail(40)
            })
        },
    )
    .await?;
    let their_floor = floor(1).await?;
    let secret = json!({"name": "secrets", "secret": {"secretName": "backend-secrets"}});
    let (start, uids) = start_times(
        &bed,
        &sync_deployment("vso-backend", pods, Some(secret)),
        pods,
    )
    .await?;
    let propagation = propagation_times(
        &bed,
        &node,
        &uids,
        "volumes/kubernetes.io~secret/secrets/password",
        "operator",
    )
    .await?;
    let (api_idle, store_idle) = idle_minute(&bed, "vault-secrets-operator/").await?;
    let theirs = SyncRun {
        start,
        propagation,
        api_idle,
        store_idle,
        rss_kib: status_kib(process.pid(), "VmRSS:"),
    };
    node.delete_deployment(
        &bed,
        "vso-backend",
        walkthrough::NAMESPACE,
        Duration::from_secs(120),
        String::new,
    )
    .await?;
    drop(process);
    node.stop()?;
    Ok(sync_rows(
        pods,
        [our_floor, their_floor],
        ours,
        theirs,
        peer_name,
    ))
}

fn sync_rows(
    pods: usize,
    mut floors: [Vec<Duration>; 2],
    mut ours: SyncRun,
    mut theirs: SyncRun,
    peer_name: &'static str,
) -> Vec<Row> {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let spread = |samples: &mut Vec<Duration>| {
        format!(
            "p50 {:.0} ms, p99 {:.0} ms",
            ms(percentile(samples, 0.5)),
            ms(percentile(samples, 0.99))
        )
    };
    let in_seconds = |samples: &mut Vec<Duration>| {
        format!(
            "p50 {:.1} s, p99 {:.1} s",
            percentile(samples, 0.5).as_secs_f64(),
            percentile(samples, 0.99).as_secs_f64()
        )
    };
    let [our_floor, their_floor] = floors.each_mut().map(spread);
    let listed = |counts: &std::collections::BTreeMap<String, u64>| {
        let total: u64 = counts.values().sum();
        let each: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
        format!("{total} ({})", each.join(", "))
    };
    let row = |what: String, ours: String, peer: String| Row {
        what: format!("sync: {what}"),
        ours,
        peer,
        peer_name,
    };
    vec![
        row(
            format!(
                "pod start (apply -> Ready), {pods} pods of the guide's Deployment; in brackets the same pods without a secret, run just before"
            ),
            format!("{} ({our_floor})", spread(&mut ours.start)),
            format!("{} ({their_floor})", spread(&mut theirs.start)),
        ),
        row(
            format!(
                "rotation, `kv put` -> the new value in each pod's file, {ROTATIONS} rotations x {pods} pods, both refreshing every {SYNC_INTERVAL}, kubelet's default syncFrequency (1 minute)"
            ),
            in_seconds(&mut ours.propagation),
            in_seconds(&mut theirs.propagation),
        ),
        row(
            format!(
                "API requests in {IDLE_MINUTES} idle minutes at {pods} pods, from the apiserver's audit log"
            ),
            listed(&ours.api_idle),
            listed(&theirs.api_idle),
        ),
        row(
            format!(
                "store requests in {IDLE_MINUTES} idle minutes at {pods} pods, from the store's audit log"
            ),
            listed(&ours.store_idle),
            listed(&theirs.store_idle),
        ),
        row(
            format!(
                "RSS of the process that keeps the secret, {pods} pods (ours: the node's driver; theirs: the cluster's operator)"
            ),
            mib(ours.rss_kib),
            mib(theirs.rss_kib),
        ),
    ]
}
