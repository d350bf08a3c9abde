//! `ssi-vault`: an async client for Vault-compatible secret stores (HashiCorp Vault, OpenBao,
//! Deckhouse Stronghold), speaking just what pods need: Kubernetes-auth login and secret reads.
//!
//! Design choices:
//! - No kube dependency: the caller hands over the pod's ServiceAccount JWT, so the same client
//!   serves the privileged CSI driver (which gets the token from kubelet) and the tiny injector
//!   (which reads it from a file). Whose identity is used is always the caller's explicit choice.
//! - Secret material never sits in a type that prints it: JWTs and Vault tokens are
//!   `secrecy::SecretString`, values are [`SecretValue`], and [`Secret`]'s `Debug` lists keys only.
//!   Error messages carry paths, keys, HTTP status and the store's own `errors` text, never values.
//! - Retries are bounded and only where repeating is safe and useful: transport errors, 5xx (not
//!   501) and 429, with exponential backoff and full jitter so that many pods restarting together
//!   do not hammer a recovering store in lockstep.
//! - [`Session`] owns one identity's login: it reuses the Vault token until shortly before it
//!   expires, logs in again when the store answers 403 (revoked token), and lets the caller swap in
//!   the freshest ServiceAccount JWT.

mod claims;
mod client;
mod error;
mod retry;
mod secret;
mod session;

pub use claims::{TokenIdentity, token_identity};
pub use client::{Client, DEFAULT_MAX_RESPONSE_BYTES, Lease, Observer, StoreConfig, VaultToken};
pub use error::{Error, Operation};
pub use retry::RetryPolicy;
pub use secret::{Secret, SecretValue};
pub use session::{Session, TokenUsed};
pub use ssi_core::{AuthMethod, Login};

pub use secrecy::{ExposeSecret, SecretString};

/// Longest lease or token life taken from a store's reply (ten years): longer ones are read as
/// this, so that no reply can overflow the time arithmetic of its holder.
pub const MAX_TTL: std::time::Duration = std::time::Duration::from_secs(10 * 365 * 24 * 3600);

/// A lease or token life in seconds from a store's reply, capped at [`MAX_TTL`].
pub(crate) fn ttl_from_secs(seconds: u64) -> std::time::Duration {
    std::time::Duration::from_secs(seconds).min(MAX_TTL)
}
