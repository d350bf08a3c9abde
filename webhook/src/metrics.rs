//! Prometheus metrics. Labels are bounded: a kind outside the served set counts as "other", and
//! no namespace, name or SSI ever becomes a label.

use crate::review::Verdict;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::fmt::Write;

/// The kinds the webhook configuration sends; anything else is "other".
const KINDS: [&str; 7] = [
    "Pod",
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "Job",
    "CronJob",
];

/// The object kind as a bounded label value.
pub fn kind_label(kind: &str) -> &'static str {
    KINDS
        .into_iter()
        .find(|known| *known == kind)
        .unwrap_or("other")
}

impl EncodeLabelValue for Verdict {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(match self {
            Verdict::Unchanged => "unchanged",
            Verdict::Patched => "patched",
            Verdict::Denied => "denied",
            Verdict::Invalid => "invalid",
        })
    }
}

/// Labels of `ssi_webhook_admission_reviews_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReviewLabels {
    /// The object kind, from [`kind_label`].
    pub kind: &'static str,
    /// How the review was answered.
    pub verdict: Verdict,
}

/// Labels of `ssi_webhook_certificate_reloads_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `ok`, or `error` when the old pair was kept.
    pub result: &'static str,
}

/// The webhook's metrics, served on `/metrics`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Admission reviews answered, by object kind and verdict.
    pub reviews: Family<ReviewLabels, Counter>,
    /// Time from a review's body read to its answer, SSI lookups included.
    pub review_seconds: Histogram,
    /// Serving certificate changes picked up or refused.
    pub certificate_reloads: Family<ReloadLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("ssi_webhook");
        let reviews = Family::<ReviewLabels, Counter>::default();
        registry.register(
            "admission_reviews",
            "Admission reviews answered, by object kind and verdict",
            reviews.clone(),
        );
        let review_seconds = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        registry.register(
            "admission_review_seconds",
            "Time from a review's body read to its answer, SSI lookups included",
            review_seconds.clone(),
        );
        let certificate_reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "certificate_reloads",
            "Serving certificate changes picked up (ok) or refused, keeping the old pair (error)",
            certificate_reloads.clone(),
        );
        // The alert watches refusals: the series exist from the start, at zero, so that the
        // first one is an increase.
        for result in ["ok", "error"] {
            drop(certificate_reloads.get_or_create(&ReloadLabels { result }));
        }
        Metrics {
            registry,
            reviews,
            review_seconds,
            certificate_reloads,
        }
    }
}

impl Metrics {
    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_bounded_and_verdicts_lowercase() {
        let metrics = Metrics::default();
        for kind in ["Deployment", "Gadget"] {
            metrics
                .reviews
                .get_or_create(&ReviewLabels {
                    kind: kind_label(kind),
                    verdict: Verdict::Patched,
                })
                .inc();
        }
        let text = metrics.encode();
        assert!(
            text.contains(
                "ssi_webhook_admission_reviews_total{kind=\"Deployment\",verdict=\"patched\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "ssi_webhook_admission_reviews_total{kind=\"other\",verdict=\"patched\"} 1"
            ),
            "{text}"
        );
    }

    #[test]
    fn certificate_refusals_are_counted_from_zero() {
        let text = Metrics::default().encode();
        assert!(
            text.contains("ssi_webhook_certificate_reloads_total{result=\"error\"} 0"),
            "{text}"
        );
    }
}
