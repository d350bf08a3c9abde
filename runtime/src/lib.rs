//! What the two servers, ssi-csi and ssi-webhook, share: how they log, how they learn to stop,
//! and the admin endpoints a kubelet probe and Prometheus call. One copy, so that they cannot
//! drift apart (they had: two texts for "not ready", two names for the admin address variable).

pub mod admin;
pub mod logging;
pub mod shutdown;
