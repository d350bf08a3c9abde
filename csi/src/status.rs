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
//! - The entry goes when the node's last volume of the SSI goes. Entries of a node that is
//!   deleted with its driver stay; their `lastSuccess` says how old they are.

use crate::driver::Driver;
use crate::seams::{Reporter, Source};
use ssi_core::NodeStatus;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The least time between two writes of one SSI's entry.
pub const MIN_WRITE_INTERVAL: Duration = Duration::from_secs(10);

/// The least time between two writes of an entry whose times alone changed, and between two
/// tries of an SSI the API server says does not exist (deleted while mounted, or a CRD without
/// the status subresource).
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(600);

/// The least time between two tries after a failed write.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(60);

/// The most of an error's message an entry carries: it is the pod Event's text, which names
/// paths and keys an SSI chose, and several nodes write it into one object.
pub const MAX_ERROR_MESSAGE: usize = 1024;

/// A SecretsStoreImport: its namespace and name.
pub type SsiKey = (String, String);

/// What was last written (or tried) for one SSI, when, and how long before the next try.
#[derive(Debug)]
struct Written {
    entry: Option<NodeStatus>,
    at: Instant,
    wait: Duration,
}

/// What this node has written, to decide what is due.
#[derive(Debug, Default)]
pub struct StatusBook {
    written: HashMap<SsiKey, Written>,
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

impl StatusBook {
    /// The writes due at `now` for `current`, this node's entries by SSI: `None` removes the
    /// entry of an SSI the node no longer mounts.
    pub fn due(
        &self,
        current: &BTreeMap<SsiKey, NodeStatus>,
        now: Instant,
    ) -> Vec<(SsiKey, Option<NodeStatus>)> {
        let mut due = Vec::new();
        for (key, entry) in current {
            let Some(written) = self.written.get(key) else {
                due.push((key.clone(), Some(entry.clone())));
                continue;
            };
            let since = now.saturating_duration_since(written.at);
            let wanted = match &written.entry {
                Some(old) if old == entry => false,
                _ if since < written.wait => false,
                Some(old) => differs_in_substance(old, entry) || since >= REFRESH_INTERVAL,
                None => true,
            };
            if wanted {
                due.push((key.clone(), Some(entry.clone())));
            }
        }
        for (key, written) in &self.written {
            let since = now.saturating_duration_since(written.at);
            if !current.contains_key(key) && since >= written.wait {
                due.push((key.clone(), None));
            }
        }
        due
    }

    /// `entry` was written for `key` at `now`; a removal forgets the SSI.
    pub fn wrote(&mut self, key: SsiKey, entry: Option<NodeStatus>, now: Instant) {
        match entry {
            Some(entry) => {
                self.written.insert(
                    key,
                    Written {
                        entry: Some(entry),
                        at: now,
                        wait: MIN_WRITE_INTERVAL,
                    },
                );
            }
            None => {
                self.written.remove(&key);
            }
        }
    }

    /// A write for `key` failed at `now`: tried again no sooner than [`RETRY_INTERVAL`].
    pub fn failed(&mut self, key: SsiKey, now: Instant) {
        self.hold(key, now, RETRY_INTERVAL);
    }

    /// The API server has no such SSI (or no status for it) at `now`: tried again no sooner
    /// than [`REFRESH_INTERVAL`], however often its volumes rotate.
    pub fn gone(&mut self, key: SsiKey, now: Instant) {
        self.hold(key, now, REFRESH_INTERVAL);
    }

    fn hold(&mut self, key: SsiKey, now: Instant, wait: Duration) {
        let written = self.written.entry(key).or_insert(Written {
            entry: None,
            at: now,
            wait,
        });
        written.at = now;
        written.wait = wait;
    }
}

/// How a status write went.
#[derive(Debug, PartialEq, Eq)]
pub enum Write {
    /// The entry is as given.
    Done,
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
        Ok(_) => Write::Done,
        Err(kube::Error::Api(status)) if status.code == 404 => Write::Gone,
        Err(error) => Write::Failed(error.to_string()),
    }
}

/// Writes the node's entries for as long as the driver runs: soon after a volume comes, goes or
/// is rotated, and every [`MIN_WRITE_INTERVAL`] for what was due but held back.
pub async fn run<S: Source, R: Reporter>(driver: Arc<Driver<S, R>>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(MIN_WRITE_INTERVAL) => {}
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
        assert_eq!(
            book.due(&current(Some(entry(1))), start),
            [(key(), Some(entry(1)))],
            "a new entry is written at once"
        );
        book.wrote(key(), Some(entry(1)), start);
        let due = book.due(
            &current(Some(now_entry.clone())),
            start + Duration::from_secs(seconds),
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
        book.wrote(key(), Some(entry(1)), start);
        let later = start + MIN_WRITE_INTERVAL;
        assert_eq!(book.due(&current(None), later), [(key(), None)]);
        book.wrote(key(), None, later);
        assert!(
            book.due(&current(None), later + REFRESH_INTERVAL)
                .is_empty()
        );
    }

    #[rstest]
    #[case::failed(RETRY_INTERVAL)]
    #[case::gone(REFRESH_INTERVAL)]
    fn a_failed_or_refused_write_is_tried_again_only_after_its_wait(#[case] wait: Duration) {
        let start = Instant::now();
        let mut book = StatusBook::default();
        match wait {
            RETRY_INTERVAL => book.failed(key(), start),
            _ => book.gone(key(), start),
        }
        let changed = current(Some(entry(2)));
        for seconds in [0, 10, wait.as_secs() - 1] {
            assert!(
                book.due(&changed, start + Duration::from_secs(seconds))
                    .is_empty(),
                "not at {seconds} s"
            );
        }
        assert_eq!(book.due(&changed, start + wait).len(), 1);
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
        book.wrote(key(), Some(failing("2026-12-06T08:00:00Z")), start);
        let later = start + MIN_WRITE_INTERVAL;
        assert!(
            book.due(&current(Some(failing("2026-12-06T08:00:10Z"))), later)
                .is_empty()
        );
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
