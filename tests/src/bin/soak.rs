//! The soak (DESIGN.md section 6): the chart on the bed's two real nodes, a few hundred volumes
//! of the three kinds users mount (the guide's static KV, leased database users rendered into
//! a `.env`, issued certificates), faults injected on a schedule, and a reader that checks every
//! file it reads without pause. Not in CI: 30 minutes by default.
//!
//! `bench/soak [minutes] [pods]` (default 30 minutes, 60 pods of 3 volumes each).
//!
//! The reader reads each pod's volume from the host, through the node's mount namespace: the
//! same tmpfs the pod reads, the way a consistent reader does (`..data` resolved once, every
//! file of that generation), and checks what the busybox pods could not (a certificate against
//! its key with openssl, a database user by logging in to PostgreSQL). It counts:
//! - partial or inconsistent generations (must be 0): a KV value cut short or older than one
//!   read before, a `.env` that does not hold the username and password beside it, a user whose
//!   password changed or who does not log in, a certificate that does not match its key, has
//!   expired or is not issued by the CA beside it, a PEM file cut short, a generation missing a
//!   file, `..data` naming no generation, a volume not mounted outside a fault;
//! - late rotations: a KV value written to the store that had not reached a volume one
//!   rotation interval (plus the reader's round) later, outside the faults and the recovery
//!   time after each;
//! - at the end, after the pods are gone: leases left in the store and users left in
//!   PostgreSQL (must be 0);
//! - every component's RSS over time.
//!
//! Faults, one every two minutes in turn: the store unreachable (frozen) for 20 s, the store
//! restarted (killed, started again with its data on disk, sealed for 5 s, then unsealed), the
//! API server unreachable (frozen) for 20 s, the API server restarted (killed, then started
//! again as it was), a driver killed with SIGKILL while volumes rotate, the webhook's pods deleted, a node
//! rebooted (kubelet, containerd and every container killed, its tmpfs mounts gone, its disk
//! kept; then started again: `Node::reboot`). A rotation is late when a value was not on a
//! volume one interval after it was written, unless a fault (or the recovery after it) came in
//! that interval. When writes stop, the last value must reach every volume and every database
//! user on a volume must still log in.

use anyhow::Context;
use ssi_tests::bench::arg;
use ssi_tests::chart::SYSTEM_NAMESPACE;
use ssi_tests::cluster::Cluster;
use ssi_tests::postgres::Postgres;
use ssi_tests::process::{Process, freeze, restart, thaw};
use ssi_tests::walkthrough::{self, Narrator, VaultSetup};
use ssi_tests::{TestBed, engines, run, status_kib, wait};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The drivers' rotation interval.
const ROTATION: Duration = Duration::from_secs(10);
/// How often the KV value changes in the store.
const KV_WRITES: Duration = Duration::from_secs(5);
/// How often a fault comes, and how long the store or API server stays unreachable: faults are
/// far enough apart that most of the time is neither a fault nor its recovery, in which every
/// rotation must be on time.
const FAULT_EVERY: Duration = Duration::from_secs(120);
const OUTAGE: Duration = Duration::from_secs(20);
/// How long a restarted store stays sealed before it is unsealed.
const SEALED: Duration = Duration::from_secs(5);
/// After a fault, how long a late rotation is the fault's: the interval, kubelet's republish
/// (which brings a restarted driver its pods' tokens) and a retry's backoff.
const RECOVERY: Duration = Duration::from_secs(40);
/// What the reader allows beyond the interval: its round over all volumes and the write's own
/// time.
const SLACK: Duration = Duration::from_secs(5);
/// The KV value's padding: a value cut short is seen.
const PAD: usize = 4096;
/// The certificate's life: re-issued at two thirds of it, about every minute.
const CERT_TTL: &str = "90s";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Kv,
    Database,
    Certificate,
}

impl Kind {
    const ALL: [(Kind, &'static str, &'static str); 3] = [
        (Kind::Kv, "kv", "python-backend"),
        (Kind::Database, "db", "db"),
        (Kind::Certificate, "tls", "tls"),
    ];

    fn files(self) -> &'static [&'static str] {
        match self {
            Kind::Kv => &["db-password"],
            Kind::Database => &["username", "password", "app.env"],
            Kind::Certificate => &["tls.crt", "tls.key", "ca.crt"],
        }
    }
}

/// One pod's volume as the host reads it.
#[derive(Clone, Debug)]
struct Volume {
    pod: String,
    kind: Kind,
    dir: PathBuf,
}

/// What the soak saw.
#[derive(Default)]
struct Findings {
    reads: u64,
    /// Reads retried because a swap removed the generation being read (a reader's protocol).
    moved: u64,
    inconsistent: u64,
    examples: Vec<String>,
    late: u64,
    late_examples: Vec<String>,
    max_stale_outside_faults: Duration,
    max_stale: Duration,
    users: HashMap<String, String>,
    users_not_logging_in: u64,
    /// Reads by volume directory.
    reads_by_volume: HashMap<String, u64>,
    certificates_checked: u64,
    /// Each volume's last KV generation, and the last generation it was counted late for.
    kv_seen: HashMap<String, (u64, Option<u64>)>,
    /// Each certificate volume's last generation checked.
    certificate_seen: HashMap<String, PathBuf>,
}

impl Findings {
    fn inconsistent(&mut self, what: String) {
        self.inconsistent += 1;
        if self.examples.len() < 20 {
            self.examples.push(what);
        }
    }
}

/// The times of the soak's events, shared by its threads.
#[derive(Default)]
struct Timeline {
    /// When each KV generation was in the store (index = generation; 0 is the guide's value).
    puts: Vec<Instant>,
    /// Faults: what, start, end (None while it lasts).
    faults: Vec<(String, Instant, Option<Instant>)>,
}

impl Timeline {
    /// Whether a fault (or its recovery) overlaps `from..to`; one still going lasts to now.
    fn faulted(&self, from: Instant, to: Instant) -> bool {
        self.faults.iter().any(|(_, start, end)| {
            let end = end.map_or_else(Instant::now, |end| end + RECOVERY);
            *start <= to && end >= from
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let minutes: u64 = arg(1, 30)?;
    let pods: u64 = arg(2, 60)?;
    anyhow::ensure!(minutes > 0 && pods > 0, "minutes and pods must be positive");
    println!(
        "== soak: {minutes} min, {pods} pods x 3 volumes on two nodes, rotation every {} s",
        ROTATION.as_secs()
    );
    let bed = TestBed::builder().persistent_store().start().await?;
    walkthrough::run(&bed, VaultSetup::Cli, &mut Narrator::quiet()).await?;
    let postgres = Arc::new(Postgres::start(bed.dir()).await?);
    engines::database(&bed, &postgres, "2m", "10m")?;
    engines::pki(&bed)?;
    walkthrough::backend_policy(
        &bed,
        "path \"secret/data/database-for-python-app\" { capabilities = [\"read\"] }\n\
         path \"database/creds/app\" { capabilities = [\"read\"] }\n\
         path \"sys/leases/revoke/database/creds/app/*\" { capabilities = [\"update\"] }\n\
         path \"pki/issue/web\" { capabilities = [\"update\"] }\n",
    )?;
    for example in ["ssi-database.yaml", "ssi-pki.yaml"] {
        let text = std::fs::read_to_string(ssi_tests::workspace_path(&format!(
            "docs/examples/{example}"
        )))?;
        bed.apply_yaml(&text.replace("ttl: 72h", &format!("ttl: {CERT_TTL}")))?;
    }
    let mut cluster = Cluster::start(&bed).await?;
    let mut servers = Servers {
        store: bed.openbao().pid(),
        api: bed
            .process_ids()
            .into_iter()
            .find(|(name, _)| name == "kube-apiserver")
            .map(|(_, pid)| pid)
            .context("the bed's API server")?,
        restarted: Vec::new(),
    };
    let outcome = soak(&bed, &mut cluster, &mut servers, &postgres, minutes, pods).await;
    if let Err(e) = &outcome {
        eprintln!("the soak failed: {e:#}");
        ssi_tests::demo::diagnose(&bed);
    }
    drop(servers);
    cluster.stop()?;
    outcome
}

async fn soak(
    bed: &TestBed,
    cluster: &mut Cluster,
    servers: &mut Servers,
    postgres: &Arc<Postgres>,
    minutes: u64,
    pods: u64,
) -> anyhow::Result<()> {
    cluster.load_images(bed)?;
    cluster
        .install_chart(bed, &format!("{}s", ROTATION.as_secs()))
        .await?;
    let started = Instant::now();
    deploy(bed, pods)?;
    let volumes = all_mounted(bed, cluster, pods).await?;
    println!(
        "{} volumes mounted on {} pods in {:.0} s",
        volumes.len(),
        pods,
        started.elapsed().as_secs_f64()
    );

    let timeline = Arc::new(Mutex::new(Timeline {
        puts: vec![Instant::now()],
        ..Timeline::default()
    }));
    let findings = Arc::new(Mutex::new(Findings::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (timeline, findings, stop) = (timeline.clone(), findings.clone(), stop.clone());
        let volumes = volumes.clone();
        let postgres = postgres.clone();
        std::thread::spawn(move || {
            read_continuously(&volumes, &timeline, &findings, &stop, &postgres)
        })
    };
    let writer = {
        let (timeline, stop) = (timeline.clone(), stop.clone());
        let bao = bed.bao()?;
        std::thread::spawn(move || write_continuously(&bao, &timeline, &stop))
    };
    let rss = Arc::new(Mutex::new(BTreeMap::<String, Vec<(Duration, u64)>>::new()));
    let sampler = {
        let (rss, stop) = (rss.clone(), stop.clone());
        std::thread::spawn(move || sample_rss(&rss, &stop, started))
    };

    let end = Instant::now() + Duration::from_secs(minutes * 60);
    // The ones that take a node's volumes away first, so that a short soak has them too.
    let faults = [
        "node reboot",
        "driver SIGKILL",
        "API server restarted",
        "store restarted",
        "store unreachable",
        "webhook pods deleted",
        "API server unreachable",
    ];
    let mut next = 0;
    while Instant::now() + FAULT_EVERY < end {
        tokio::time::sleep(FAULT_EVERY - OUTAGE).await;
        let fault = faults[next % faults.len()];
        let index = {
            let mut timeline = timeline.lock().unwrap_or_else(|p| p.into_inner());
            timeline
                .faults
                .push((fault.to_owned(), Instant::now(), None));
            timeline.faults.len() - 1
        };
        println!(
            "[{:>5.0} s] fault: {fault}",
            started.elapsed().as_secs_f64()
        );
        inject(bed, cluster, servers, pods, fault, next / faults.len()).await?;
        timeline.lock().unwrap_or_else(|p| p.into_inner()).faults[index].2 = Some(Instant::now());
        next += 1;
    }
    tokio::time::sleep(end.saturating_duration_since(Instant::now())).await;
    stop.store(true, Ordering::Relaxed);
    for thread in [reader, writer, sampler] {
        thread
            .join()
            .map_err(|_| anyhow::anyhow!("a soak thread panicked"))?;
    }

    // Writes stopped: the last value reaches every volume within an interval, every database
    // user on a volume still logs in, and every volume was read.
    tokio::time::sleep(ROTATION + SLACK).await;
    let last = timeline
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .puts
        .len() as u64
        - 1;
    let mut final_problems = Vec::new();
    {
        let mut findings = findings.lock().unwrap_or_else(|p| p.into_inner());
        for volume in &volumes {
            let name = format!("{} {:?}", volume.pod, volume.kind);
            if !findings
                .reads_by_volume
                .contains_key(&volume.dir.display().to_string())
            {
                final_problems.push(format!("{name}: never read"));
            }
            let Read::Files(_, files) = read_generation(&volume.dir, volume.kind.files()) else {
                final_problems.push(format!("{name}: not readable at the end"));
                continue;
            };
            let texts: Vec<String> = files
                .iter()
                .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
                .collect();
            match volume.kind {
                Kind::Kv if kv_generation(&texts[0]) != Some(last) => final_problems.push(format!(
                    "{name}: generation {:?} at the end, not {last}",
                    kv_generation(&texts[0])
                )),
                Kind::Database => {
                    let logs_in = postgres
                        .sql_as(&texts[0], &texts[1], "select current_user")
                        .is_ok_and(|me| me.trim() == texts[0]);
                    if !logs_in {
                        findings.users_not_logging_in += 1;
                        final_problems.push(format!("{name}: its user does not log in at the end"));
                    }
                }
                _ => {}
            }
        }
    }
    let expected_writes = minutes * 60 / KV_WRITES.as_secs() / 2;
    if last < expected_writes {
        final_problems.push(format!(
            "only {last} KV values written, fewer than {expected_writes}"
        ));
    }

    // The pods go: every lease goes with its volume.
    run(bed.kubectl().args([
        "-n",
        walkthrough::NAMESPACE,
        "delete",
        "deployment",
        "soak",
        "--wait=true",
    ]))?;
    run(bed.kubectl().args([
        "-n",
        walkthrough::NAMESPACE,
        "wait",
        "--for=delete",
        "pod",
        "-l",
        "app=soak",
        "--timeout=300s",
    ]))?;
    let leftovers = wait::until(
        Duration::from_secs(60),
        "the store's leases and PostgreSQL's users to go with the pods",
        || {
            let leases = database_leases(bed).map_err(|e| format!("{e:#}"))?;
            let users = postgres.engine_users().map_err(|e| format!("{e:#}"))?;
            wait::check(leases.is_empty() && users.is_empty(), || {
                format!("{} leases, {} users", leases.len(), users.len())
            })?;
            Ok((leases.len(), users.len()))
        },
    )
    .await
    .unwrap_or_else(|e| {
        println!("{e:#}");
        (
            database_leases(bed).map_or(usize::MAX, |l| l.len()),
            postgres.engine_users().map_or(usize::MAX, |u| u.len()),
        )
    });

    let findings = findings.lock().unwrap_or_else(|p| p.into_inner());
    let timeline = timeline.lock().unwrap_or_else(|p| p.into_inner());
    println!("== results after {:.0} s", started.elapsed().as_secs_f64());
    println!(
        "faults injected: {} ({})",
        timeline.faults.len(),
        count_by_name(&timeline.faults)
    );
    println!(
        "reads: {} generations read ({} retried after a swap), {} partial or inconsistent",
        findings.reads, findings.moved, findings.inconsistent
    );
    for example in &findings.examples {
        println!("  inconsistent: {example}");
    }
    println!(
        "database users seen: {} ({} did not log in); certificates checked against their key: {}",
        findings.users.len(),
        findings.users_not_logging_in,
        findings.certificates_checked
    );
    println!(
        "KV values written: {}; late beyond {} s outside faults: {}; most stale outside faults {:.1} s, during faults {:.1} s",
        timeline.puts.len() - 1,
        (ROTATION + SLACK).as_secs(),
        findings.late,
        findings.max_stale_outside_faults.as_secs_f64(),
        findings.max_stale.as_secs_f64()
    );
    for example in &findings.late_examples {
        println!("  late: {example}");
    }
    println!(
        "at the end, writes stopped: {} problems with the last value, database users or reads",
        final_problems.len()
    );
    for problem in final_problems.iter().take(20) {
        println!("  {problem}");
    }
    println!(
        "left at the end: {} leases in the store, {} users in PostgreSQL",
        leftovers.0, leftovers.1
    );
    if leftovers.1 > 0 {
        // Which users, and until when their role was valid: a lease lost before it was
        // recorded ends at its TTL, one the store forgot never does.
        let users = postgres.sql(
            "select rolname, rolvaliduntil from pg_roles where rolcanlogin and rolname like 'v-%' order by 2",
        )?;
        println!("  users left (valid until):\n{users}");
        for user in users.lines().take(5) {
            let name = user.split('|').next().unwrap_or_default().trim();
            let seen = findings.users.contains_key(name);
            println!("  {name}: read from a volume: {seen}");
        }
    }
    for (component, samples) in rss.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        let peak = samples.iter().map(|s| s.1).max().unwrap_or(0);
        let first = samples.first().map_or(0, |s| s.1);
        let last = samples.last().map_or(0, |s| s.1);
        println!(
            "RSS of {component} (largest process): first {:.1} MiB, peak {:.1} MiB, last {:.1} MiB ({} samples)",
            first as f64 / 1024.0,
            peak as f64 / 1024.0,
            last as f64 / 1024.0,
            samples.len()
        );
    }
    anyhow::ensure!(
        findings.inconsistent == 0
            && findings.users_not_logging_in == 0
            && leftovers == (0, 0)
            && findings.late == 0
            && final_problems.is_empty(),
        "the soak found what must not happen (above)"
    );
    Ok(())
}

fn count_by_name(faults: &[(String, Instant, Option<Instant>)]) -> String {
    let mut counts = BTreeMap::<&str, usize>::new();
    for (name, _, _) in faults {
        *counts.entry(name).or_default() += 1;
    }
    counts
        .iter()
        .map(|(name, n)| format!("{name} x{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The soak's Deployment: `pods` busybox pods spread over both nodes, each mounting the three
/// SecretsStoreImports.
fn deploy(bed: &TestBed, pods: u64) -> anyhow::Result<()> {
    let volumes: Vec<serde_json::Value> = Kind::ALL
        .iter()
        .map(|(_, volume, ssi)| {
            serde_json::json!({"name": volume, "csi": {"driver": ssi_core::DRIVER_NAME,
                "volumeAttributes": {"secretsStoreImport": ssi}}})
        })
        .collect();
    let mounts: Vec<serde_json::Value> = Kind::ALL
        .iter()
        .map(|(_, volume, _)| serde_json::json!({"name": volume, "mountPath": format!("/mnt/{volume}")}))
        .collect();
    let deployment = serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "soak", "namespace": walkthrough::NAMESPACE},
        "spec": {"replicas": pods, "selector": {"matchLabels": {"app": "soak"}},
            "template": {"metadata": {"labels": {"app": "soak"}},
                "spec": {"serviceAccountName": walkthrough::SERVICE_ACCOUNT,
                    "automountServiceAccountToken": false,
                    "terminationGracePeriodSeconds": 1,
                    "topologySpreadConstraints": [{"maxSkew": 1,
                        "topologyKey": "kubernetes.io/hostname",
                        "whenUnsatisfiable": "DoNotSchedule",
                        "labelSelector": {"matchLabels": {"app": "soak"}}}],
                    "containers": [{"name": "app", "image": "ssi-testbed/busybox:1",
                        "imagePullPolicy": "Never",
                        "command": ["sleep", "1000000"],
                        "volumeMounts": mounts}],
                    "volumes": volumes}}}});
    let path = bed.dir().join("soak.json");
    std::fs::write(&path, deployment.to_string())?;
    run(bed.kubectl().args(["apply", "-f"]).arg(&path))?;
    Ok(())
}

/// Every running soak pod's volumes, as the host reads them.
fn pod_volumes(bed: &TestBed, cluster: &Cluster) -> anyhow::Result<Vec<Volume>> {
    let pods = run(bed.kubectl().args([
        "-n",
        walkthrough::NAMESPACE,
        "get",
        "pods",
        "-l",
        "app=soak",
        "--field-selector=status.phase=Running",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name} {.metadata.uid} {.spec.nodeName}{\"\\n\"}{end}",
    ]))?;
    let mut volumes = Vec::new();
    for line in pods.lines() {
        let [pod, uid, node]: [&str; 3] = line
            .split_whitespace()
            .collect::<Vec<_>>()
            .try_into()
            .map_err(|_| anyhow::anyhow!("unexpected pod line {line:?}"))?;
        let node = cluster.node(node)?;
        for (kind, volume, _) in Kind::ALL {
            let dir = cluster.kubelet_root().join(format!(
                "pods/{uid}/volumes/kubernetes.io~csi/{volume}/mount"
            ));
            volumes.push(Volume {
                pod: pod.to_owned(),
                kind,
                dir: node.host_view(&dir)?,
            });
        }
    }
    Ok(volumes)
}

/// One generation of a volume's files, read as a consistent reader does.
enum Read {
    /// `..data` named this directory, and these are its files.
    Files(PathBuf, Vec<Vec<u8>>),
    /// A swap removed the generation while it was read: read again.
    Moved,
    /// `..data` names a generation that is not there, and still does.
    Dangling,
    /// The generation `..data` names lacks a file.
    Missing(String),
    /// The volume is not there (its pod is gone).
    Absent,
}

fn read_generation(dir: &Path, files: &[&str]) -> Read {
    let Ok(generation) = std::fs::read_link(dir.join("..data")) else {
        return Read::Absent;
    };
    let generation = dir.join(generation);
    let mut contents = Vec::with_capacity(files.len());
    for file in files {
        match std::fs::read(generation.join(file)) {
            Ok(bytes) => contents.push(bytes),
            Err(_) if !generation.exists() => {
                let now = std::fs::read_link(dir.join("..data")).map(|g| dir.join(g));
                return match now {
                    Ok(now) if now == generation => Read::Dangling,
                    _ => Read::Moved,
                };
            }
            Err(e) => return Read::Missing(format!("{file}: {e}")),
        }
    }
    Read::Files(generation, contents)
}

fn read_continuously(
    volumes: &[Volume],
    timeline: &Mutex<Timeline>,
    findings: &Mutex<Findings>,
    stop: &AtomicBool,
    postgres: &Postgres,
) {
    while !stop.load(Ordering::Relaxed) {
        for volume in volumes {
            let read = read_generation(&volume.dir, volume.kind.files());
            let mut findings = findings.lock().unwrap_or_else(|p| p.into_inner());
            let (generation, files) = match read {
                Read::Files(generation, files) => (generation, files),
                Read::Moved => {
                    findings.moved += 1;
                    continue;
                }
                Read::Dangling => {
                    findings.inconsistent(format!(
                        "{} {:?}: ..data names a generation that is not there",
                        volume.pod, volume.kind
                    ));
                    continue;
                }
                Read::Missing(what) => {
                    findings.inconsistent(format!(
                        "{} {:?}: a generation without {what}",
                        volume.pod, volume.kind
                    ));
                    continue;
                }
                Read::Absent => {
                    let now = Instant::now();
                    let faulted = timeline
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .faulted(now, now);
                    if !faulted {
                        findings.inconsistent(format!(
                            "{} {:?}: the volume is not mounted outside a fault",
                            volume.pod, volume.kind
                        ));
                    }
                    continue;
                }
            };
            findings.reads += 1;
            *findings
                .reads_by_volume
                .entry(volume.dir.display().to_string())
                .or_default() += 1;
            let texts: Vec<String> = files
                .iter()
                .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
                .collect();
            match volume.kind {
                Kind::Kv => check_kv(volume, &texts[0], timeline, &mut findings),
                Kind::Database => check_database(volume, &texts, postgres, &mut findings),
                Kind::Certificate => check_certificate(volume, &generation, &texts, &mut findings),
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The KV generation `value` holds: `gen-<n>-` and [`PAD`] x's, or the guide's password (0).
fn kv_generation(value: &str) -> Option<u64> {
    if value == walkthrough::PASSWORD {
        return Some(0);
    }
    let rest = value.strip_prefix("gen-")?;
    let (number, pad) = rest.split_once('-')?;
    (pad.len() == PAD && pad.bytes().all(|b| b == b'x'))
        .then(|| number.parse().ok())
        .flatten()
}

fn kv_value(generation: u64) -> String {
    format!("gen-{generation}-{}", "x".repeat(PAD))
}

fn check_kv(volume: &Volume, value: &str, timeline: &Mutex<Timeline>, findings: &mut Findings) {
    let Some(generation) = kv_generation(value) else {
        findings.inconsistent(format!(
            "{} KV: a value of {} bytes that is no whole generation",
            volume.pod,
            value.len()
        ));
        return;
    };
    let now = Instant::now();
    let key = volume.dir.display().to_string();
    let seen = findings.kv_seen.entry(key).or_insert((generation, None));
    if generation < seen.0 {
        let before = seen.0;
        findings.inconsistent(format!(
            "{} KV: generation {generation} after {before}",
            volume.pod
        ));
        return;
    }
    seen.0 = generation;
    let timeline = timeline.lock().unwrap_or_else(|p| p.into_inner());
    // How long a newer value has been in the store without reaching this volume.
    let Some(newer) = timeline.puts.get(generation as usize + 1).copied() else {
        return;
    };
    let stale = now.saturating_duration_since(newer);
    findings.max_stale = findings.max_stale.max(stale);
    // Excused only when a fault came while the value was due: its write and one interval.
    if timeline.faulted(newer, newer + ROTATION + SLACK) {
        return;
    }
    findings.max_stale_outside_faults = findings.max_stale_outside_faults.max(stale);
    let seen = findings
        .kv_seen
        .get_mut(&volume.dir.display().to_string())
        .map(|seen| &mut seen.1);
    if stale > ROTATION + SLACK
        && let Some(counted) = seen
        && *counted != Some(generation)
    {
        *counted = Some(generation);
        findings.late += 1;
        if findings.late_examples.len() < 20 {
            findings.late_examples.push(format!(
                "{}: generation {} not there {:.1} s after it was written",
                volume.pod,
                generation + 1,
                stale.as_secs_f64()
            ));
        }
    }
}

fn check_database(volume: &Volume, texts: &[String], postgres: &Postgres, findings: &mut Findings) {
    let [user, password, env] = texts else {
        return;
    };
    if *env != format!("DATABASE_URL=postgres://{user}:{password}@db:5432/app\n") {
        findings.inconsistent(format!(
            "{} database: app.env does not hold the username and password beside it",
            volume.pod
        ));
        return;
    }
    match findings.users.get(user) {
        Some(known) if known == password => {}
        Some(_) => findings.inconsistent(format!(
            "{} database: user {user} with another password",
            volume.pod
        )),
        None => {
            let logs_in = postgres
                .sql_as(user, password, "select current_user")
                .is_ok_and(|me| me.trim() == user);
            if !logs_in {
                findings.users_not_logging_in += 1;
                findings.inconsistent(format!(
                    "{} database: user {user} did not log in when first read",
                    volume.pod
                ));
            }
            findings.users.insert(user.clone(), password.clone());
        }
    }
}

fn check_certificate(
    volume: &Volume,
    generation: &Path,
    texts: &[String],
    findings: &mut Findings,
) {
    for (name, text) in ["tls.crt", "tls.key", "ca.crt"].iter().zip(texts) {
        if !text.trim_end().ends_with("-----") || !text.starts_with("-----BEGIN ") {
            findings.inconsistent(format!(
                "{} certificate: {name} is no whole PEM",
                volume.pod
            ));
            return;
        }
    }
    let key = volume.dir.display().to_string();
    if findings.certificate_seen.get(&key).map(PathBuf::as_path) == Some(generation) {
        return;
    }
    findings.certificate_seen.insert(key, generation.to_owned());
    findings.certificates_checked += 1;
    let from_certificate = openssl(&["x509", "-noout", "-pubkey"], &texts[0]);
    let from_key = openssl(&["pkey", "-pubout"], &texts[1]);
    if from_certificate.is_none() || from_certificate != from_key {
        findings.inconsistent(format!(
            "{} certificate: tls.crt does not match tls.key",
            volume.pod
        ));
    }
    if openssl(&["x509", "-noout", "-checkend", "0"], &texts[0]).is_none() {
        findings.inconsistent(format!("{} certificate: tls.crt has expired", volume.pod));
    }
    let ca = std::env::temp_dir().join(format!("ssi-soak-{}-ca.pem", std::process::id()));
    let verified = std::fs::write(&ca, &texts[2]).is_ok()
        && openssl(&["verify", "-CAfile", &ca.display().to_string()], &texts[0]).is_some();
    let _ = std::fs::remove_file(&ca);
    if !verified {
        findings.inconsistent(format!(
            "{} certificate: tls.crt is not issued by ca.crt",
            volume.pod
        ));
    }
}

/// openssl's output for `input` on its standard input, or None when it fails.
fn openssl(args: &[&str], input: &str) -> Option<String> {
    use std::io::Write;
    let mut child = std::process::Command::new("openssl")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    child.stdin.take()?.write_all(input.as_bytes()).ok()?;
    let output = child.wait_with_output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Writes a new KV generation every [`KV_WRITES`] with the store's CLI (`bao`: its program
/// and environment) and notes when the store had it.
fn write_continuously(bao: &std::process::Command, timeline: &Mutex<Timeline>, stop: &AtomicBool) {
    let mut generation = 1;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(KV_WRITES);
        let mut put = std::process::Command::new(bao.get_program());
        put.args(bao.get_args())
            .args(["kv", "put", "secret/database-for-python-app"])
            .arg(format!("password={}", kv_value(generation)));
        for (name, value) in bao.get_envs() {
            match value {
                Some(value) => put.env(name, value),
                None => put.env_remove(name),
            };
        }
        if run(&mut put).is_ok() {
            timeline
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .puts
                .push(Instant::now());
            generation += 1;
        }
    }
}

/// Every 15 s, the largest RSS among the processes of each component (by command name).
fn sample_rss(
    rss: &Mutex<BTreeMap<String, Vec<(Duration, u64)>>>,
    stop: &AtomicBool,
    started: Instant,
) {
    const COMPONENTS: [&str; 4] = ["ssi-csi", "ssi-webhook", "kube-apiserver", "bao"];
    // NB: the command name is at most 15 bytes: "kube-apiserver" fits.
    while !stop.load(Ordering::Relaxed) {
        let mut largest = BTreeMap::<&str, u64>::new();
        for (pid, name) in processes() {
            if let Some(component) = COMPONENTS.iter().find(|c| **c == name) {
                let kib = status_kib(pid, "VmRSS:");
                let entry = largest.entry(component).or_default();
                *entry = (*entry).max(kib);
            }
        }
        let mut rss = rss.lock().unwrap_or_else(|p| p.into_inner());
        for (component, kib) in largest {
            rss.entry(component.to_owned())
                .or_default()
                .push((started.elapsed(), kib));
        }
        drop(rss);
        std::thread::sleep(Duration::from_secs(15));
    }
}

/// The drivers on the cluster's nodes (in their cgroups), by pid.
fn drivers(cluster: &Cluster) -> Vec<u32> {
    let roots: Vec<String> = cluster
        .nodes
        .iter()
        .map(|node| format!("{}/", node.cgroup_root()))
        .collect();
    processes()
        .into_iter()
        .filter(|(pid, name)| {
            name == "ssi-csi"
                && std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
                    .is_ok_and(|cgroups| roots.iter().any(|root| cgroups.contains(root)))
        })
        .map(|(pid, _)| pid)
        .collect()
}

/// Every process on the machine: its pid and command name.
fn processes() -> Vec<(u32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let name = std::fs::read_to_string(entry.path().join("comm")).ok()?;
            Some((pid, name.trim().to_owned()))
        })
        .collect()
}

/// The database leases the store holds.
fn database_leases(bed: &TestBed) -> anyhow::Result<Vec<String>> {
    let out = bed
        .bao()?
        .args([
            "list",
            "-format=json",
            "sys/leases/lookup/database/creds/app/",
        ])
        .output()?;
    match out.status.code() {
        Some(0) => serde_json::from_slice(&out.stdout).context("the store's lease list"),
        // The CLI's "No value found": nothing listed there.
        Some(2) => Ok(Vec::new()),
        _ => anyhow::bail!(
            "listing the store's leases failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// Waits until every soak pod runs with its three volumes mounted, and returns them.
async fn all_mounted(bed: &TestBed, cluster: &Cluster, pods: u64) -> anyhow::Result<Vec<Volume>> {
    wait::until(
        Duration::from_secs(600),
        "every soak pod running with its three volumes",
        || {
            let volumes = pod_volumes(bed, cluster).map_err(|e| format!("{e:#}"))?;
            let ready = volumes
                .iter()
                .filter(|v| v.dir.join("..data").exists())
                .count();
            wait::check(ready as u64 == pods * 3, || {
                format!("{ready} of {} volumes", pods * 3)
            })?;
            Ok(volumes)
        },
    )
    .await
}

/// Injects `fault` (the `round`-th of its kind) and returns once it is over.
async fn inject(
    bed: &TestBed,
    cluster: &mut Cluster,
    servers: &mut Servers,
    pods: u64,
    fault: &str,
    round: usize,
) -> anyhow::Result<()> {
    match fault {
        "store unreachable" => frozen(servers.store).await,
        "store restarted" => {
            // Killed, started again with its data, and sealed until its operator unseals it a
            // few seconds later.
            let log = bed.dir().join(format!("openbao-{round}.log"));
            let process = restart(servers.store, "openbao", &log)?;
            servers.store = process.pid();
            servers.restarted.push(process);
            tokio::time::sleep(SEALED).await;
            bed.openbao().unseal().await?;
            Ok(())
        }
        "API server unreachable" => frozen(servers.api).await,
        "API server restarted" => {
            let log = bed.dir().join(format!("kube-apiserver-{round}.log"));
            let process = restart(servers.api, "kube-apiserver", &log)?;
            servers.api = process.pid();
            servers.restarted.push(process);
            wait::until(Duration::from_secs(120), "the API server back", || {
                let ready = bed
                    .kubectl()
                    .args(["get", "--raw", "/readyz"])
                    .output()
                    .is_ok_and(|o| o.status.success());
                wait::check(ready, String::new)
            })
            .await?;
            Ok(())
        }
        "driver SIGKILL" => {
            let running = drivers(cluster);
            let victim = *running
                .get(round % running.len().max(1))
                .context("no driver process to kill")?;
            run(std::process::Command::new("kill").args(["-KILL", &victim.to_string()]))?;
            // Back when kubelet has restarted it: two drivers again.
            wait::until(Duration::from_secs(120), "the killed driver back", || {
                let running = drivers(cluster)
                    .iter()
                    .filter(|pid| **pid != victim)
                    .count();
                wait::check(running == 2, || format!("{running} drivers"))
            })
            .await?;
            Ok(())
        }
        "webhook pods deleted" => {
            run(bed.kubectl().args([
                "-n",
                SYSTEM_NAMESPACE,
                "delete",
                "pods",
                "-l",
                "app.kubernetes.io/name=ssi-webhook",
                "--wait=false",
            ]))?;
            ssi_tests::chart::webhook_rolled_out(bed)?;
            Ok(())
        }
        "node reboot" => {
            let count = cluster.nodes.len();
            let node = &mut cluster.nodes[round % count];
            println!("  rebooting {}", node.name());
            node.reboot().await?;
            all_mounted(bed, cluster, pods).await?;
            Ok(())
        }
        other => anyhow::bail!("no such fault {other}"),
    }
}

/// Keeps process `pid` frozen for [`OUTAGE`].
/// The bed's servers the soak freezes and restarts, by their current pids, and those it
/// restarted, which it stops when dropped (the bed stops those it started).
struct Servers {
    store: u32,
    api: u32,
    restarted: Vec<Process>,
}

async fn frozen(pid: u32) -> anyhow::Result<()> {
    freeze(pid)?;
    tokio::time::sleep(OUTAGE).await;
    thaw(pid)?;
    Ok(())
}
