//! The driver's rules in memory: publish, rotation, backoff, unpublish and restart against an
//! in-process store, reporter and mount table (crate::seams). The files are real files in a
//! directory of the test's own. The same behaviours against the real store, API server and
//! kernel: tests/tests/csi.rs and the walkthrough suites.

// Tests fail by panicking, helpers included.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use super::*;
use crate::fetch::Tokens;
use crate::held::{Held, Request};
use crate::metrics::Rotation;
use crate::seams::Mounts;
use crate::state::PodInfo;
use crate::writer::Files;
use secrecy::SecretString;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};

/// What the store answers: the file's bytes, or an outage.
type Answer = Result<Vec<u8>, ()>;

/// An in-process store serving one file, `password`, to every volume; it records what the
/// driver gives back.
struct FakeStore {
    answer: Mutex<Answer>,
    /// When the holdings a fetch returns end: the volume must look again before then.
    holding_until: Mutex<Option<SystemTime>>,
    fetches: AtomicUsize,
    /// `written` of every settle, in order.
    settled: Mutex<Vec<bool>>,
    /// Volume ids released.
    released: Mutex<Vec<String>>,
    memory: Arc<tokio::sync::Semaphore>,
}

impl FakeStore {
    fn new() -> Arc<FakeStore> {
        Arc::new(FakeStore {
            answer: Mutex::new(Ok(b"v1".to_vec())),
            holding_until: Mutex::new(None),
            fetches: AtomicUsize::new(0),
            settled: Mutex::default(),
            released: Mutex::default(),
            memory: Arc::new(tokio::sync::Semaphore::new(1024)),
        })
    }

    fn answer(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::Relaxed)
    }
}

impl Source for Arc<FakeStore> {
    async fn fetch(
        &self,
        record: &Record,
        _tokens: &Tokens,
        _cycle: &Cycle,
        _holdings: &Holdings,
        _previous: Option<&Path>,
        _held_by: Option<&IdentityKey>,
    ) -> Result<Fetched, Error> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let answer = self.answer.lock().unwrap().clone();
        let bytes = answer.map_err(|()| Error::Deadline {
            ssi: format!("{}/{}", record.pod.namespace, record.ssi),
            after: Duration::from_secs(5),
        })?;
        let holdings = match *self.holding_until.lock().unwrap() {
            Some(until) => {
                let request = Request::get("pki/issue/app");
                let held = Held {
                    request: request.clone(),
                    secret: None,
                    lease: None,
                    since: SystemTime::now(),
                    until: Some(until),
                    token_login: None,
                    token_until: None,
                    token_renew_at: None,
                };
                Holdings::from([(request, held)])
            }
            None => Holdings::new(),
        };
        Ok(Fetched {
            files: Files(
                BTreeMap::from([("password".to_owned(), bytes)]),
                BTreeMap::new(),
            ),
            memory: self.memory.clone().acquire_owned().await.unwrap(),
            identity: IdentityKey::made_up(&record.pod.service_account),
            holdings,
            reads: vec![Request::get("secret/data/app")],
        })
    }

    async fn settle(&self, _: &IdentityKey, _: &Holdings, _: &Holdings, written: bool) {
        self.settled.lock().unwrap().push(written);
    }

    async fn release(&self, record: &Record, _: &Tokens, _: Option<&IdentityKey>, _: &Holdings) {
        self.released.lock().unwrap().push(record.volume_id.clone());
    }

    fn retain_sessions(&self, _: &HashSet<IdentityKey>, _: bool) {}
}

/// Records what the pods are told, and keeps the SSIs' status entries as an API server would.
#[derive(Default)]
struct FakeReporter(
    Mutex<Vec<(Kind, String, String)>>,
    Mutex<BTreeMap<crate::status::SsiKey, ssi_core::NodeStatus>>,
);

impl FakeReporter {
    fn reasons(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(_, reason, _)| reason.clone())
            .collect()
    }
}

impl Reporter for Arc<FakeReporter> {
    async fn status(
        &self,
        ssi: &crate::status::SsiKey,
        entry: Option<&ssi_core::NodeStatus>,
    ) -> crate::status::Write {
        let mut entries = self.1.lock().unwrap();
        match entry {
            Some(entry) => entries.insert(ssi.clone(), entry.clone()),
            None => entries.remove(ssi),
        };
        crate::status::Write::Done {
            listed: entries.len(),
        }
    }

    async fn report(&self, _: &PodInfo, kind: Kind, reason: &str, message: &str) {
        self.0
            .lock()
            .unwrap()
            .push((kind, reason.to_owned(), message.to_owned()));
    }
}

type TestDriver = Driver<Arc<FakeStore>, Arc<FakeReporter>>;

/// A node of the test's own: kubelet's root and the driver's state in one directory.
struct Node {
    dir: tempfile::TempDir,
    store: Arc<FakeStore>,
    reporter: Arc<FakeReporter>,
}

impl Node {
    fn new() -> Node {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("kubelet/pods")).unwrap();
        Node {
            dir,
            store: FakeStore::new(),
            reporter: Arc::default(),
        }
    }

    /// A driver on this node, as started after a restart too: the same state dir.
    fn driver(&self, mounted: &[PathBuf]) -> Arc<TestDriver> {
        let root = self.dir.path().join("kubelet").canonicalize().unwrap();
        Arc::new(Driver::new(
            Settings {
                node_id: "node-1".into(),
                kubelet_root: root,
                tmpfs_size: "4m".into(),
                rotation_interval: Duration::from_secs(120),
                rotation_concurrency: 4,
                fetch_deadline: Duration::from_secs(5),
            },
            Parts {
                metrics: Arc::default(),
                source: self.store.clone(),
                reporter: self.reporter.clone(),
                records: state::Store::open(&self.dir.path().join("state")).unwrap(),
                mounts: Mounts::InMemory(Mutex::new(mounted.iter().cloned().collect())),
            },
        ))
    }

    fn request(&self, pod: &str) -> PublishRequest {
        let target = self
            .dir
            .path()
            .join("kubelet/pods")
            .canonicalize()
            .unwrap()
            .join(format!("{pod}-mount"));
        PublishRequest {
            record: Record {
                volume_id: format!("csi-{pod}"),
                target_path: target,
                pod: PodInfo {
                    namespace: "ns".into(),
                    name: pod.into(),
                    uid: format!("uid-{pod}"),
                    service_account: "sa".into(),
                },
                ssi: "app".into(),
                mount_group: None,
                held: Vec::new(),
                held_by: None,
            },
            tokens: Tokens::from([(String::new(), SecretString::from("jwt".to_owned()))]),
        }
    }
}

fn file(target: &Path) -> Vec<u8> {
    std::fs::read(target.join("password")).unwrap()
}

fn rotations(driver: &TestDriver, result: Rotation) -> u64 {
    driver
        .metrics
        .rotations
        .get_or_create(&RotationLabels { result })
        .get()
}

#[tokio::test]
async fn a_value_changed_in_the_store_is_written_and_told_once_and_the_same_value_is_not() {
    let node = Node::new();
    let driver = node.driver(&[]);
    let request = node.request("p1");
    let target = request.record.target_path.clone();
    driver.publish(request).await.unwrap();
    assert_eq!(file(&target), b"v1");
    assert!(driver.mounts.is_mounted(&target).unwrap());

    node.store.answer(Ok(b"v2".to_vec()));
    driver.rotate(true).await;
    assert_eq!(file(&target), b"v2");
    assert_eq!(node.reporter.reasons(), ["SecretRotated"]);
    assert_eq!(rotations(&driver, Rotation::Changed), 1);

    driver.rotate(true).await;
    assert_eq!(
        node.reporter.reasons(),
        ["SecretRotated"],
        "nothing new to tell"
    );
    assert_eq!(rotations(&driver, Rotation::Unchanged), 1);
    assert_eq!(*node.store.settled.lock().unwrap(), [true, true, true]);
    let volume = driver.volumes().get("csi-p1").unwrap().last_success;
    assert!(volume.is_some());
}

#[tokio::test]
async fn a_store_outage_keeps_the_old_files_backs_off_tells_the_pod_once_and_recovers() {
    let node = Node::new();
    let driver = node.driver(&[]);
    let request = node.request("p1");
    let target = request.record.target_path.clone();
    driver.publish(request).await.unwrap();

    node.store.answer(Err(()));
    driver.rotate(true).await;
    assert_eq!(file(&target), b"v1", "the old files stay");
    assert_eq!(node.reporter.reasons(), ["SecretRotationFailed"]);
    {
        let volumes = driver.volumes();
        let volume = volumes.get("csi-p1").unwrap();
        assert_eq!(volume.failures, 1);
        let error = volume.last_error.as_ref().unwrap();
        assert_eq!(error.code, "unavailable");
        assert!(error.message.contains("ns/app"), "{}", error.message);
    }
    // Backed off: retried later, not at once.
    let retry = driver.next_retry().expect("a failed volume is retried");
    assert!(retry > Instant::now(), "backoff, not a busy loop");
    let fetches = node.store.fetches();
    driver.rotate(false).await;
    assert_eq!(node.store.fetches(), fetches, "not due before its backoff");

    // The next full cycle fails again: counted, but the pod was told already.
    driver.rotate(true).await;
    assert_eq!(driver.volumes().get("csi-p1").unwrap().failures, 2);
    assert_eq!(node.reporter.reasons(), ["SecretRotationFailed"]);
    assert_eq!(rotations(&driver, Rotation::Failed), 2);

    node.store.answer(Ok(b"v2".to_vec()));
    driver.rotate(true).await;
    assert_eq!(file(&target), b"v2");
    let volumes = driver.volumes();
    let volume = volumes.get("csi-p1").unwrap();
    assert_eq!(volume.failures, 0);
    assert!(volume.last_error.is_none(), "cleared by the success");
}

#[tokio::test]
async fn a_volume_whose_tmpfs_is_gone_is_not_written_and_keeps_its_holdings() {
    let node = Node::new();
    let driver = node.driver(&[]);
    *node.store.holding_until.lock().unwrap() = Some(SystemTime::now() + Duration::from_secs(3600));
    let request = node.request("p1");
    let target = request.record.target_path.clone();
    driver.publish(request).await.unwrap();
    let held_before = driver.volumes().get("csi-p1").unwrap().holdings.clone();
    assert_eq!(held_before.len(), 1);

    // Someone unmounted it: the bytes would land on the node's disk.
    driver.mounts.unmount(&target).unwrap();
    node.store.answer(Ok(b"v2".to_vec()));
    driver.rotate(true).await;
    assert!(!target.join("password").exists(), "nothing written");
    assert_eq!(
        node.store.settled.lock().unwrap().last(),
        Some(&false),
        "what the attempt obtained is given back"
    );
    let volumes = driver.volumes();
    let volume = volumes.get("csi-p1").unwrap();
    assert_eq!(volume.holdings, held_before, "the old holdings stay");
    let error = volume.last_error.as_ref().unwrap();
    assert!(
        error.message.contains("the volume is no longer mounted"),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn a_held_secret_is_looked_at_again_before_it_ends() {
    let node = Node::new();
    let driver = node.driver(&[]);
    let ends = SystemTime::now() + Duration::from_secs(60);
    *node.store.holding_until.lock().unwrap() = Some(ends);
    driver.publish(node.request("p1")).await.unwrap();
    let due = driver.next_retry().expect("a held secret is renewed");
    let left = due.saturating_duration_since(Instant::now());
    assert!(
        left < Duration::from_secs(60),
        "due in {left:?}, before the secret ends in 60 s"
    );
}

#[tokio::test]
async fn a_publish_that_cannot_fetch_mounts_nothing_and_saves_nothing() {
    let node = Node::new();
    let driver = node.driver(&[]);
    node.store.answer(Err(()));
    let request = node.request("p1");
    let target = request.record.target_path.clone();
    let error = driver.publish(request).await.unwrap_err();
    assert!(matches!(error, Error::Deadline { .. }), "{error}");
    assert!(!target.exists(), "no directory left behind");
    assert!(driver.volumes().is_empty());
    assert!(
        node.driver(&[]).recover().unwrap() == 0,
        "no record for a restart to find"
    );
}

#[tokio::test]
async fn an_unpublished_volume_is_unmounted_forgotten_and_its_holdings_given_back() {
    let node = Node::new();
    let driver = node.driver(&[]);
    let request = node.request("p1");
    let target = request.record.target_path.clone();
    driver.publish(request).await.unwrap();
    driver.unpublish("csi-p1", &target).await.unwrap();
    assert!(!target.exists());
    assert!(!driver.mounts.is_mounted(&target).unwrap());
    assert!(driver.volumes().is_empty());
    assert_eq!(*node.store.released.lock().unwrap(), ["csi-p1"]);
    // Another target than the recorded one is refused, and changes nothing.
    driver.publish(node.request("p2")).await.unwrap();
    let error = driver
        .unpublish("csi-p2", &target)
        .await
        .expect_err("not its target");
    assert!(matches!(error, Error::InvalidRequest(_)), "{error}");
    assert_eq!(driver.volumes().len(), 1);
}

#[tokio::test]
async fn a_restarted_driver_waits_for_kubelets_token_then_rotates_at_once() {
    let node = Node::new();
    let request = node.request("p1");
    let target = request.record.target_path.clone();
    node.driver(&[]).publish(request).await.unwrap();

    // The process is gone; its records and the tmpfs stay.
    let driver = node.driver(std::slice::from_ref(&target));
    assert_eq!(driver.recover().unwrap(), 1);
    let fetches = node.store.fetches();
    driver.rotate(true).await;
    assert_eq!(node.store.fetches(), fetches, "no token: nothing asked");
    assert_eq!(rotations(&driver, Rotation::Waiting), 1);

    // Kubelet's republish brings a token; the files are there, so nothing is rewritten then,
    // and the volume is due at once rather than at the next full cycle.
    node.store.answer(Ok(b"v2".to_vec()));
    driver.publish(node.request("p1")).await.unwrap();
    assert_eq!(file(&target), b"v1");
    driver.rotate(false).await;
    assert_eq!(file(&target), b"v2");
    assert!(driver.volumes().get("csi-p1").unwrap().identity.is_some());
}

#[tokio::test]
async fn a_republish_whose_files_are_gone_writes_them_again() {
    let node = Node::new();
    let driver = node.driver(&[]);
    let request = node.request("p1");
    let target = request.record.target_path.clone();
    driver.publish(request).await.unwrap();
    let fetches = node.store.fetches();
    driver.publish(node.request("p1")).await.unwrap();
    assert_eq!(
        node.store.fetches(),
        fetches,
        "files there: nothing fetched"
    );

    // Emptied under the driver: every entry of the volume removed.
    for entry in std::fs::read_dir(&target).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() && !path.is_symlink() {
            std::fs::remove_dir_all(&path).unwrap();
        } else {
            std::fs::remove_file(&path).unwrap();
        }
    }
    driver.publish(node.request("p1")).await.unwrap();
    assert_eq!(file(&target), b"v1");
    assert!(node.store.fetches() > fetches, "fetched again");
}

#[tokio::test]
async fn a_changed_path_rotates_the_volumes_that_read_it_at_once_and_no_others() {
    let node = Node::new();
    let driver = node.driver(&[]);
    let request = node.request("p1");
    let target = request.record.target_path.clone();
    driver.publish(request).await.unwrap();
    node.store.answer(Ok(b"v2".to_vec()));

    assert_eq!(driver.stale("secret/data/other"), 0);
    driver.rotate(false).await;
    assert_eq!(file(&target), b"v1", "not due: it does not read that path");

    assert_eq!(driver.stale("secret/data/app"), 1);
    driver.rotate(false).await;
    assert_eq!(file(&target), b"v2");
    assert_eq!(node.reporter.reasons(), ["SecretRotated"]);
}

#[tokio::test]
async fn the_ssis_status_counts_this_nodes_volumes_and_pods_shows_a_failure_and_goes_with_them() {
    let node = Node::new();
    let driver = node.driver(&[]);
    let entries = || node.reporter.1.lock().unwrap().clone();
    let ssi = ("ns".to_owned(), "app".to_owned());
    let start = Instant::now();
    let (p1, p2) = (node.request("p1"), node.request("p2"));
    let targets = [p1.record.target_path.clone(), p2.record.target_path.clone()];
    driver.publish(p1).await.unwrap();
    driver.publish(p2).await.unwrap();
    // A node that does not know the object yet spreads its first write over 10 s.
    let first = driver.report_status(start).await
        + driver
            .report_status(start + crate::status::MIN_WRITE_INTERVAL)
            .await;
    assert_eq!(first, 1, "one entry for the SSI");
    let entry = entries()[&ssi].clone();
    assert_eq!(
        (entry.node.as_str(), entry.volumes, entry.pods),
        ("node-1", 2, 2)
    );
    assert_eq!(entry.failing, 0);
    assert!(entry.last_rotation.is_some() && entry.last_error.is_none());

    // Nothing new: nothing written, however often it looks.
    assert_eq!(
        driver.report_status(start + Duration::from_secs(30)).await,
        0
    );

    // A failing store shows at the next write, with the error's kind and no value.
    node.store.answer(Err(()));
    driver.rotate(true).await;
    assert_eq!(
        driver.report_status(start + Duration::from_secs(60)).await,
        1
    );
    let entry = entries()[&ssi].clone();
    assert_eq!(entry.failing, 2);
    let error = entry.last_error.unwrap();
    assert_eq!(error.code, "unavailable");
    assert!(
        error.message.contains("rotation failed"),
        "{}",
        error.message
    );

    // Recovered: the error clears.
    node.store.answer(Ok(b"v2".to_vec()));
    driver.rotate(true).await;
    assert_eq!(
        driver.report_status(start + Duration::from_secs(90)).await,
        1
    );
    let entry = entries()[&ssi].clone();
    assert_eq!((entry.failing, entry.last_error), (0, None));

    // The last volume goes: so does the entry.
    for (id, target) in ["csi-p1", "csi-p2"].iter().zip(&targets) {
        driver.unpublish(id, target).await.unwrap();
    }
    assert_eq!(
        driver.report_status(start + Duration::from_secs(120)).await,
        1
    );
    assert!(
        entries().is_empty(),
        "an SSI mounted by nobody has no entry"
    );
}
