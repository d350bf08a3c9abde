//! This node's entries in the status of the SecretsStoreImports its volumes mount
//! (`status.nodes[node=<this node>]`), so that `kubectl get ssi` shows who uses an SSI, whether
//! it is fresh and when its leases end.
//!
//! Design choices:
//! - Each node's driver owns its own entry through server-side apply, with a field manager of
//!   its own, in a list keyed by node name: drivers never overwrite each other and need no
//!   read-modify-write, only `patch` on `secretsstoreimports/status`.
//! - Writes are rare by construction: an entry is written when what it counts (volumes, pods,
//!   failing volumes, the last rotation, the error) changes, at most once per
//!   [`MIN_WRITE_INTERVAL`] per SSI; a change of the times alone (the last success, a renewal
//!   that moves the earliest end later) at most once per [`REFRESH_INTERVAL`]. A steady node
//!   writes an SSI's entry a few times an hour, whatever its number of volumes.
//! - The object, not the node, is what the API server and etcd pay for: every write carries all
//!   its entries, so N nodes writing one SSI at a fixed rate each cost O(N²). Each node therefore
//!   spaces its writes by the number of entries the object listed at its last write
//!   ([`SUBSTANCE_SHARE`] and [`REFRESH_SHARE`] per entry): together the nodes write one SSI
//!   about once a second for changes of substance and once per 10 s for times, however many
//!   they are. A change seen by all nodes at once (a store outage) is spread over half a
//!   node's spacing, so the writes do not arrive as one burst; a node that does not know the
//!   object yet spreads its first write over [`MIN_WRITE_INTERVAL`]. Failed writes (an API
//!   server timing out under contention) are retried after a doubling wait with jitter, so
//!   that nodes that failed together do not retry together.
//! - An SSI lists at most [`MAX_LISTED`] nodes: a node adds its entry only while fewer other
//!   live entries (see [`Listed`]) were listed when it last read the SSI, or, when its volumes
//!   fail, while fewer than [`MAX_LISTED_FAILING`] were. A node whose entry is there keeps it. So the object, each write and
//!   the writers per object stay bounded whatever the cluster's size; nodes beyond report by
//!   their metrics and the pods' Events.
//! - The entry goes when the node's last volume of the SSI goes. Entries of a node that is
//!   deleted with its driver stay; their `lastSuccess` says how old they are.

use crate::driver::Driver;
use crate::seams::{Reporter, Source};
use ssi_core::NodeStatus;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The least time between two writes of one SSI's entry (in a cluster of a few nodes).
pub const MIN_WRITE_INTERVAL: Duration = Duration::from_secs(10);

/// Each entry's share of the time between two writes of changes of substance: a node waits at
/// least this times the entries the object lists, so all of them together write about once a
/// second.
pub const SUBSTANCE_SHARE: Duration = Duration::from_secs(1);

/// The least time between two writes of an entry whose times alone changed, and between two
/// tries of an SSI the API server says does not exist (deleted while mounted, or a CRD without
/// the status subresource).
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(600);

/// Each entry's share of the time between two writes of times alone.
pub const REFRESH_SHARE: Duration = Duration::from_secs(10);

/// The mean wait after a first failed write; it doubles with each failure that follows, up to a
/// mean of [`REFRESH_INTERVAL`], and each wait is drawn from half to one and a half of it.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(60);

/// How long one status write may take before it counts as failed (and the API server is asked
/// to stop working on it); the writer then backs off (see [`RETRY_INTERVAL`]).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(20);

/// The most of an error's message an entry carries: it is the pod Event's text, which names
/// paths and keys an SSI chose, and several nodes write it into one object.
pub const MAX_ERROR_MESSAGE: usize = 1024;

/// The most nodes an SSI lists while theirs are healthy.
pub const MAX_LISTED: usize = 32;

/// The most nodes an SSI lists, a node whose volumes fail adding its entry beyond
/// [`MAX_LISTED`].
pub const MAX_LISTED_FAILING: usize = 64;

/// An entry whose last success and last error are both older than this is a dead node's (its
/// driver would have refreshed it): it does not count against [`MAX_LISTED`].
pub const DEAD_ENTRY: Duration = Duration::from_secs(3600);

/// What an SSI's status held when this node last read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Listed {
    /// Live entries of other nodes.
    pub others: usize,
    /// Whether this node's entry is there.
    pub mine: bool,
}

impl Listed {
    /// What `nodes` hold for `node` at `now`.
    pub fn of(nodes: &[NodeStatus], node: &str, now: std::time::SystemTime) -> Listed {
        let horizon = now
            .checked_sub(DEAD_ENTRY)
            .and_then(|t| k8s_openapi::jiff::Timestamp::try_from(t).ok());
        let live = |entry: &NodeStatus| {
            let times = [
                entry.last_success.as_deref(),
                entry.last_error.as_ref().map(|e| e.at.as_str()),
            ];
            let mut seen = times.into_iter().flatten().peekable();
            // NB: an entry without times (or with times that do not parse) counts as live.
            seen.peek().is_none()
                || seen.any(|at| {
                    let at = at.parse::<k8s_openapi::jiff::Timestamp>().ok();
                    match (at, horizon) {
                        (Some(at), Some(horizon)) => at >= horizon,
                        _ => true,
                    }
                })
        };
        Listed {
            others: nodes
                .iter()
                .filter(|entry| entry.node != node && live(entry))
                .count(),
            mine: nodes.iter().any(|entry| entry.node == node),
        }
    }
}

/// A SecretsStoreImport: its namespace and name.
pub type SsiKey = (String, String);

/// The least time between two writes of changes of substance to an object that lists `listed`
/// entries.
fn spacing(listed: usize) -> Duration {
    MIN_WRITE_INTERVAL.max(SUBSTANCE_SHARE * entries(listed))
}

/// The least time between two writes of times alone to an object that lists `listed` entries.
fn refresh(listed: usize) -> Duration {
    REFRESH_INTERVAL.max(REFRESH_SHARE * entries(listed))
}

/// Over how long the writes of a change that all `listed` nodes see at once are spread: half
/// the spacing the other entries ask for (none when the node is alone), and
/// [`MIN_WRITE_INTERVAL`] while the node does not know how many entries there are (0).
fn spread(listed: usize) -> Duration {
    match listed {
        0 => MIN_WRITE_INTERVAL,
        _ => SUBSTANCE_SHARE * entries(listed - 1) / 2,
    }
}

/// The mean wait after the `failures`-th failed write in a row.
fn backoff(failures: u32) -> Duration {
    let doubled = RETRY_INTERVAL.saturating_mul(1 << failures.saturating_sub(1).min(16));
    doubled.min(REFRESH_INTERVAL)
}

/// `listed` as a factor of the spacing, at most twice [`MAX_LISTED_FAILING`]: an object that
/// lists more (a node writing beyond the limit, or entries of nodes long gone) does not make the
/// others wait for hours.
fn entries(listed: usize) -> u32 {
    u32::try_from(listed.min(2 * MAX_LISTED_FAILING)).unwrap_or(u32::MAX)
}

/// What was last written (or tried) for one SSI, when, and how long before the next try.
#[derive(Debug)]
struct Written {
    /// What the object holds for this node, as far as it knows.
    entry: Option<NodeStatus>,
    /// The entries the object listed after the last write (all nodes').
    listed: usize,
    at: Instant,
    wait: Duration,
    /// When the write wanted now goes (spread; see [`spread`]).
    scheduled: Option<Instant>,
    /// Failed writes since the last that went through.
    failures: u32,
    /// What the SSI held when the node last read it, while its entry is not known to be there.
    read: Option<Listed>,
}

/// What this node has written, to decide what is due.
#[derive(Debug)]
pub struct StatusBook {
    written: HashMap<SsiKey, Written>,
    rng: fastrand::Rng,
}

impl Default for StatusBook {
    fn default() -> Self {
        StatusBook {
            written: HashMap::new(),
            rng: fastrand::Rng::new(),
        }
    }
}

/// Whether `new` differs from `old` in what the entry is for, rather than in its times alone.
fn differs_in_substance(old: &NodeStatus, new: &NodeStatus) -> bool {
    let earlier_end = match (&old.earliest_end, &new.earliest_end) {
        // RFC 3339 in UTC with whole seconds: text order is time order.
        (Some(old), Some(new)) => new < old,
        (None, Some(_)) => true,
        _ => false,
    };
    // NB: the error's time is not its substance: a failure retried every few seconds would
    // otherwise count as a new one each time.
    let error = |status: &NodeStatus| {
        status
            .last_error
            .as_ref()
            .map(|e| (e.code.clone(), e.message.clone()))
    };
    old.volumes != new.volumes
        || old.pods != new.pods
        || old.failing != new.failing
        || old.last_rotation != new.last_rotation
        || error(old) != error(new)
        || earlier_end
}

impl Written {
    /// Whether the object lists too many nodes to add this node's `entry` (it is not there).
    fn full(&self, entry: Option<&NodeStatus>) -> bool {
        let Some(entry) = entry else {
            return false;
        };
        let most = match entry.failing {
            0 => MAX_LISTED,
            _ => MAX_LISTED_FAILING,
        };
        self.entry.is_none()
            && self
                .read
                .is_some_and(|read| !read.mine && read.others >= most)
    }

    /// Whether `current` (`None`: no volume of the SSI left) should be written at `now`.
    fn wanted(&self, current: Option<&NodeStatus>, now: Instant) -> bool {
        let since = now.saturating_duration_since(self.at);
        if since < self.wait {
            return false;
        }
        match (&self.entry, current) {
            (Some(old), Some(new)) => {
                old != new && (differs_in_substance(old, new) || since >= refresh(self.listed))
            }
            (None, Some(_)) | (Some(_), None) => true,
            // NB: a failed first write may have landed.
            (None, None) => self.failures > 0,
        }
    }
}

impl StatusBook {
    /// The writes due at `now` for `current`, this node's entries by SSI: `None` removes the
    /// entry of an SSI the node no longer mounts. `listed` tells what an SSI held when the
    /// node last read it, if it did.
    pub fn due(
        &mut self,
        current: &BTreeMap<SsiKey, NodeStatus>,
        now: Instant,
        listed: impl Fn(&SsiKey) -> Option<Listed>,
    ) -> Vec<(SsiKey, Option<NodeStatus>)> {
        // An SSI no longer mounted whose entry was never written (held back by the limit, or
        // refused as gone) has nothing to remove.
        self.written.retain(|key, written| {
            current.contains_key(key) || written.entry.is_some() || written.failures > 0
        });
        for key in current.keys() {
            let read = listed(key);
            let written = self.written.entry(key.clone()).or_insert(Written {
                entry: None,
                listed: read.map_or(0, |r| r.others + usize::from(r.mine)),
                at: now,
                wait: Duration::ZERO,
                scheduled: None,
                failures: 0,
                read: None,
            });
            if written.entry.is_none() && read.is_some() {
                written.read = read;
            }
        }
        let mut due = Vec::new();
        for (key, written) in &mut self.written {
            let entry = current.get(key);
            if !written.wanted(entry, now) || written.full(entry) {
                written.scheduled = None;
                continue;
            }
            let rng = &mut self.rng;
            let at = *written
                .scheduled
                .get_or_insert_with(|| now + spread(written.listed).mul_f64(rng.f64()));
            if now >= at {
                due.push((key.clone(), entry.cloned()));
            }
        }
        due.sort_by(|a, b| a.0.cmp(&b.0));
        due
    }

    /// The earliest time a write wanted but held back to spread the load goes.
    pub fn next_scheduled(&self) -> Option<Instant> {
        self.written.values().filter_map(|w| w.scheduled).min()
    }

    /// `entry` was written for `key` at `now`, and the object then listed `listed` entries; a
    /// removal forgets the SSI.
    pub fn wrote(&mut self, key: SsiKey, entry: Option<NodeStatus>, now: Instant, listed: usize) {
        match entry {
            Some(entry) => {
                self.written.insert(
                    key,
                    Written {
                        entry: Some(entry),
                        listed,
                        at: now,
                        wait: spacing(listed),
                        scheduled: None,
                        failures: 0,
                        read: None,
                    },
                );
            }
            None => {
                self.written.remove(&key);
            }
        }
    }

    /// A write for `key` failed at `now`: tried again after a wait that doubles with each
    /// failure in a row (see [`RETRY_INTERVAL`]), never sooner than the object's spacing.
    pub fn failed(&mut self, key: SsiKey, now: Instant) {
        let jitter = 0.5 + self.rng.f64();
        let written = self.hold(key, now);
        written.failures = written.failures.saturating_add(1);
        written.wait = backoff(written.failures)
            .mul_f64(jitter)
            .max(spacing(written.listed));
    }

    /// The API server has no such SSI (or no status for it) at `now`: tried again no sooner
    /// than [`REFRESH_INTERVAL`], however often its volumes rotate.
    pub fn gone(&mut self, key: SsiKey, now: Instant) {
        self.hold(key, now).wait = REFRESH_INTERVAL;
    }

    /// The record of `key`, tried at `now` and not written.
    fn hold(&mut self, key: SsiKey, now: Instant) -> &mut Written {
        let written = self.written.entry(key).or_insert(Written {
            entry: None,
            listed: 0,
            at: now,
            wait: Duration::ZERO,
            scheduled: None,
            failures: 0,
            read: None,
        });
        written.at = now;
        written.scheduled = None;
        written
    }
}

/// How a status write went.
#[derive(Debug, PartialEq, Eq)]
pub enum Write {
    /// The entry is as given.
    Done {
        /// The entries the object lists now (all nodes').
        listed: usize,
    },
    /// The SecretsStoreImport no longer exists.
    Gone,
    /// Not written; the reason, for the log.
    Failed(String),
}

/// The field manager of `node`'s driver: one per node, at most 128 bytes as the API wants.
pub fn field_manager(node: &str) -> String {
    let name = format!("ssi-csi-{node}");
    if name.len() <= 128 {
        return name;
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(node.as_bytes());
    let suffix: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    let mut cut = 128 - suffix.len() - 1;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}-{suffix}", &name[..cut])
}

/// Writes `node`'s entry of SSI `namespace/name` (or removes it, `None`) by server-side apply.
pub async fn apply(
    client: &kube::Client,
    node: &str,
    (namespace, name): (&str, &str),
    entry: Option<&NodeStatus>,
) -> Write {
    use kube::api::{Api, Patch, PatchParams};
    let api: Api<ssi_core::SecretsStoreImport> = Api::namespaced(client.clone(), namespace);
    // NB: an applied configuration without our element removes it; the other nodes' elements
    // belong to their managers and stay.
    let nodes: Vec<&NodeStatus> = entry.into_iter().collect();
    let body = serde_json::json!({
        "apiVersion": "deckhouse.io/v1alpha1",
        "kind": "SecretsStoreImport",
        "metadata": {"name": name, "namespace": namespace},
        "status": {"nodes": nodes},
    });
    let params = PatchParams::apply(&field_manager(node)).force();
    match api.patch_status(name, &params, &Patch::Apply(body)).await {
        Ok(ssi) => Write::Done {
            listed: ssi.status.map_or(0, |status| status.nodes.len()),
        },
        Err(kube::Error::Api(status)) if status.code == 404 => Write::Gone,
        Err(error) => Write::Failed(error.to_string()),
    }
}

/// Writes the node's entries for as long as the driver runs: soon after a volume comes, goes or
/// is rotated, and every [`MIN_WRITE_INTERVAL`] for what was due but held back.
pub async fn run<S: Source, R: Reporter>(driver: Arc<Driver<S, R>>) {
    loop {
        let tick = Instant::now() + MIN_WRITE_INTERVAL;
        let wake = driver
            .status_next_scheduled()
            .map_or(tick, |at| at.min(tick));
        tokio::select! {
            _ = tokio::time::sleep_until(wake.into()) => {}
            _ = driver.status_changed.notified() => {
                // Volumes of one pod, or of a rotation cycle, come together: one look for all.
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        driver.report_status(Instant::now()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn entry(volumes: u32) -> NodeStatus {
        NodeStatus {
            node: "n1".into(),
            volumes,
            pods: volumes,
            last_success: Some("2026-12-06T08:00:00Z".into()),
            earliest_end: Some("2026-12-06T09:00:00Z".into()),
            ..NodeStatus::default()
        }
    }

    fn key() -> SsiKey {
        ("ns".into(), "app".into())
    }

    fn current(entry: Option<NodeStatus>) -> BTreeMap<SsiKey, NodeStatus> {
        entry.into_iter().map(|e| (key(), e)).collect()
    }

    #[rstest]
    // what changed, seconds since the last write -> written now
    #[case::nothing(entry(1), 3600, false)]
    #[case::the_volumes_at_once(entry(2), 10, true)]
    #[case::the_volumes_too_soon(entry(2), 9, false)]
    #[case::the_last_success_alone(
        NodeStatus { last_success: Some("2026-12-06T08:02:00Z".into()), ..entry(1) }, 599, false)]
    #[case::the_last_success_after_ten_minutes(
        NodeStatus { last_success: Some("2026-12-06T08:12:00Z".into()), ..entry(1) }, 600, true)]
    #[case::a_renewal_moving_the_end_later(
        NodeStatus { earliest_end: Some("2026-12-06T10:00:00Z".into()), ..entry(1) }, 60, false)]
    #[case::an_end_that_came_earlier(
        NodeStatus { earliest_end: Some("2026-12-06T08:30:00Z".into()), ..entry(1) }, 60, true)]
    #[case::a_failure(NodeStatus { failing: 1, ..entry(1) }, 10, true)]
    fn an_entry_is_written_when_its_substance_changes_and_its_times_only_now_and_then(
        #[case] now_entry: NodeStatus,
        #[case] seconds: u64,
        #[case] written: bool,
    ) {
        let start = Instant::now();
        let mut book = StatusBook::default();
        let first = first_due(
            &mut book,
            &current(Some(entry(1))),
            start,
            MIN_WRITE_INTERVAL,
        );
        assert!(first.is_some(), "a new entry is written within 10 s");
        book.wrote(key(), Some(entry(1)), start, 1);
        let due = book.due(
            &current(Some(now_entry.clone())),
            start + Duration::from_secs(seconds),
            |_| None,
        );
        let want = if written {
            vec![(key(), Some(now_entry))]
        } else {
            Vec::new()
        };
        assert_eq!(due, want);
    }

    #[test]
    fn the_entry_of_an_ssi_no_longer_mounted_is_removed_then_forgotten() {
        let start = Instant::now();
        let mut book = StatusBook::default();
        book.wrote(key(), Some(entry(1)), start, 1);
        let later = start + MIN_WRITE_INTERVAL;
        assert_eq!(book.due(&current(None), later, |_| None), [(key(), None)]);
        book.wrote(key(), None, later, 0);
        assert!(
            book.due(&current(None), later + REFRESH_INTERVAL, |_| None)
                .is_empty()
        );
    }

    #[rstest]
    // failed writes in a row (0: the SSI is gone) -> the least wait, and the most
    #[case::gone(0, 600, 610)]
    #[case::failed_once(1, 30, 100)]
    #[case::failed_three_times(3, 120, 370)]
    #[case::failed_often(9, 300, 910)]
    fn a_failed_or_refused_write_is_tried_again_only_after_its_wait(
        #[case] failures: u32,
        #[case] least: u64,
        #[case] most: u64,
    ) {
        let start = Instant::now();
        let mut book = StatusBook::default();
        match failures {
            0 => book.gone(key(), start),
            _ => (0..failures).for_each(|_| book.failed(key(), start)),
        }
        let at = first_due(
            &mut book,
            &current(Some(entry(2))),
            start,
            Duration::from_secs(most + 1),
        )
        .map(|at| at.as_secs());
        assert!(
            at.is_some_and(|at| (least..=most).contains(&at)),
            "tried again after {at:?} s, not within {least}..={most} s"
        );
    }

    #[test]
    fn nodes_that_failed_together_do_not_try_again_together() {
        let start = Instant::now();
        let mut retries = BTreeMap::<u64, usize>::new();
        for _ in 0..250 {
            let mut book = StatusBook::default();
            book.failed(key(), start);
            let at = first_due(
                &mut book,
                &current(Some(entry(1))),
                start,
                Duration::from_secs(101),
            )
            .expect("tried again");
            *retries.entry(at.as_secs() / 10).or_default() += 1;
        }
        // 250 retries over 30..100 s: about 36 per 10 s.
        let busiest = retries.values().max().copied();
        assert!(busiest < Some(80), "{retries:?}");
    }

    #[test]
    fn a_failure_retried_is_no_new_failure_for_the_status() {
        let start = Instant::now();
        let failing = |at: &str| NodeStatus {
            failing: 1,
            last_error: Some(ssi_core::StatusError {
                code: "unavailable".into(),
                message: "no answer".into(),
                at: at.into(),
            }),
            ..entry(1)
        };
        let mut book = StatusBook::default();
        book.wrote(key(), Some(failing("2026-12-06T08:00:00Z")), start, 1);
        let later = start + MIN_WRITE_INTERVAL;
        assert!(
            book.due(
                &current(Some(failing("2026-12-06T08:00:10Z"))),
                later,
                |_| None
            )
            .is_empty()
        );
    }

    /// The first moment in `from..=until` (by seconds) at which a write of `changed` is due.
    fn first_due(
        book: &mut StatusBook,
        changed: &BTreeMap<SsiKey, NodeStatus>,
        from: Instant,
        until: Duration,
    ) -> Option<Duration> {
        (0..=until.as_secs())
            .map(Duration::from_secs)
            .find(|&t| !book.due(changed, from + t, |_| None).is_empty())
    }

    #[rstest]
    // entries the object lists, what changed -> the least wait, and the most
    #[case::few_nodes_substance(2, entry(2), 10, 11)]
    #[case::many_nodes_substance(64, entry(2), 64, 64 + 32)]
    #[case::more_than_ever_listed(250, entry(2), 128, 128 + 64)]
    #[case::few_nodes_times(2,
        NodeStatus { last_success: Some("2026-12-06T08:12:00Z".into()), ..entry(1) }, 600, 601)]
    #[case::many_nodes_times(64,
        NodeStatus { last_success: Some("2026-12-06T08:12:00Z".into()), ..entry(1) }, 640, 640 + 32)]
    fn the_more_nodes_an_ssi_lists_the_rarer_each_writes_it(
        #[case] listed: usize,
        #[case] changed: NodeStatus,
        #[case] least: u64,
        #[case] most: u64,
    ) {
        let start = Instant::now();
        let mut book = StatusBook::default();
        book.wrote(key(), Some(entry(1)), start, listed);
        let at = first_due(
            &mut book,
            &current(Some(changed)),
            start,
            Duration::from_secs(most + 1),
        )
        .map(|at| at.as_secs());
        assert!(
            at.is_some_and(|at| (least..=most).contains(&at)),
            "written after {at:?} s, not within {least}..={most} s"
        );
    }

    #[test]
    fn a_change_all_nodes_see_at_once_is_written_spread_out_not_as_one_burst() {
        let nodes = MAX_LISTED_FAILING;
        let start = Instant::now();
        let mut books: Vec<StatusBook> = (0..nodes)
            .map(|_| {
                let mut book = StatusBook::default();
                book.wrote(key(), Some(entry(1)), start, nodes);
                book
            })
            .collect();
        let failing = current(Some(NodeStatus {
            failing: 1,
            ..entry(1)
        }));
        // The store fails for everyone long after the last writes.
        let outage = start + Duration::from_secs(3600);
        let mut writes_per_ten_seconds = BTreeMap::<u64, usize>::new();
        for book in &mut books {
            let at = first_due(
                book,
                &failing,
                outage,
                spread(nodes) + Duration::from_secs(1),
            )
            .expect("written within the spread");
            *writes_per_ten_seconds.entry(at.as_secs() / 10).or_default() += 1;
        }
        let busiest = writes_per_ten_seconds.values().max().copied();
        // 64 writes over 31.5 s: about 20 per 10 s; as one burst it would be 64.
        assert!(busiest < Some(40), "{writes_per_ten_seconds:?}");
    }

    #[rstest]
    // entries the SSI listed when read, this node failing -> its entry is added
    #[case::few_listed(MAX_LISTED - 1, false, true)]
    #[case::full(MAX_LISTED, false, false)]
    #[case::full_but_failing(MAX_LISTED, true, true)]
    #[case::full_even_for_failures(MAX_LISTED_FAILING, true, false)]
    fn an_ssi_lists_a_bounded_number_of_nodes_failing_ones_first(
        #[case] listed: usize,
        #[case] failing: bool,
        #[case] added: bool,
    ) {
        let start = Instant::now();
        let mut book = StatusBook::default();
        let mine = NodeStatus {
            failing: u32::from(failing),
            ..entry(1)
        };
        let spread_out = spread(listed) + Duration::from_secs(1);
        let written = (0..=spread_out.as_secs()).any(|t| {
            !book
                .due(
                    &current(Some(mine.clone())),
                    start + Duration::from_secs(t),
                    |_| {
                        Some(Listed {
                            others: listed,
                            mine: false,
                        })
                    },
                )
                .is_empty()
        });
        assert_eq!(written, added);
    }

    #[test]
    fn a_node_already_listed_keeps_its_entry_up_to_date_however_many_are_listed() {
        let start = Instant::now();
        let mut book = StatusBook::default();
        book.wrote(key(), Some(entry(1)), start, MAX_LISTED_FAILING);
        let by = spacing(MAX_LISTED_FAILING) + spread(MAX_LISTED_FAILING) + Duration::from_secs(1);
        assert!(first_due(&mut book, &current(Some(entry(2))), start, by).is_some());
    }

    #[test]
    fn a_restarted_node_whose_entry_is_there_keeps_writing_it_however_many_are_listed() {
        let start = Instant::now();
        let mut book = StatusBook::default();
        let read = Listed {
            others: MAX_LISTED_FAILING,
            mine: true,
        };
        let spread_out = spread(MAX_LISTED_FAILING + 1) + Duration::from_secs(1);
        let written = (0..=spread_out.as_secs()).any(|t| {
            !book
                .due(
                    &current(Some(entry(1))),
                    start + Duration::from_secs(t),
                    |_| Some(read),
                )
                .is_empty()
        });
        assert!(written);
    }

    #[test]
    fn entries_of_nodes_gone_for_an_hour_do_not_count_against_the_limit() {
        let now = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_000_000);
        let at = |ago: u64| {
            let time = now - Duration::from_secs(ago);
            k8s_openapi::jiff::Timestamp::try_from(time)
                .map(|t| t.to_string())
                .ok()
        };
        let node = |name: &str, ago: u64| NodeStatus {
            node: name.into(),
            last_success: at(ago),
            ..NodeStatus::default()
        };
        let nodes = [
            node("me", 10),
            node("alive", 60),
            node("gone", 7200),
            NodeStatus {
                node: "new".into(),
                ..NodeStatus::default()
            },
        ];
        assert_eq!(
            Listed::of(&nodes, "me", now),
            Listed {
                others: 2,
                mine: true
            }
        );
    }

    #[test]
    fn a_node_held_back_by_the_limit_sends_no_removal_when_its_volumes_go() {
        let start = Instant::now();
        let mut book = StatusBook::default();
        let full = Listed {
            others: MAX_LISTED,
            mine: false,
        };
        assert!(
            book.due(&current(Some(entry(1))), start, |_| Some(full))
                .is_empty()
        );
        assert!(
            book.due(&current(None), start + REFRESH_INTERVAL, |_| None)
                .is_empty()
        );
    }

    #[test]
    fn an_object_listing_far_too_many_entries_does_not_stall_the_writers() {
        assert_eq!(spacing(100_000), spacing(2 * MAX_LISTED_FAILING));
        assert!(refresh(100_000) <= Duration::from_secs(1280));
    }

    #[test]
    fn field_managers_are_per_node_and_fit_the_apis_limit() {
        assert_eq!(field_manager("node-1"), "ssi-csi-node-1");
        let long = "n".repeat(253);
        let manager = field_manager(&long);
        assert!(manager.len() <= 128, "{}", manager.len());
        assert_ne!(manager, field_manager(&"n".repeat(252)));
    }
}
