//! Every published volume's state in one table: its record and tokens, the identity and the
//! holdings it fetched with, its last success and last error, and when it is next due. Pure: no
//! I/O, and the time is passed in, so that the rotation's rules (backoff after failures, renewal
//! before a lease or token ends, a failed write keeping the old holdings, a restart's recovered
//! records) are tested in memory; the driver does the work and reports here.

use crate::fetch::{IdentityKey, Tokens};
use crate::held::{self, Holdings, Request};
use crate::state::Record;
use crate::status::SsiKey;
use ssi_core::{NodeStatus, StatusError};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime};

/// A published volume as the driver tracks it in memory.
#[derive(Debug)]
pub struct Volume {
    /// What is saved on disk for it.
    pub record: Record,
    /// Tokens from kubelet's latest (re)publish; empty after a restart until the next republish.
    pub tokens: Tokens,
    /// Whose identity fetched its files; `None` after a restart until its first rotation.
    pub identity: Option<IdentityKey>,
    /// Leased and issued secrets kept between cycles (see [`crate::held`]).
    pub holdings: Holdings,
    /// The store paths its last fetch read; `None` when not known (after a restart, until its
    /// first rotation) or too many to keep (see [`MAX_KEPT_READS`]).
    pub reads: Option<Vec<String>>,
    /// When a path it read was last reported changed ([`VolumeTable::stale`]).
    stale_at: Option<Instant>,
    /// Failed rotations in a row.
    pub failures: u32,
    retry_at: Option<Instant>,
    /// When the volume was last rotated: the next look is never sooner than
    /// [`held::MIN_RENEWAL_INTERVAL`] after it, whatever a store's token TTL says.
    looked_at: Option<Instant>,
    /// When its files were last written or found current.
    pub last_success: Option<SystemTime>,
    /// When its files last changed (written at publish, or rotated).
    pub last_change: Option<SystemTime>,
    /// Its last failure, until a success.
    pub last_error: Option<LastError>,
}

/// Why a volume's last rotation failed, in words fit for an Event (never a value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastError {
    /// The gRPC code's label (`unavailable`, `permission_denied`, ...).
    pub code: &'static str,
    /// The message with its causes.
    pub message: String,
    /// When it failed.
    pub at: SystemTime,
}

/// What a failed rotation means for the volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// Failed rotations in a row, this one included.
    pub failures: u32,
    /// Whether the pod should be told (an Event): when the trouble starts, then once per
    /// rotation interval, so that a long outage does not flood the pod's events.
    pub report: bool,
}

/// The most paths, and bytes of them, a volume keeps of what it read: kept for the volume's life,
/// outside the fetch's memory budget. A volume that reads more is rotated at any change.
pub const MAX_KEPT_READS: (usize, usize) = (64, 8 * 1024);

/// The distinct paths of `reads`, if they fit [`MAX_KEPT_READS`].
fn kept_reads(reads: &[Request]) -> Option<Vec<String>> {
    let mut paths: Vec<String> = Vec::new();
    for read in reads {
        if !paths.contains(&read.path) {
            paths.push(read.path.clone());
        }
    }
    let bytes: usize = paths.iter().map(String::len).sum();
    (paths.len() <= MAX_KEPT_READS.0 && bytes <= MAX_KEPT_READS.1).then_some(paths)
}

/// The published volumes of the node.
#[derive(Debug)]
pub struct VolumeTable {
    volumes: HashMap<String, Volume>,
    rotation_interval: Duration,
}

impl VolumeTable {
    /// An empty table; failed volumes are retried no later than `rotation_interval`.
    pub fn new(rotation_interval: Duration) -> VolumeTable {
        VolumeTable {
            volumes: HashMap::new(),
            rotation_interval,
        }
    }

    /// The number of volumes.
    pub fn len(&self) -> usize {
        self.volumes.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.volumes.is_empty()
    }

    /// The volume `id`.
    pub fn get(&self, id: &str) -> Option<&Volume> {
        self.volumes.get(id)
    }

    /// A volume just published: its files written at `wall` as `identity` from `reads`,
    /// holding `holdings`.
    pub fn published(
        &mut self,
        record: Record,
        tokens: Tokens,
        (identity, holdings, reads): (IdentityKey, Holdings, Vec<Request>),
        wall: SystemTime,
    ) {
        let id = record.volume_id.clone();
        self.volumes.insert(
            id,
            Volume {
                record,
                tokens,
                identity: Some(identity),
                holdings,
                reads: kept_reads(&reads),
                stale_at: None,
                failures: 0,
                retry_at: None,
                looked_at: None,
                last_success: Some(wall),
                last_change: Some(wall),
                last_error: None,
            },
        );
    }

    /// A volume a previous run of the driver published, from its saved record: no tokens until
    /// kubelet republishes it, its holdings without their values, held by `held_by`.
    pub fn recovered(&mut self, mut record: Record) {
        let holdings: Holdings = std::mem::take(&mut record.held)
            .into_iter()
            .map(|held| (held.request.clone(), held))
            .collect();
        let identity = record.held_by.take().filter(|_| !holdings.is_empty());
        self.volumes.insert(
            record.volume_id.clone(),
            Volume {
                record,
                tokens: Tokens::new(),
                identity,
                holdings,
                reads: None,
                stale_at: None,
                failures: 0,
                retry_at: None,
                looked_at: None,
                last_success: None,
                last_change: None,
                last_error: None,
            },
        );
    }

    /// Kubelet's republish of volume `id` with fresh `tokens`. A volume recovered after a
    /// restart (its identity unknown yet) is due `now`, rather than at the next full cycle.
    pub fn republished(&mut self, id: &str, tokens: Tokens, now: Instant) {
        if let Some(volume) = self.volumes.get_mut(id) {
            volume.tokens = tokens;
            if volume.identity.is_none() {
                volume.retry_at = Some(now);
            }
        }
    }

    /// Removes volume `id`, returning it (its holdings are to be given back).
    pub fn remove(&mut self, id: &str) -> Option<Volume> {
        self.volumes.remove(id)
    }

    /// The volumes to rotate at `now`: every one in a full cycle, else those due.
    pub fn due(&self, now: Instant, wall: SystemTime, full: bool) -> Vec<String> {
        self.volumes
            .iter()
            .filter(|(_, v)| full || v.due_at(now, wall).is_some_and(|at| at <= now))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// When the earliest volume is due before the next full cycle.
    pub fn next_due(&self, now: Instant, wall: SystemTime) -> Option<Instant> {
        self.volumes
            .values()
            .filter_map(|v| v.due_at(now, wall))
            .min()
    }

    /// Volume `id` is being rotated at `now`.
    pub fn looking(&mut self, id: &str, now: Instant) {
        if let Some(volume) = self.volumes.get_mut(id) {
            volume.looked_at = Some(now);
        }
    }

    /// Volume `id`'s rotation from `reads` succeeded at `wall` as `identity`: its failures are
    /// over.
    pub fn succeeded(
        &mut self,
        id: &str,
        (identity, reads): (IdentityKey, Vec<Request>),
        wall: SystemTime,
    ) {
        if let Some(volume) = self.volumes.get_mut(id) {
            volume.identity = Some(identity);
            volume.reads = kept_reads(&reads);
            volume.failures = 0;
            // NB: a change reported while this rotation was under way may have come after its
            // read: it stays due.
            volume.retry_at = volume
                .stale_at
                .filter(|stale| volume.looked_at.is_none_or(|looked| *stale > looked));
            volume.last_success = Some(wall);
            volume.last_error = None;
        }
    }

    /// Volume `id`'s rotation failed at `now` with `error`: it is retried after a backoff of
    /// 1 s, 2 s, 4 s ... but never later than the next regular cycle. Its holdings stay.
    pub fn failed(&mut self, id: &str, error: LastError, now: Instant) -> Option<Failure> {
        let backoff = |failures: u32| {
            Duration::from_secs(1)
                .saturating_mul(1 << failures.saturating_sub(1).min(10))
                .min(self.rotation_interval)
        };
        let volume = self.volumes.get_mut(id)?;
        volume.failures += 1;
        let failures = volume.failures;
        volume.retry_at = Some(now + backoff(failures));
        volume.last_error = Some(error);
        Some(Failure {
            failures,
            report: failures <= 1 || backoff(failures) >= self.rotation_interval,
        })
    }

    /// The secret at `path` changed in the store: every volume that read it is due `now`, its
    /// backoff included (the change may be the fix), and so is every volume whose reads are
    /// not known. Returns their ids.
    pub fn stale(&mut self, path: &str, now: Instant) -> Vec<String> {
        let path = path.trim_matches('/');
        let mut marked = Vec::new();
        for (id, volume) in &mut self.volumes {
            let read_it = volume
                .reads
                .as_ref()
                .is_none_or(|paths| paths.iter().any(|read| read == path));
            if read_it {
                volume.retry_at = Some(now);
                volume.stale_at = Some(now);
                marked.push(id.clone());
            }
        }
        marked.sort_unstable();
        marked
    }

    /// Volume `id`'s files changed at `wall`.
    pub fn changed(&mut self, id: &str, wall: SystemTime) {
        if let Some(volume) = self.volumes.get_mut(id) {
            volume.last_change = Some(wall);
        }
    }

    /// This node's entry (`node`) for each SecretsStoreImport its volumes mount, as the SSI's
    /// status shows it (see [`crate::status`]).
    pub fn summaries(&self, node: &str) -> BTreeMap<SsiKey, NodeStatus> {
        struct Sum<'a> {
            volumes: u32,
            pods: BTreeSet<&'a str>,
            failing: u32,
            last_change: Option<SystemTime>,
            last_success: Option<SystemTime>,
            earliest_end: Option<SystemTime>,
            last_error: Option<&'a LastError>,
        }
        let mut sums: BTreeMap<SsiKey, Sum<'_>> = BTreeMap::new();
        for volume in self.volumes.values() {
            let key = (
                volume.record.pod.namespace.clone(),
                volume.record.ssi.clone(),
            );
            let sum = sums.entry(key).or_insert(Sum {
                volumes: 0,
                pods: BTreeSet::new(),
                failing: 0,
                last_change: None,
                last_success: None,
                earliest_end: None,
                last_error: None,
            });
            sum.volumes += 1;
            sum.pods.insert(&volume.record.pod.uid);
            sum.last_change = sum.last_change.max(volume.last_change);
            sum.last_success = sum.last_success.max(volume.last_success);
            let end = volume.holdings.values().filter_map(|held| held.until).min();
            sum.earliest_end = match (sum.earliest_end, end) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if volume.failures > 0 {
                sum.failing += 1;
                if let Some(error) = &volume.last_error
                    && sum.last_error.is_none_or(|latest| error.at > latest.at)
                {
                    sum.last_error = Some(error);
                }
            }
        }
        sums.into_iter()
            .map(|(key, sum)| {
                let entry = NodeStatus {
                    node: node.to_owned(),
                    volumes: sum.volumes,
                    pods: u32::try_from(sum.pods.len()).unwrap_or(u32::MAX),
                    failing: sum.failing,
                    last_rotation: sum.last_change.map(rfc3339),
                    last_success: sum.last_success.map(rfc3339),
                    earliest_end: sum.earliest_end.map(rfc3339),
                    last_error: sum.last_error.map(|error| StatusError {
                        code: error.code.to_owned(),
                        message: cut(&error.message, crate::status::MAX_ERROR_MESSAGE),
                        at: rfc3339(error.at),
                    }),
                };
                (key, entry)
            })
            .collect()
    }

    /// Volume `id` now holds `holdings` (its files were written with them).
    pub fn keep_holdings(&mut self, id: &str, holdings: Holdings) {
        if let Some(volume) = self.volumes.get_mut(id) {
            volume.holdings = holdings;
        }
    }

    /// The identities the volumes use, and whether every volume's is known (a volume recovered
    /// after a restart learns it at its first rotation; the token holding its leases must wait
    /// for it).
    pub fn identities(&self) -> (HashSet<IdentityKey>, bool) {
        let in_use = self
            .volumes
            .values()
            .filter_map(|v| v.identity.clone())
            .collect();
        let known = self
            .volumes
            .values()
            .all(|v| v.identity.is_some() || v.holdings.is_empty());
        (in_use, known)
    }
}

impl Volume {
    /// When the volume needs a look before the next full cycle: a retry after a failure, or a
    /// held secret due for renewal.
    fn due_at(&self, now: Instant, wall: SystemTime) -> Option<Instant> {
        // NB: while the volume fails, its backoff decides: a renewal due in the past would
        // otherwise bring it back at once, again and again.
        if self.failures > 0 {
            return self.retry_at;
        }
        // Without a token (after a restart, until kubelet's republish) nothing can be renewed.
        let renewal = held::next_due(&self.holdings)
            .filter(|_| !self.tokens.is_empty())
            .map(|due| instant_of(due, now, wall))
            .map(|due| match self.looked_at {
                Some(looked) => due.max(looked + held::MIN_RENEWAL_INTERVAL),
                None => due,
            });
        renewal.into_iter().chain(self.retry_at).min()
    }
}

/// When the node's secrets end, for the expiry gauges (docs/metrics.md).
#[derive(Debug, Default, PartialEq)]
pub struct Expiry {
    /// The earliest end of a leased secret.
    pub lease: Option<SystemTime>,
    /// The earliest end of an issued one (a certificate).
    pub certificate: Option<SystemTime>,
    /// The earliest end of a store token that leases live on.
    pub token: Option<SystemTime>,
    /// The smallest share of its life an issued secret has left: 1 just issued, 0 ended.
    pub certificate_life_left: Option<f64>,
    /// When the stalest volume was last found current (a volume recovered after a restart:
    /// the restart); `None` without volumes.
    pub stalest_success: Option<SystemTime>,
}

impl VolumeTable {
    /// When the node's secrets end and when its stalest volume was found current, at `wall`; a
    /// volume not found current since the driver started (`started`) counts from then.
    pub fn expiry(&self, wall: SystemTime, started: SystemTime) -> Expiry {
        let earliest = |a: Option<SystemTime>, b: Option<SystemTime>| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let mut expiry = Expiry::default();
        for volume in self.volumes.values() {
            let success = volume.last_success.unwrap_or(started);
            expiry.stalest_success =
                Some(expiry.stalest_success.map_or(success, |s| s.min(success)));
            for held in volume.holdings.values() {
                expiry.token = earliest(expiry.token, held.token_until);
                if held.request.method != ssi_core::ssi::Method::Post {
                    expiry.lease = earliest(expiry.lease, held.until);
                    continue;
                }
                expiry.certificate = earliest(expiry.certificate, held.until);
                if let Some(until) = held.until {
                    let life = until.duration_since(held.since).unwrap_or_default();
                    let left = until.duration_since(wall).unwrap_or_default();
                    let share = match life.is_zero() {
                        true => 0.0,
                        false => (left.as_secs_f64() / life.as_secs_f64()).min(1.0),
                    };
                    expiry.certificate_life_left = Some(
                        expiry
                            .certificate_life_left
                            .map_or(share, |smallest| smallest.min(share)),
                    );
                }
            }
        }
        expiry
    }
}

/// `text`, cut to at most `limit` bytes at a character boundary, marked when cut.
fn cut(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_owned();
    }
    let mut end = limit.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// `time` in RFC 3339, UTC, whole seconds (so that text order is time order).
fn rfc3339(time: SystemTime) -> String {
    let seconds = match time.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(since) => i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        Err(_) => 0,
    };
    k8s_openapi::jiff::Timestamp::from_second(seconds)
        .unwrap_or(k8s_openapi::jiff::Timestamp::MAX)
        .to_string()
}

/// The monotonic instant of wall-clock `time`, past or future, given that `now` is `wall`.
fn instant_of(time: SystemTime, now: Instant, wall: SystemTime) -> Instant {
    match time.duration_since(wall) {
        Ok(ahead) => now + ahead.min(ssi_vault::MAX_TTL),
        Err(behind) => now.checked_sub(behind.duration()).unwrap_or(now),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::held::{Held, Request};
    use crate::state::PodInfo;
    use rstest::rstest;
    use secrecy::SecretString;

    const INTERVAL: Duration = Duration::from_secs(120);

    fn record(id: &str) -> Record {
        Record {
            volume_id: id.into(),
            target_path: format!("/kubelet/pods/p/volumes/{id}").into(),
            pod: PodInfo {
                namespace: "ns".into(),
                name: "pod".into(),
                uid: "uid".into(),
                service_account: "sa".into(),
            },
            ssi: "ssi".into(),
            mount_group: None,
            held: Vec::new(),
            held_by: None,
        }
    }

    fn tokens() -> Tokens {
        Tokens::from([(String::new(), SecretString::from("jwt".to_owned()))])
    }

    fn identity() -> IdentityKey {
        serde_json::from_value(serde_json::json!({
            "store": {"address": "https://vault:8200/", "vault_namespace": null,
                      "ca_pem": null, "skip_tls_verify": false},
            "auth_path": "kubernetes", "role": "r",
            "service_account_namespace": "ns", "service_account": "sa"}))
        .unwrap()
    }

    /// A holding of a 90 s database lease obtained at `wall`.
    fn leased(wall: SystemTime) -> Holdings {
        let secret = ssi_vault::Secret::from_response(
            "database/creds/app",
            serde_json::json!({"lease_id": "database/creds/app/abc", "lease_duration": 90,
                "renewable": true, "data": {"username": "u", "password": "p"}}),
        )
        .unwrap();
        let token = ssi_vault::TokenUsed {
            login: 1,
            until: None,
            renew_at: None,
        };
        let request = Request::get("database/creds/app");
        let held = Held::of(&request, std::sync::Arc::new(secret), token, wall).unwrap();
        Holdings::from([(request, held)])
    }

    /// Volume `id` published at `wall` holding `holdings`, from no reads.
    fn publish(table: &mut VolumeTable, id: &str, holdings: Holdings, wall: SystemTime) {
        table.published(
            record(id),
            tokens(),
            (identity(), holdings, Vec::new()),
            wall,
        );
    }

    fn error() -> LastError {
        LastError {
            code: "unavailable",
            message: "the store did not answer".into(),
            at: SystemTime::UNIX_EPOCH,
        }
    }

    #[rstest]
    // failures in a row -> (retry after, the pod is told)
    #[case(1, 1, true)]
    #[case(2, 2, false)]
    #[case(3, 4, false)]
    #[case(7, 64, false)]
    #[case(8, 120, true)]
    #[case(20, 120, true)]
    fn a_failing_volume_backs_off_up_to_the_interval_and_is_reported_sparingly(
        #[case] failures: u32,
        #[case] retry_secs: u64,
        #[case] reported: bool,
    ) {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let mut table = VolumeTable::new(INTERVAL);
        publish(&mut table, "v", Holdings::new(), wall);
        let mut last = None;
        for _ in 0..failures {
            last = table.failed("v", error(), now);
        }
        let last = last.unwrap();
        assert_eq!(last.failures, failures);
        assert_eq!(last.report, reported);
        assert_eq!(
            table.next_due(now, wall),
            Some(now + Duration::from_secs(retry_secs))
        );
        assert!(table.due(now, wall, false).is_empty());
        assert_eq!(
            table.due(now + Duration::from_secs(retry_secs), wall, false),
            ["v"]
        );
        assert_eq!(table.get("v").unwrap().last_error, Some(error()));
    }

    #[rstest]
    // the path that changed -> the volumes due at once
    // ("r" was recovered after a restart, "x" read too much to keep: both read anything)
    #[case::one_reader("secret/data/a", &["r", "v", "x"])]
    #[case::both_readers("secret/data/shared", &["r", "v", "w", "x"])]
    #[case::slashes_as_an_ssi_writes_them("/secret/data/shared/", &["r", "v", "w", "x"])]
    #[case::a_path_nobody_read("secret/data/other", &["r", "x"])]
    #[case::a_prefix_is_not_the_path("secret/data", &["r", "x"])]
    fn a_changed_path_makes_the_volumes_that_read_it_due_at_once(
        #[case] path: &str,
        #[case] want: &[&str],
    ) {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let mut table = VolumeTable::new(INTERVAL);
        let reads = |paths: &[&str]| paths.iter().map(|p| Request::get(p)).collect();
        table.published(
            record("v"),
            tokens(),
            (
                identity(),
                Holdings::new(),
                reads(&["secret/data/a", "secret/data/shared"]),
            ),
            wall,
        );
        table.published(
            record("w"),
            tokens(),
            (identity(), Holdings::new(), reads(&["secret/data/shared"])),
            wall,
        );
        // A volume recovered after a restart has not said what it reads yet.
        table.recovered(record("r"));
        let many: Vec<String> = (0..=MAX_KEPT_READS.0).map(|i| format!("kv/{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        table.published(
            record("x"),
            tokens(),
            (identity(), Holdings::new(), reads(&many)),
            wall,
        );
        // A failing volume is among them too: the change may be its fix.
        table.failed("w", error(), now);
        let later = now + Duration::from_secs(1);
        assert_eq!(table.stale(path, later), want);
        let mut due = table.due(later, wall, false);
        due.sort_unstable();
        let mut expected: Vec<&str> = want.to_vec();
        if !expected.contains(&"w") {
            expected.push("w"); // its 1 s backoff is over anyway
            expected.sort_unstable();
        }
        assert_eq!(due, expected);
    }

    #[test]
    fn expiry_finds_the_earliest_ends_the_shortest_certificate_life_and_the_stalest_volume() {
        let wall = SystemTime::now();
        let mut table = VolumeTable::new(INTERVAL);
        assert_eq!(table.expiry(wall, wall), Expiry::default(), "nothing held");
        // A 90 s database lease, obtained 30 s ago; its volume found current then.
        let obtained = wall - Duration::from_secs(30);
        table.published(
            record("db"),
            tokens(),
            (identity(), leased(obtained), Vec::new()),
            obtained,
        );
        // A certificate of 100 s issued 80 s ago: a fifth of its life left.
        let request = Request {
            method: ssi_core::ssi::Method::Post,
            ..Request::get("pki/issue/app")
        };
        let issued = wall - Duration::from_secs(80);
        let certificate = Held {
            request: request.clone(),
            secret: None,
            lease: None,
            since: issued,
            until: Some(issued + Duration::from_secs(100)),
            token_login: None,
            token_until: Some(wall + Duration::from_secs(600)),
            token_renew_at: None,
        };
        table.published(
            record("tls"),
            tokens(),
            (
                identity(),
                Holdings::from([(request, certificate)]),
                Vec::new(),
            ),
            wall - Duration::from_secs(5),
        );
        let expiry = table.expiry(wall, wall);
        assert_eq!(expiry.lease, Some(obtained + Duration::from_secs(90)));
        assert_eq!(expiry.certificate, Some(issued + Duration::from_secs(100)));
        assert_eq!(expiry.token, Some(wall + Duration::from_secs(600)));
        let left = expiry.certificate_life_left.unwrap();
        assert!((left - 0.2).abs() < 1e-9, "{left}");
        assert_eq!(expiry.stalest_success, Some(obtained));
        // A volume recovered after a restart 100 s ago, not yet refreshed: counted from then.
        table.recovered(record("old"));
        let restarted = wall - Duration::from_secs(100);
        assert_eq!(
            table.expiry(wall, restarted).stalest_success,
            Some(restarted)
        );
    }

    #[test]
    fn a_change_reported_during_a_rotation_keeps_the_volume_due_after_it() {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let mut table = VolumeTable::new(INTERVAL);
        let reads = vec![Request::get("secret/data/a")];
        table.published(
            record("v"),
            tokens(),
            (identity(), Holdings::new(), reads.clone()),
            wall,
        );
        // The rotation starts (and reads), then the change is reported, then it succeeds.
        table.looking("v", now);
        let changed = now + Duration::from_millis(10);
        assert_eq!(table.stale("secret/data/a", changed), ["v"]);
        table.succeeded("v", (identity(), reads.clone()), wall);
        assert_eq!(
            table.due(changed, wall, false),
            ["v"],
            "it may have read the old value"
        );
        // The next rotation starts after the change: its success settles it.
        let next = changed + Duration::from_millis(10);
        table.looking("v", next);
        table.succeeded("v", (identity(), reads), wall);
        assert!(table.due(next, wall, false).is_empty());
    }

    #[test]
    fn a_success_ends_the_failures_and_keeps_what_it_fetched() {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let mut table = VolumeTable::new(INTERVAL);
        publish(&mut table, "v", Holdings::new(), wall);
        table.failed("v", error(), now);
        table.succeeded("v", (identity(), Vec::new()), wall + Duration::from_secs(5));
        let volume = table.get("v").unwrap();
        assert_eq!(volume.failures, 0);
        assert_eq!(volume.last_error, None);
        assert_eq!(volume.last_success, Some(wall + Duration::from_secs(5)));
        assert_eq!(
            table.next_due(now, wall),
            None,
            "nothing held: the cycle only"
        );
    }

    #[test]
    fn a_lease_is_renewed_at_two_thirds_of_its_life_but_not_sooner_than_the_floor() {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let mut table = VolumeTable::new(INTERVAL);
        publish(&mut table, "v", leased(wall), wall);
        let due = table.next_due(now, wall).unwrap();
        assert_eq!(due, now + Duration::from_secs(60), "two thirds of 90 s");
        assert_eq!(table.due(due, wall + Duration::from_secs(60), false), ["v"]);
        // Looked at just now: never again within the renewal floor, whatever is due.
        table.looking("v", due);
        let again = table.next_due(due, wall + Duration::from_secs(60)).unwrap();
        assert_eq!(again, due + held::MIN_RENEWAL_INTERVAL);
    }

    #[test]
    fn a_failing_volume_waits_for_its_backoff_even_with_a_renewal_past_due() {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let mut table = VolumeTable::new(INTERVAL);
        publish(&mut table, "v", leased(wall), wall);
        let late = now + Duration::from_secs(80);
        table.failed("v", error(), late);
        assert_eq!(
            table.next_due(late, wall + Duration::from_secs(80)),
            Some(late + Duration::from_secs(1))
        );
        assert_eq!(
            table.get("v").unwrap().holdings.len(),
            1,
            "a failed rotation keeps the old holdings"
        );
    }

    #[test]
    fn a_recovered_volume_waits_for_its_token_then_is_due_at_once() {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let mut saved = record("v");
        saved.held = crate::held::to_record(&leased(wall - Duration::from_secs(80)));
        saved.held_by = Some(identity());
        // As the driver reads it back from disk: no values.
        let saved: Record = serde_json::from_value(serde_json::to_value(&saved).unwrap()).unwrap();
        let mut table = VolumeTable::new(INTERVAL);
        table.recovered(saved);
        let volume = table.get("v").unwrap();
        assert_eq!(volume.holdings.len(), 1, "the lease, without its value");
        assert!(volume.holdings.values().all(|held| held.secret.is_none()));
        assert_eq!(
            volume.identity,
            Some(identity()),
            "held by whoever obtained it"
        );
        // Its renewal is past due, but without a token nothing can be renewed.
        assert_eq!(table.next_due(now, wall), None);
        assert!(table.due(now, wall, false).is_empty());
        assert_eq!(table.due(now, wall, true), ["v"], "a full cycle tries it");
        table.republished("v", tokens(), now);
        assert_eq!(
            table.due(now, wall, false),
            ["v"],
            "due with kubelet's token"
        );
    }

    #[test]
    fn a_volume_recovered_without_leases_learns_its_identity_at_its_first_rotation() {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let mut table = VolumeTable::new(INTERVAL);
        table.recovered(record("v"));
        publish(&mut table, "w", Holdings::new(), wall);
        let (in_use, known) = table.identities();
        assert_eq!(in_use.len(), 1);
        assert!(known, "v holds nothing: no token waits for its identity");
        table.republished("v", tokens(), now);
        assert_eq!(table.due(now, wall, false), ["v"]);
        table.succeeded("v", (identity(), Vec::new()), wall);
        assert_eq!(table.get("v").unwrap().identity, Some(identity()));
        assert_eq!(
            table.remove("w").map(|v| v.record.volume_id),
            Some("w".into())
        );
        assert_eq!(table.len(), 1);
    }
}
