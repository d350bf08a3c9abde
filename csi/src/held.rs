//! Secrets a volume keeps between rotation cycles instead of asking the store again: leased
//! credentials (a database user) and issued ones (a certificate from `pki/issue`).
//!
//! Static secrets are read again every cycle and shared by the volumes of one identity. A
//! leased or issued secret belongs to one volume: two pods never share a database user, and a
//! volume's certificate, key and CA come from one response. It is kept until two thirds of its
//! life have passed; then a renewable lease is renewed, and only a secret that cannot be
//! renewed any more (max TTL reached, renewal refused, a certificate) is replaced by a new one,
//! while the old one still works.
//!
//! A lease lives only as long as the Vault token that obtained it. The session keeps that
//! token alive (renewing it) for as long as the volume holds the lease; a token that cannot be
//! kept (a driver restart forgets it, a new login replaces it) puts a deadline on the lease, and
//! the secret is replaced before it.

use serde::{Deserialize, Serialize};
use ssi_core::ssi::{FileSource, Method};
use ssi_vault::Secret;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// One distinct request of a volume's SecretsStoreImport: files naming the same one share its
/// response.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Request {
    /// API path below `/v1/`.
    pub path: String,
    /// `GET` reads, `POST` issues.
    pub method: Method,
    /// The JSON body of a `POST`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub args: BTreeMap<String, String>,
}

impl Request {
    /// A plain read of `path`.
    pub fn get(path: &str) -> Request {
        Request {
            path: path.to_owned(),
            method: Method::Get,
            args: BTreeMap::new(),
        }
    }

    /// What a file's `source` asks for.
    pub fn of(source: &FileSource) -> Request {
        Request {
            path: source.path.clone(),
            method: source.method(),
            args: source.args.clone(),
        }
    }
}

/// A lease the store attached to a secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The lease's id: with a token, a handle on the credentials, so never logged.
    pub id: String,
    /// Whether the store said it can be renewed.
    pub renewable: bool,
    /// The duration first granted, asked for again at each renewal.
    #[serde(with = "seconds")]
    pub duration: Duration,
}

impl std::fmt::Debug for Lease {
    /// Everything but the id, which with a token is a handle on the credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("renewable", &self.renewable)
            .field("duration", &self.duration)
            .finish_non_exhaustive()
    }
}

/// A secret a volume keeps. What of it is saved in the volume's record: everything but the
/// value, so that a restarted driver goes on renewing the lease and revokes it at unpublish.
#[derive(Clone, Serialize, Deserialize)]
pub struct Held {
    /// What was asked.
    pub request: Request,
    /// The secret. `None` after a driver restart: the state never holds values, the volume's
    /// files do.
    #[serde(skip)]
    pub secret: Option<Arc<Secret>>,
    /// The store's lease, if it gave one (a certificate issued without one has none).
    pub lease: Option<Lease>,
    /// When the current period began: the secret obtained or its lease last renewed.
    #[serde(with = "unix")]
    pub since: SystemTime,
    /// When the secret stops working by itself (the lease's end, the certificate's notAfter);
    /// `None` for neither.
    #[serde(with = "unix_opt")]
    pub until: Option<SystemTime>,
    /// The session login whose token obtained the lease, while the session keeps that token;
    /// `None` once it is gone. Saved: a restarted driver that kept the token (see
    /// [`crate::tokens`]) goes on with it.
    #[serde(default)]
    pub token_login: Option<u64>,
    /// When that token expires as last seen: the lease dies with it unless it is renewed.
    #[serde(with = "unix_opt")]
    pub token_until: Option<SystemTime>,
    /// When the session will renew that token next (two thirds of its life), so the volume
    /// looks again before it lapses.
    #[serde(skip)]
    pub token_renew_at: Option<SystemTime>,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held")
            .field("path", &self.request.path)
            .field("method", &self.request.method)
            .field("leased", &self.lease.is_some())
            .field("until", &self.until)
            .field("token_until", &self.token_until)
            .finish_non_exhaustive()
    }
}

impl PartialEq for Held {
    /// The same request, lease and dates; the value is not compared (it is not saved either).
    fn eq(&self, other: &Held) -> bool {
        self.request == other.request
            && self.lease == other.lease
            && self.since == other.since
            && self.until == other.until
            && self.token_until == other.token_until
            && self.token_login == other.token_login
    }
}

impl Eq for Held {}

/// The secrets one volume keeps, by request.
pub type Holdings = HashMap<Request, Held>;

impl Held {
    /// A secret just obtained with the token of session login `login`, expiring at
    /// `token_until` (renewal due at `token_renew_at`); `None` when nothing about it has to
    /// be kept (a static secret, read again every cycle).
    pub fn of(
        request: &Request,
        secret: Arc<Secret>,
        token: TokenState,
        now: SystemTime,
    ) -> Option<Held> {
        let lease = secret
            .lease_id
            .as_ref()
            .zip(secret.lease_duration)
            .map(|(id, duration)| Lease {
                id: id.clone(),
                renewable: secret.renewable,
                duration,
            });
        // NB: a certificate says when it ends in its `expiration` field (unix seconds); a lease
        // ends with its duration, whichever comes first.
        let expiration = secret
            .value("expiration")
            .ok()
            .and_then(|v| std::str::from_utf8(v.expose()).ok()?.parse::<u64>().ok())
            .map(from_unix);
        let lease_end = lease.as_ref().map(|l| now + l.duration);
        let until = match (lease_end, expiration) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if lease.is_none() && request.method == Method::Get {
            return None;
        }
        let tied = lease.is_some();
        Some(Held {
            request: request.clone(),
            secret: Some(secret),
            lease,
            since: now,
            until,
            token_login: tied.then_some(token.login),
            token_until: token.until.filter(|_| tied),
            token_renew_at: token.renew_at.filter(|_| tied),
        })
    }

    /// Notes the session's token now. The token that obtained the lease, renewed, extends its
    /// deadline; any other (a new login, a restarted driver) is no help, and the lease's
    /// deadline stays the old token's last known expiry.
    pub fn tie_to(&mut self, token: TokenState) {
        if self.token_login == Some(token.login) {
            self.token_until = token.until;
            self.token_renew_at = token.renew_at;
        } else {
            self.token_login = None;
            self.token_renew_at = None;
        }
    }

    /// When the secret stops working: its own end or its token's, whichever comes first.
    pub fn deadline(&self) -> Option<SystemTime> {
        let token_until = self.lease.as_ref().and(self.token_until);
        match (self.until, token_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// When the volume should look at this secret again: two thirds into its life, or when
    /// its token needs renewing, whichever comes first; `None` for never.
    pub fn due_at(&self) -> Option<SystemTime> {
        let own = self.deadline().map(|deadline| self.renewal_time(deadline));
        let token = self.token_login.and(self.token_renew_at);
        match (own, token) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether it is time to renew or replace the secret itself (not only to look again).
    pub fn needs_renewal(&self, now: SystemTime) -> bool {
        self.deadline()
            .is_some_and(|deadline| now >= self.renewal_time(deadline))
    }

    /// Two thirds of the way from `since` to `deadline`, and never sooner than
    /// [`MIN_RENEWAL_INTERVAL`] after `since` for a renewal, [`MIN_REISSUE_INTERVAL`] for a new
    /// issue: a lease or certificate of a second (a store's or an SSI's `ttl`) cannot make the
    /// driver spin, nor have the store generate a key every two seconds.
    fn renewal_time(&self, deadline: SystemTime) -> SystemTime {
        let life = deadline.duration_since(self.since).unwrap_or_default();
        let floor = if self.lease.as_ref().is_some_and(|l| l.renewable) {
            MIN_RENEWAL_INTERVAL
        } else {
            MIN_REISSUE_INTERVAL
        };
        self.since + (life / 3 * 2).max(floor)
    }

    /// Whether renewing the lease can extend it: renewable, not lapsed, and either its token is
    /// kept alive or the lease ends before that token does (a restarted driver renews the
    /// leases it recovered up to their old token's end, then replaces them).
    pub fn can_renew(&self, now: SystemTime) -> bool {
        let token_outlives_lease = match (self.until, self.token_until) {
            (Some(until), Some(token_until)) => until < token_until,
            (_, None) => true,
            (None, Some(_)) => false,
        };
        self.lease.as_ref().is_some_and(|l| l.renewable)
            && self.deadline().is_none_or(|deadline| now < deadline)
            && (self.token_login.is_some() || token_outlives_lease)
    }
}

/// The shortest time between two renewals of one secret.
pub const MIN_RENEWAL_INTERVAL: Duration = Duration::from_secs(2);

/// The least time between two issues of a secret that cannot be renewed (a certificate, a
/// non-renewable lease): each costs the store a key and the pod an Event.
pub const MIN_REISSUE_INTERVAL: Duration = Duration::from_secs(10);

/// A unix time from a store's reply or a record, capped at the year 2100 so that no value can
/// overflow the clock's arithmetic.
fn from_unix(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs.min(4_102_444_800))
}

/// The holdings as the volume's record saves them, in a stable order.
pub fn to_record(holdings: &Holdings) -> Vec<Held> {
    let mut list: Vec<Held> = holdings.values().cloned().collect();
    list.sort_by(|a, b| {
        a.request
            .path
            .cmp(&b.request.path)
            .then(a.since.cmp(&b.since))
    });
    list
}

/// When the earliest of the holdings wants the volume looked at again.
pub fn next_due(holdings: &Holdings) -> Option<SystemTime> {
    holdings.values().filter_map(Held::due_at).min()
}

/// The session's token as a lease sees it: the token it was obtained with, or the one in use.
pub use ssi_vault::TokenUsed as TokenState;

mod seconds {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(|secs| Duration::from_secs(secs).min(ssi_vault::MAX_TTL))
    }
}

mod unix {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::SystemTime;

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        let secs = t
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        s.serialize_u64(secs)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        u64::deserialize(d).map(super::from_unix)
    }
}

mod unix_opt {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::SystemTime;

    pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => super::unix::serialize(t, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(super::from_unix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn secret(body: serde_json::Value) -> Arc<Secret> {
        Arc::new(Secret::from_response("database/creds/app", body).unwrap())
    }

    const T0: u64 = 1_800_000_000;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(T0 + secs)
    }

    fn token(login: u64, until: u64) -> TokenState {
        TokenState {
            login,
            until: Some(at(until)),
            renew_at: Some(at(until * 2 / 3)),
        }
    }

    fn leased() -> Arc<Secret> {
        secret(
            json!({"lease_id": "database/creds/app/abc", "lease_duration": 90,
            "renewable": true, "data": {"username": "u", "password": "p"}}),
        )
    }

    #[test]
    fn static_reads_are_not_held_but_leases_and_issues_are() {
        let kv = secret(json!({"lease_duration": 2764800, "data": {"a": "b"}}));
        assert!(Held::of(&Request::get("kv/app"), kv.clone(), token(1, 600), at(0)).is_none());
        let issued = Request {
            method: Method::Post,
            ..Request::get("pki/issue/web")
        };
        assert!(Held::of(&issued, kv, token(1, 600), at(0)).is_some());
        let held = Held::of(
            &Request::get("database/creds/app"),
            leased(),
            token(1, 600),
            at(0),
        )
        .expect("a lease is held");
        assert_eq!(held.until, Some(at(90)));
        assert_eq!(held.due_at(), Some(at(60)), "two thirds of the lease");
        assert!(!held.needs_renewal(at(59)) && held.needs_renewal(at(60)));
        assert!(held.can_renew(at(60)));
    }

    #[test]
    fn no_reply_or_record_can_overflow_the_clock_or_make_the_driver_spin() {
        let hostile = secret(json!({"lease_id": "database/creds/app/x",
            "lease_duration": u64::MAX, "renewable": true,
            "data": {"expiration": u64::MAX}}));
        let held = Held::of(&Request::get(DB), hostile, token(1, 600), at(0)).unwrap();
        assert!(held.due_at().is_some());
        let tiny = secret(
            json!({"lease_id": "database/creds/app/y", "lease_duration": 1,
            "renewable": true, "data": {}}),
        );
        let held = Held::of(&Request::get(DB), tiny, token(1, 600), at(0)).unwrap();
        assert_eq!(held.due_at(), Some(at(2)), "not sooner than two seconds");
        let record = r#"{"request": {"path": "a", "method": "GET"}, "lease": {"id": "a/b",
            "renewable": true, "duration": 18446744073709551615}, "since": 18446744073709551615,
            "until": 18446744073709551615, "token_until": null}"#;
        let recovered: Held = serde_json::from_str(record).unwrap();
        assert!(recovered.due_at().is_some());
    }

    const DB: &str = "database/creds/app";

    #[test]
    fn a_certificate_is_due_two_thirds_into_its_validity() {
        let cert = secret(json!({"data": {"certificate": "c", "private_key": "k",
            "expiration": T0 + 300}}));
        let issued = Request {
            method: Method::Post,
            ..Request::get("pki/issue/web")
        };
        let held = Held::of(&issued, cert, token(1, 600), at(0)).unwrap();
        assert_eq!(held.until, Some(at(300)));
        assert_eq!(held.due_at(), Some(at(200)));
        assert!(
            !held.can_renew(at(250)),
            "no lease to renew: it is issued anew"
        );
        // A certificate of one second (`args: {ttl: 1s}`) is issued anew every 10 s, not 2.
        let brief = secret(json!({"data": {"certificate": "c", "private_key": "k",
            "expiration": T0 + 1}}));
        let held = Held::of(&issued, brief, token(1, 600), at(0)).unwrap();
        assert_eq!(held.due_at(), Some(at(MIN_REISSUE_INTERVAL.as_secs())));
        assert!(!held.needs_renewal(at(9)) && held.needs_renewal(at(10)));
    }

    #[test]
    fn a_lease_whose_token_is_gone_is_replaced_before_the_token_expires() {
        let mut held = Held::of(
            &Request::get("database/creds/app"),
            leased(),
            token(1, 30),
            at(0),
        )
        .unwrap();
        assert_eq!(
            held.due_at(),
            Some(at(20)),
            "the token's renewal comes first"
        );
        held.tie_to(token(1, 120));
        assert_eq!(held.token_until, Some(at(120)), "the same token, renewed");
        assert_eq!(held.due_at(), Some(at(60)));
        held.tie_to(token(2, 600));
        assert_eq!(
            held.token_login, None,
            "another login's token does not keep it"
        );
        assert_eq!(held.deadline(), Some(at(90)));
        assert!(held.can_renew(at(61)), "the lease ends before its token");
        held.until = Some(at(150));
        assert_eq!(held.deadline(), Some(at(120)), "the token ends first now");
        assert!(
            !held.can_renew(at(100)),
            "renewing it buys nothing past its token"
        );
        held.until = Some(at(90));

        // What a restart recovers: no value, no token, the deadlines.
        let saved = serde_json::to_string(&held).unwrap();
        assert!(
            !saved.contains("\"u\"") && !saved.contains("password"),
            "{saved}"
        );
        let mut recovered: Held = serde_json::from_str(&saved).unwrap();
        assert!(recovered.secret.is_none());
        recovered.tie_to(token(7, 600));
        assert_eq!(recovered.token_login, None);
        assert_eq!(recovered.deadline(), Some(at(90)));
        assert_eq!(recovered.lease, held.lease);
    }
}
