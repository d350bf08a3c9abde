//! Prometheus metrics. Labels are bounded enums only: never a pod, namespace, SSI or path.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::fmt::Write;

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum Outcome {
    Ok,
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub operation: &'static str,
    pub result: Outcome,
    /// gRPC code label of a failure, "ok" otherwise.
    pub code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum Rotation {
    Changed,
    Unchanged,
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RotationLabels {
    pub result: Rotation,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreLabels {
    pub operation: &'static str,
    pub result: Outcome,
}

#[derive(Debug)]
pub struct Metrics {
    pub registry: Registry,
    pub csi_requests: Family<OperationLabels, Counter>,
    pub rotations: Family<RotationLabels, Counter>,
    pub rotation_cycle_seconds: Histogram,
    pub store_requests: Family<StoreLabels, Counter>,
    pub mounts: Gauge,
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
        Metrics {
            registry,
            csi_requests,
            rotations,
            rotation_cycle_seconds,
            store_requests,
            mounts,
        }
    }
}

impl Metrics {
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
}
