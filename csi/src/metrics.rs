//! Prometheus metrics. Labels are bounded enums only: never a pod, namespace, SSI or path.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::fmt::Write;

/// Whether a call succeeded, as a label value.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum Outcome {
    /// The call succeeded (`ok`).
    Ok,
    /// It failed (`error`).
    Error,
}

impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
        })
    }
}

/// The `code` label values of failed CSI calls.
pub const ERROR_CODES: [&str; 6] = [
    "invalid_argument",
    "not_found",
    "permission_denied",
    "unavailable",
    "already_exists",
    "internal",
];

/// The `operation` label values of `ssi_csi_store_requests_total`.
pub const STORE_OPERATIONS: [&str; 6] =
    ["login", "read", "write", "renew", "revoke", "renew_token"];

/// Labels of `ssi_csi_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    /// The CSI call: `publish` or `unpublish`.
    pub operation: &'static str,
    /// Whether it succeeded.
    pub result: Outcome,
    /// gRPC code label of a failure, "ok" otherwise.
    pub code: &'static str,
}

/// What one volume's rotation did, as a label value.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum Rotation {
    /// The values changed in the store; the files were swapped.
    Changed,
    /// The same bytes; nothing was written.
    Unchanged,
    /// Fetching or writing failed; the old files are kept.
    Failed,
    /// No token yet (after a driver restart, until kubelet republishes).
    Waiting,
}

impl EncodeLabelValue for Rotation {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(match self {
            Rotation::Changed => "changed",
            Rotation::Unchanged => "unchanged",
            Rotation::Failed => "failed",
            Rotation::Waiting => "waiting",
        })
    }
}

/// A gauge of seconds or a ratio, NaN while there is nothing to measure (no alert compares
/// true with NaN).
pub type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// Labels of `ssi_csi_earliest_end_timestamp_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndLabels {
    /// `lease` (leased credentials), `certificate` (issued by a `POST` source) or `token` (the
    /// store token the leases live on).
    pub kind: &'static str,
}

/// The `kind` label values of `ssi_csi_earliest_end_timestamp_seconds`.
pub const END_KINDS: [&str; 3] = ["lease", "certificate", "token"];

/// Labels of `ssi_csi_status_writes_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    /// Whether the API server took it.
    pub result: Outcome,
}

/// Labels of `ssi_csi_rotations_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RotationLabels {
    /// What the rotation did.
    pub result: Rotation,
}

/// Labels of `ssi_csi_store_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreLabels {
    /// The store call: `login`, `read` or `renew`.
    pub operation: &'static str,
    /// Whether it succeeded, after retries.
    pub result: Outcome,
}

/// The driver's metrics, all prefixed `ssi_csi_`, served on the admin address's /metrics.
#[derive(Debug)]
pub struct Metrics {
    /// Every metric below, for encoding.
    pub registry: Registry,
    /// CSI calls by operation, result and gRPC code (`ssi_csi_requests_total`).
    pub csi_requests: Family<OperationLabels, Counter>,
    /// Volume rotations by result (`ssi_csi_rotations_total`).
    pub rotations: Family<RotationLabels, Counter>,
    /// Duration of each rotation cycle, a full one or one of retries only
    /// (`ssi_csi_rotation_cycle_seconds`).
    pub rotation_cycle_seconds: Histogram,
    /// Logins, reads and lease renewals sent to the store, counted after retries
    /// (`ssi_csi_store_requests_total`).
    pub store_requests: Family<StoreLabels, Counter>,
    /// Volumes currently published on this node (`ssi_csi_mounts`).
    pub mounts: Gauge,
    /// Writes of this node's entries in SecretsStoreImports' status
    /// (`ssi_csi_status_writes_total`).
    pub status_writes: Family<StatusLabels, Counter>,
    /// The earliest end of what the node's volumes hold, by kind, in Unix seconds
    /// (`ssi_csi_earliest_end_timestamp_seconds`).
    pub earliest_end: Family<EndLabels, FloatGauge>,
    /// The smallest share of its life an issued certificate has left
    /// (`ssi_csi_certificate_life_left_ratio`).
    pub certificate_life_left: FloatGauge,
    /// When the stalest volume was last found current, in Unix seconds
    /// (`ssi_csi_oldest_refresh_timestamp_seconds`).
    pub oldest_refresh: FloatGauge,
    /// `--rotation-interval`, for alerts that count intervals (`ssi_csi_rotation_interval_seconds`).
    pub rotation_interval: FloatGauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("ssi_csi");
        let csi_requests = Family::<OperationLabels, Counter>::default();
        registry.register(
            "requests",
            "CSI calls by operation, result and gRPC code",
            csi_requests.clone(),
        );
        let rotations = Family::<RotationLabels, Counter>::default();
        registry.register("rotations", "Volume rotations by result", rotations.clone());
        let rotation_cycle_seconds = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        registry.register(
            "rotation_cycle_seconds",
            "Duration of rotation cycles",
            rotation_cycle_seconds.clone(),
        );
        let store_requests = Family::<StoreLabels, Counter>::default();
        registry.register(
            "store_requests",
            "Logins and reads sent to the secret store, after retries",
            store_requests.clone(),
        );
        let mounts = Gauge::default();
        registry.register("mounts", "Volumes currently published", mounts.clone());
        let status_writes = Family::<StatusLabels, Counter>::default();
        registry.register(
            "status_writes",
            "Writes of this node's entries in SecretsStoreImports' status",
            status_writes.clone(),
        );
        for result in [Outcome::Ok, Outcome::Error] {
            drop(status_writes.get_or_create(&StatusLabels { result }));
        }
        let earliest_end = Family::<EndLabels, FloatGauge>::default();
        registry.register(
            "earliest_end_timestamp_seconds",
            "Earliest end of a lease, certificate or store token the node's volumes hold (NaN: none)",
            earliest_end.clone(),
        );
        for kind in END_KINDS {
            earliest_end
                .get_or_create(&EndLabels { kind })
                .set(f64::NAN);
        }
        let certificate_life_left = FloatGauge::default();
        certificate_life_left.set(f64::NAN);
        registry.register(
            "certificate_life_left_ratio",
            "Smallest share of its life a mounted certificate has left (NaN: none)",
            certificate_life_left.clone(),
        );
        let oldest_refresh = FloatGauge::default();
        oldest_refresh.set(f64::NAN);
        registry.register(
            "oldest_refresh_timestamp_seconds",
            "When the stalest volume was last found current in the store (NaN: no volume)",
            oldest_refresh.clone(),
        );
        let rotation_interval = FloatGauge::default();
        registry.register(
            "rotation_interval_seconds",
            "Time between two rotation cycles (--rotation-interval)",
            rotation_interval.clone(),
        );
        // Every series an alert watches exists from the start, at zero: an increase from 0 to 1
        // is seen, while a series that appears at 1 shows no increase at all.
        for operation in ["publish", "unpublish"] {
            let ok = OperationLabels {
                operation,
                result: Outcome::Ok,
                code: "ok",
            };
            drop(csi_requests.get_or_create(&ok));
            for code in ERROR_CODES {
                drop(csi_requests.get_or_create(&OperationLabels {
                    operation,
                    result: Outcome::Error,
                    code,
                }));
            }
        }
        for result in [
            Rotation::Changed,
            Rotation::Unchanged,
            Rotation::Failed,
            Rotation::Waiting,
        ] {
            drop(rotations.get_or_create(&RotationLabels { result }));
        }
        for operation in STORE_OPERATIONS {
            for result in [Outcome::Ok, Outcome::Error] {
                drop(store_requests.get_or_create(&StoreLabels { operation, result }));
            }
        }
        Metrics {
            registry,
            csi_requests,
            rotations,
            rotation_cycle_seconds,
            store_requests,
            mounts,
            status_writes,
            earliest_end,
            certificate_life_left,
            oldest_refresh,
            rotation_interval,
        }
    }
}

impl Metrics {
    /// Every metric in the Prometheus text format, for /metrics.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// The count of store calls of one kind, for tests and benchmarks.
    pub fn store_calls(&self, operation: &'static str) -> u64 {
        [Outcome::Ok, Outcome::Error]
            .into_iter()
            .map(|result| {
                self.store_requests
                    .get_or_create(&StoreLabels { operation, result })
                    .get()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_lowercase_and_bounded() {
        let metrics = Metrics::default();
        metrics
            .rotations
            .get_or_create(&RotationLabels {
                result: Rotation::Unchanged,
            })
            .inc();
        metrics
            .store_requests
            .get_or_create(&StoreLabels {
                operation: "login",
                result: Outcome::Ok,
            })
            .inc();
        let text = metrics.encode();
        assert!(
            text.contains("ssi_csi_rotations_total{result=\"unchanged\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("ssi_csi_store_requests_total{operation=\"login\",result=\"ok\"} 1"),
            "{text}"
        );
        assert_eq!(metrics.store_calls("login"), 1);
    }

    #[test]
    fn the_series_alerts_watch_exist_at_zero_from_the_start() {
        let text = Metrics::default().encode();
        for series in [
            "ssi_csi_rotations_total{result=\"failed\"} 0",
            "ssi_csi_requests_total{operation=\"publish\",result=\"error\",code=\"unavailable\"} 0",
            "ssi_csi_store_requests_total{operation=\"read\",result=\"error\"} 0",
        ] {
            assert!(text.contains(series), "{series} missing from:\n{text}");
        }
    }
}
