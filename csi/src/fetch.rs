//! From a mounted volume to its files: the SecretsStoreImport from the pod's namespace, the
//! store it allows, a login as the pod's ServiceAccount, one read per distinct path.

use crate::error::Error;
use crate::held::{Held, Holdings, Request, TokenState};
use crate::metrics::{Metrics, Outcome, StoreLabels};
use crate::state::Record;
use crate::template::Renderer;
use crate::tokens::TokenStore;
use crate::writer::{self, Files};
use base64::Engine;
use kube::Api;
use secrecy::{ExposeSecret, SecretString};
use ssi_core::SecretsStoreImport;
use ssi_core::ssi::Method;
use ssi_core::{AuthMethod, Connection, Login};
use ssi_vault::{Client, Operation, Secret, Session, StoreConfig};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::OnceCell;
use url::Url;

/// Tokens kubelet handed over, by audience.
pub type Tokens = HashMap<String, SecretString>;

/// What the cluster operator configured: defaults and limits for every SecretsStoreImport.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Store used when an SSI sets no `spec.address`.
    pub default_address: Option<Url>,
    /// Other stores an SSI may name in `spec.address`; the default is always allowed.
    pub allowed_addresses: Vec<Url>,
    /// The auth method and its mount when an SSI names neither.
    pub login: ssi_core::LoginDefaults,
    /// Vault namespace when an SSI sets none.
    pub namespace: Option<String>,
    /// PEM bundle of the CAs trusted when an SSI sets no `caCert`; none means the system's.
    pub ca_pem: Option<String>,
    /// Whether an SSI may set `skipTLSVerify: true`.
    pub allow_skip_tls_verify: bool,
    /// Audience of the pod token when an SSI sets none; empty is the Kubernetes API's own.
    pub token_audience: String,
    /// Bound on each request to the store.
    pub timeout: Duration,
    /// Largest store reply read, in bytes.
    pub max_response_bytes: usize,
    /// The most one volume may hold at once, its secrets and its files: twice its tmpfs.
    pub volume_limit: usize,
}

/// What the volumes being fetched may hold at once, their secrets and their files (unless one
/// volume may hold more, see [`Settings::volume_limit`]): with the store replies being parsed
/// and a template's child, this is what bounds the driver's memory (docs/security.md).
pub const VOLUME_MEMORY: usize = 16 * 1024 * 1024;

/// What a fetch reserves of [`VOLUME_MEMORY`] first: most volumes hold a few kilobytes. One
/// that needs more gives back what it obtained and starts again with its whole limit reserved,
/// which its later fetches reserve at once.
pub const FIRST_RESERVATION: usize = 256 * 1024;

/// The most of a cycle's reads kept for other volumes of the same identity once the volumes that
/// read them are done; beyond it a read is shared only while a volume still holds it.
pub const CYCLE_KEPT: usize = 2 * 1024 * 1024;

/// What a volume may hold while it also holds its current files, read back after a restart:
/// half as much again as its limit (its tmpfs once more).
fn recovering_limit(volume_limit: usize) -> usize {
    volume_limit.saturating_add(volume_limit / 2)
}

/// Permits of [`Fetcher::memory`] for `bytes`.
fn kib(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX)
}

/// What one fetch holds of its reservation.
struct Allowance {
    reserved: usize,
    limit: usize,
    spent: usize,
    /// The most `spent` was.
    peak: usize,
    /// Set when the fetch needed more than its reservation but no more than its limit.
    outgrown: bool,
    /// Set when the holdings were given back to the identity that had obtained them.
    released: bool,
}

impl Allowance {
    /// Nothing spent yet of `reserved`, which may grow to `limit`.
    fn new(reserved: usize, limit: usize) -> Allowance {
        Allowance {
            reserved,
            limit,
            spent: 0,
            peak: 0,
            outgrown: false,
            released: false,
        }
    }

    /// Counts `bytes` more held by the volume, or refuses when they are beyond its reservation.
    fn spend(&mut self, bytes: usize, ssi_name: &str) -> Result<(), Error> {
        self.spent = self.spent.saturating_add(bytes);
        self.peak = self.peak.max(self.spent);
        if self.spent <= self.reserved {
            return Ok(());
        }
        self.outgrown = self.spent <= self.limit && self.reserved < self.limit;
        Err(Error::TooLarge {
            ssi: ssi_name.to_owned(),
            limit: self.limit,
        })
    }

    /// Gives back `bytes` the volume no longer holds.
    fn refund(&mut self, bytes: usize) {
        self.spent = self.spent.saturating_sub(bytes);
    }
}

/// Everything that decides whose Vault token it is: a token is reused only for the same key.
/// Saved with a volume's leases, so that a restarted driver renews and revokes them as the
/// identity that obtained them, whatever its SSI names by then.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdentityKey {
    store: Connection,
    /// NB: saved under this name before there was a choice of method; records from then have
    /// no `auth_method` and are the Kubernetes method's.
    auth_path: String,
    role: String,
    #[serde(default, skip_serializing_if = "is_kubernetes")]
    auth_method: AuthMethod,
    service_account_namespace: String,
    service_account: String,
    /// The audience the SSI names for the pod's token, if it names one: two SSIs of one
    /// ServiceAccount and role that ask for tokens of different audiences log in (and fail)
    /// apart, and share no session or read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    audience: Option<String>,
}

/// NB: what `#[derive(Hash)]` gave before there was a choice of method, and the method after
/// only when it is not Kubernetes: [`crate::tokens`] still finds token files named by that hash.
impl std::hash::Hash for IdentityKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.store.hash(state);
        self.auth_path.hash(state);
        self.role.hash(state);
        self.service_account_namespace.hash(state);
        self.service_account.hash(state);
        if self.auth_method != AuthMethod::Kubernetes {
            self.auth_method.hash(state);
        }
        if let Some(audience) = &self.audience {
            audience.hash(state);
        }
    }
}

fn is_kubernetes(method: &AuthMethod) -> bool {
    *method == AuthMethod::Kubernetes
}

impl IdentityKey {
    /// Every field in one line, for checking that a saved token is this identity's. The
    /// Kubernetes method is not spelled out, so that tokens saved before there was a choice
    /// keep their names; another method comes first, where a Kubernetes identity has its
    /// store's `http` address, so that no choice of the other fields can spell the same line.
    /// An audience the SSI names comes last, quoted, after the ServiceAccount's name, which
    /// has no `|` or `"`.
    pub fn spelled_out(&self) -> String {
        let method = match self.auth_method {
            AuthMethod::Kubernetes => String::new(),
            other => format!("{other}|"),
        };
        let audience = self
            .audience
            .as_ref()
            .map_or_else(String::new, |audience| format!("|{audience:?}"));
        format!(
            "{method}{}|{:?}|{:?}|{}|{}|{}|{}|{}{audience}",
            self.store.address,
            self.store.namespace,
            self.store.ca_pem,
            self.store.skip_tls_verify,
            self.auth_path,
            self.role,
            self.service_account_namespace,
            self.service_account
        )
    }

    /// Where and as what this identity logs in.
    pub fn login(&self) -> Login {
        Login {
            method: self.auth_method,
            mount: self.auth_path.clone(),
            role: self.role.clone(),
        }
    }
}

#[cfg(test)]
impl IdentityKey {
    /// The Kubernetes-auth identity of ServiceAccount `ns/service_account` as role `app` at
    /// one store, for tests that need one without an SSI.
    pub(crate) fn made_up(service_account: &str) -> IdentityKey {
        IdentityKey {
            store: Connection::to("https://vault.example.com:8200"),
            auth_path: "kubernetes".into(),
            role: "app".into(),
            auth_method: AuthMethod::Kubernetes,
            service_account_namespace: "ns".into(),
            service_account: service_account.into(),
            audience: None,
        }
    }
}

/// A read shared by the volumes of one identity during a cycle. A leased secret must not be:
/// the first volume takes it, the others read their own.
struct SharedRead {
    secret: Arc<Secret>,
    token: TokenState,
    taken: AtomicBool,
    /// Whether the cycle decided to keep it (or not) yet.
    weighed: AtomicBool,
}

/// One lookup shared by everybody who needs it during a cycle: the first caller fills it.
type Shared<K, V> = Mutex<HashMap<K, Arc<OnceCell<V>>>>;

/// Lookups shared by every volume of one rotation cycle: each SSI is read from the API once,
/// each (identity, path) from the store once. [`Cycle::in_flight`] shares a lookup only while
/// it is under way, for publishes that arrive together.
#[derive(Default)]
pub struct Cycle {
    ssis: Shared<(String, String), Result<Arc<SecretsStoreImport>, SsiLookup>>,
    reads: Shared<(IdentityKey, String), Result<Arc<SharedRead>, Arc<ssi_vault::Error>>>,
    /// Bytes of the reads kept in `reads`, at most [`CYCLE_KEPT`].
    kept: std::sync::atomic::AtomicUsize,
    /// Whether a lookup is forgotten as soon as it is done (see [`Cycle::in_flight`]).
    in_flight_only: bool,
}

impl std::fmt::Debug for Cycle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cycle").finish_non_exhaustive()
    }
}

#[derive(Clone)]
enum SsiLookup {
    NotFound,
    Failed(Arc<kube::Error>),
}

impl Cycle {
    /// Lookups shared by the publishes that need them while they are under way: a publish
    /// that comes while the same SSI, or the same identity's path, is being read waits for that
    /// read instead of sending its own, and one that comes after it reads again (a pod never
    /// starts with a value read before it came, unless that read was still in flight). Lives
    /// as long as the driver; holds only what is in flight.
    pub fn in_flight() -> Cycle {
        Cycle {
            in_flight_only: true,
            ..Cycle::default()
        }
    }

    /// Called by each caller once it has `cell`'s value: a cycle that shares lookups only while
    /// in flight forgets it now (whoever waited for it has it).
    fn looked_up<K: std::hash::Hash + Eq, V>(
        &self,
        map: &Shared<K, V>,
        key: &K,
        cell: &Arc<OnceCell<V>>,
    ) {
        if self.in_flight_only {
            forget(map, key, cell);
        }
    }

    /// Keeps `cell` (of `bytes`) in `map` for the cycle's other volumes while the cycle keeps
    /// less than [`CYCLE_KEPT`] of reads and SSIs; otherwise forgets it, so that it is shared
    /// only while a volume holds it.
    fn keep_or_forget<K: std::hash::Hash + Eq, V>(
        &self,
        map: &Shared<K, V>,
        key: &K,
        cell: &Arc<OnceCell<V>>,
        bytes: usize,
    ) {
        if self.in_flight_only {
            // Forgotten by looked_up once its value is there: not before, or a publish that
            // comes meanwhile would look it up again.
            return;
        }
        let before = self.kept.fetch_add(bytes, Ordering::Relaxed);
        if before.saturating_add(bytes) <= CYCLE_KEPT {
            return;
        }
        self.kept.fetch_sub(bytes, Ordering::Relaxed);
        forget(map, key, cell);
    }
}

/// Removes `cell` from `map` (if it is still the one there): later callers look again.
fn forget<K: std::hash::Hash + Eq, V>(map: &Shared<K, V>, key: &K, cell: &Arc<OnceCell<V>>) {
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
    if map.get(key).is_some_and(|kept| Arc::ptr_eq(kept, cell)) {
        map.remove(key);
    }
}

impl Cycle {
    /// The cell of `key` in `map`, made if missing. A cycle that shares lookups only while in
    /// flight first drops the cells nobody holds: those whose lookup was cancelled (kubelet
    /// gave up on a publish) with nobody waiting, which no `looked_up` would ever remove.
    fn cell<K: std::hash::Hash + Eq, V>(&self, map: &Shared<K, V>, key: K) -> Arc<OnceCell<V>> {
        let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
        if self.in_flight_only {
            // NB: exact, as every holder got its clone under this lock.
            map.retain(|_, cell| Arc::strong_count(cell) > 1);
        }
        map.entry(key).or_default().clone()
    }
}

/// What a fetch gives: the files, the identity they were fetched as, and what the volume's
/// holdings become if the files are written.
#[derive(Debug)]
pub struct Fetched {
    /// The volume's files.
    pub files: Files,
    /// The volume's share of [`VOLUME_MEMORY`], held until the files are written.
    pub memory: tokio::sync::OwnedSemaphorePermit,
    /// Whose identity fetched them.
    pub identity: IdentityKey,
    /// The leased and issued secrets the volume keeps once the files are written.
    pub holdings: Holdings,
    /// What was asked of the store: every path (and method) the volume's files come from.
    pub reads: Vec<Request>,
}

/// Fetches a volume's files as its pod. Store clients and Vault sessions are kept across
/// volumes and cycles, one per store and one per identity.
pub struct Fetcher {
    kube: kube::Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    clients: Mutex<HashMap<Connection, Client>>,
    sessions: Mutex<HashMap<IdentityKey, Arc<Session>>>,
    tokens: TokenStore,
    renderer: Renderer,
    /// [`VOLUME_MEMORY`] (or one volume's limit if larger), in KiB.
    memory: Arc<tokio::sync::Semaphore>,
    /// What the volumes that outgrew [`FIRST_RESERVATION`] reserve, by volume id.
    reservations: Mutex<HashMap<String, usize>>,
    /// How many nodes' entries each SSI's status listed when last read (for the status writer;
    /// at most [`LISTED_KEPT`] SSIs).
    listed: Mutex<HashMap<(String, String), crate::status::Listed>>,
    /// This node's name, as its entries in the SSIs' status name it.
    node: String,
}

/// The most SSIs whose listed entries the fetcher remembers; beyond, it forgets them all (the
/// next read of each tells again).
const LISTED_KEPT: usize = 4096;

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Fetcher {
    /// A fetcher with no clients or sessions yet: each is created on first use.
    pub fn new(kube: kube::Client, settings: Settings, metrics: Arc<Metrics>) -> Fetcher {
        let memory = VOLUME_MEMORY
            .max(recovering_limit(settings.volume_limit))
            .div_ceil(1024);
        Fetcher {
            kube,
            settings,
            metrics,
            clients: Mutex::default(),
            sessions: Mutex::default(),
            tokens: TokenStore::disabled(),
            // The running binary is the driver's: it renders when started as the child.
            renderer: Renderer::new("/proc/self/exe"),
            memory: Arc::new(tokio::sync::Semaphore::new(memory)),
            reservations: Mutex::default(),
            listed: Mutex::default(),
            node: String::new(),
        }
    }

    /// Reads the SSIs' status as `node`'s (see [`Fetcher::listed`]).
    pub fn for_node(self, node: String) -> Fetcher {
        Fetcher { node, ..self }
    }

    /// What SSI `key`'s status held when it was last read.
    pub fn listed(&self, key: &(String, String)) -> Option<crate::status::Listed> {
        self.listed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .copied()
    }

    fn remember_listed(&self, key: &(String, String), listed: crate::status::Listed) {
        let mut known = self.listed.lock().unwrap_or_else(|p| p.into_inner());
        if known.len() >= LISTED_KEPT && !known.contains_key(key) {
            known.clear();
        }
        known.insert(key.clone(), listed);
    }

    /// Keeps the tokens that hold leases in `tokens`, for a restart (see [`crate::tokens`]).
    pub fn with_token_store(self, tokens: TokenStore) -> Fetcher {
        Fetcher { tokens, ..self }
    }

    /// The files of `record`'s volume, fetched as the pod with one of `tokens`.
    ///
    /// `holdings` are the leased and issued secrets the volume keeps (see [`crate::held`]);
    /// what they become comes back in [`Fetched::holdings`], for [`Fetcher::settle`] once the
    /// files are written or not. `previous` is where the volume's files are, read only for
    /// holdings recovered after a restart, whose values the driver does not have (counted
    /// against the volume's memory like everything it holds). `held_by` is the
    /// identity the holdings were obtained as: if the SSI now names another, they are given
    /// back through that identity and obtained anew.
    pub async fn fetch(
        &self,
        record: &Record,
        tokens: &Tokens,
        cycle: &Cycle,
        holdings: &Holdings,
        previous: Option<&std::path::Path>,
        held_by: Option<&IdentityKey>,
    ) -> Result<Fetched, Error> {
        // NB: a volume that must read its current files (after a restart) reserves its whole
        // limit first, which holds them too: they are read before they can be counted.
        let (limit, mut reserved) = match previous {
            Some(_) => {
                let limit = recovering_limit(self.settings.volume_limit);
                (limit, limit)
            }
            None => {
                let limit = self.settings.volume_limit;
                let remembered = self
                    .reservations
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&record.volume_id)
                    .copied();
                (limit, remembered.unwrap_or(FIRST_RESERVATION).min(limit))
            }
        };
        let none = Holdings::default();
        let (mut holdings, mut held_by) = (holdings, held_by);
        loop {
            // NB: a fetch holds nothing else while it waits here, and what it waits for is
            // given back by fetches that need nothing more from it: no deadlock.
            let memory = self
                .memory
                .clone()
                .acquire_many_owned(kib(reserved))
                .await
                .map_err(|_| Error::InvalidRequest("the driver is stopping".into()))?;
            let mut allowance = Allowance::new(reserved, limit);
            let files_now = match previous {
                Some(dir) => crate::driver::on_volume("read the files of", dir, writer::current)
                    .await
                    .ok()
                    .flatten(),
                None => None,
            };
            let ssi_name = format!("{}/{}", record.pod.namespace, record.ssi);
            let held_now = files_now
                .as_ref()
                .map_or(0, |files| files.0.values().map(Vec::len).sum());
            let fetched = match allowance.spend(held_now, &ssi_name) {
                Err(error) => Err(error),
                Ok(()) => {
                    self.fetch_within(
                        record,
                        tokens,
                        cycle,
                        holdings,
                        files_now.as_ref(),
                        held_by,
                        &mut allowance,
                    )
                    .await
                }
            };
            if fetched.is_err() && allowance.outgrown {
                drop(memory);
                reserved = limit;
                if allowance.released {
                    // Given back to the identity that obtained them already: not twice.
                    (holdings, held_by) = (&none, None);
                }
                continue;
            }
            // What the volume needed, with room to grow, is what its next fetch reserves; a
            // volume that needs little (or failed) reserves the first amount again.
            let mut reservations = self.reservations.lock().unwrap_or_else(|p| p.into_inner());
            let need = (allowance.peak + allowance.peak / 4).min(limit);
            if fetched.is_ok() && need > FIRST_RESERVATION {
                reservations.insert(record.volume_id.clone(), need);
            } else {
                reservations.remove(&record.volume_id);
            }
            return fetched.map(|(files, identity, holdings, reads)| Fetched {
                files,
                memory,
                identity,
                holdings,
                reads,
            });
        }
    }

    /// [`Fetcher::fetch`] within `allowance`.
    #[allow(clippy::too_many_arguments)]
    async fn fetch_within(
        &self,
        record: &Record,
        tokens: &Tokens,
        cycle: &Cycle,
        holdings: &Holdings,
        previous: Option<&Files>,
        held_by: Option<&IdentityKey>,
        allowance: &mut Allowance,
    ) -> Result<(Files, IdentityKey, Holdings, Vec<Request>), Error> {
        let (ssi, key, session) = self.resolve(record, tokens, cycle, true).await?;
        let spec = &ssi.spec;
        let ssi_name = format!("{}/{}", record.pod.namespace, record.ssi);
        // The SSI is held while the volume is fetched, and may be a megabyte or more.
        allowance.spend(ssi_core::json::encoded_len(spec), &ssi_name)?;

        let mut next = holdings.clone();
        if let Some(old) = held_by.filter(|old| **old != key && !holdings.is_empty()) {
            // NB: renewing or revoking them as the new identity would show their lease ids to
            // another store or role.
            self.release_as(old, holdings).await;
            allowance.released = true;
            next.clear();
        }
        let obtained = self
            .obtain_all(
                &session, &key, spec, cycle, &mut next, previous, &ssi_name, allowance,
            )
            .await;
        if next.values().any(|held| held.lease.is_some())
            && let Some((token, login_id)) = session.current_token().await
        {
            self.tokens.save(&key, &token, login_id);
        }
        let files = match obtained {
            Ok(secrets) => {
                files_of(
                    &self.renderer,
                    spec,
                    &secrets,
                    previous,
                    &ssi_name,
                    allowance,
                )
                .await
            }
            Err(error) => Err(error),
        };
        match files {
            Ok(files) => Ok((files, key, next, requests_of(spec))),
            Err(error) => {
                // What this attempt obtained is given back at once: nothing uses it.
                self.settle(&key, holdings, &next, false).await;
                Err(error)
            }
        }
    }

    /// Settles a volume's holdings after its files were written (`written`) or not. Written:
    /// what the volume no longer asks for is given back (a secret replaced by a new one is left
    /// to expire, as the application may still use the old credentials). Not written: what the
    /// attempt obtained is given back, the old holdings stay.
    pub async fn settle(
        &self,
        identity: &IdentityKey,
        old: &Holdings,
        new: &Holdings,
        written: bool,
    ) {
        let (gone, kept_by) = if written { (old, new) } else { (new, old) };
        let unused: Vec<&Held> = gone
            .values()
            .filter(|held| match kept_by.get(&held.request) {
                None => true,
                // A replaced secret is revoked only when the new one is what failed.
                Some(other) => !written && !same_lease(held, other),
            })
            .collect();
        if unused.is_empty() {
            return;
        }
        let Some(session) = self.existing_session(identity) else {
            return;
        };
        for held in unused {
            self.revoke(&session, held).await;
        }
    }

    fn existing_session(&self, identity: &IdentityKey) -> Option<Arc<Session>> {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(identity)
            .cloned()
    }

    /// Revokes `holdings` as `identity`, if a session of it is still there.
    async fn release_as(&self, identity: &IdentityKey, holdings: &Holdings) {
        match self.existing_session(identity) {
            Some(session) => {
                for held in holdings.values() {
                    self.revoke(&session, held).await;
                }
            }
            None => tracing::warn!(
                leases = holdings.len(),
                "the volume's SSI names another identity; its old leases end at their TTL"
            ),
        }
    }

    /// Every secret the SSI's files need, by request: the held ones kept or renewed, the others
    /// read or issued. `None` is a secret held since before a restart, whose value is only in
    /// the volume's files.
    #[allow(clippy::too_many_arguments)]
    async fn obtain_all(
        &self,
        session: &Session,
        key: &IdentityKey,
        spec: &ssi_core::SecretsStoreImportSpec,
        cycle: &Cycle,
        held: &mut Holdings,
        previous: Option<&Files>,
        ssi_name: &str,
        allowance: &mut Allowance,
    ) -> Result<HashMap<Request, Option<Arc<Secret>>>, Error> {
        let store_error = |what: String| {
            move |source: ssi_vault::Error| Error::Store {
                ssi: ssi_name.to_owned(),
                what,
                source: Arc::new(source),
            }
        };
        let needed = requests_of(spec);
        held.retain(|request, _| needed.contains(request));
        // A value kept only in the files can serve only files that are still there.
        held.retain(|request, kept| {
            kept.secret.is_some()
                || files_needing(spec, request)
                    .all(|name| previous.is_some_and(|files| files.0.contains_key(name)))
        });
        let mut token = None;
        if held.values().any(|kept| kept.lease.is_some()) {
            token = Some(
                session
                    .keep_alive()
                    .await
                    .map_err(store_error("a renewal of the session's token".into()))?,
            );
        }

        let mut secrets = HashMap::new();
        for request in needed {
            let now = SystemTime::now();
            if let Some(kept) = held.get_mut(&request) {
                if let (Some(token), Some(_)) = (token, &kept.lease) {
                    kept.tie_to(token);
                }
                if let Some(secret) = &kept.secret {
                    allowance.spend(secret.retained_bytes(), ssi_name)?;
                }
                if !kept.needs_renewal(now) {
                    secrets.insert(request, kept.secret.clone());
                    continue;
                }
                if kept.can_renew(now)
                    && let Some(lease) = kept.lease.clone()
                {
                    match session
                        .renew_lease(&request.path, &lease.id, lease.duration)
                        .await
                    {
                        // NB: less than asked for means the lease's max TTL is near: new
                        // credentials now, while the old ones still work.
                        Ok(granted)
                            if granted.duration + Duration::from_secs(1) >= lease.duration =>
                        {
                            kept.since = now;
                            kept.until = Some(now + granted.duration);
                            secrets.insert(request, kept.secret.clone());
                            continue;
                        }
                        Ok(granted) => {
                            kept.until = Some(now + granted.duration);
                            tracing::info!(path = %request.path, granted = ?granted.duration,
                                "the lease is near its max TTL; obtaining new credentials");
                        }
                        // NB: the store refused (the lease is gone or at its end): new
                        // credentials. An outage is not a refusal: the files and the lease
                        // stay, and the volume is retried while the lease still works.
                        Err(e)
                            if e.status()
                                .is_none_or(|status| status >= 500 || status == 429) =>
                        {
                            return Err(Error::Store {
                                ssi: ssi_name.to_owned(),
                                what: format!("the lease renewal of {}", request.path),
                                source: Arc::new(e),
                            });
                        }
                        Err(e) => tracing::info!(path = %request.path, error = %e,
                            "the lease was not renewed; obtaining new credentials"),
                    }
                }
            }
            let what = match request.method {
                Method::Get => format!("secret {}", request.path),
                Method::Post => format!("an issue from {}", request.path),
            };
            let (secret, token) =
                self.obtain(session, key, &request, cycle)
                    .await
                    .map_err(|source| Error::Store {
                        ssi: ssi_name.to_owned(),
                        what,
                        source,
                    })?;
            // NB: counted before it is kept, so that an attempt refused here gives back what
            // it obtained (settle, in fetch).
            let spent = allowance.spend(secret.retained_bytes(), ssi_name);
            match Held::of(&request, secret.clone(), token, SystemTime::now()) {
                Some(kept) => {
                    held.insert(request.clone(), kept);
                }
                None => {
                    held.remove(&request);
                }
            }
            spent?;
            secrets.insert(request, Some(secret));
        }
        Ok(secrets)
    }

    /// A secret from the store now. Static reads are shared by the volumes of one identity
    /// during a cycle; a leased one goes to the first volume that takes it and the others read
    /// their own, and an issue is never shared.
    async fn obtain(
        &self,
        session: &Session,
        key: &IdentityKey,
        request: &Request,
        cycle: &Cycle,
    ) -> Result<(Arc<Secret>, TokenState), Arc<ssi_vault::Error>> {
        if request.method == Method::Post {
            let body = serde_json::to_value(&request.args).unwrap_or_default();
            let (secret, token) = session
                .write_tracked(&request.path, &body)
                .await
                .map_err(Arc::new)?;
            return Ok((Arc::new(secret), token));
        }
        let cell = cycle.cell(&cycle.reads, (key.clone(), request.path.clone()));
        let shared = cell
            .get_or_init(|| async {
                session
                    .read_tracked(&request.path, None)
                    .await
                    .map(|(secret, token)| {
                        Arc::new(SharedRead {
                            secret: Arc::new(secret),
                            token,
                            taken: AtomicBool::new(false),
                            weighed: AtomicBool::new(false),
                        })
                    })
                    .map_err(Arc::new)
            })
            .await
            .clone();
        let read_key = (key.clone(), request.path.clone());
        cycle.looked_up(&cycle.reads, &read_key, &cell);
        let shared = shared?;
        if shared.secret.lease_id.is_some() {
            // A leased secret goes to one volume only: nobody else may use it.
            forget(&cycle.reads, &read_key, &cell);
        } else if !shared.weighed.swap(true, Ordering::Relaxed) {
            let bytes = shared.secret.retained_bytes();
            cycle.keep_or_forget(&cycle.reads, &read_key, &cell, bytes);
        }
        if shared.secret.lease_id.is_none() || !shared.taken.swap(true, Ordering::Relaxed) {
            return Ok((shared.secret.clone(), shared.token));
        }
        let (secret, token) = session
            .read_tracked(&request.path, None)
            .await
            .map_err(Arc::new)?;
        Ok((Arc::new(secret), token))
    }

    /// Gives a lease back to the store; a failure is only logged, the lease then ends at its
    /// TTL.
    async fn revoke(&self, session: &Session, held: &Held) {
        let Some(lease) = &held.lease else { return };
        if let Err(e) = session.revoke_lease(&held.request.path, &lease.id).await {
            tracing::warn!(path = %held.request.path, error = %e,
                "the lease was not revoked and ends at its TTL; the role's policy needs \
                 update on sys/leases/revoke/<lease prefix>/* to revoke it");
        }
    }

    /// Revokes the leases a volume held, as its identity, when the volume goes. The identity is
    /// worked out from the SSI when the volume never rotated since a restart; without a token
    /// or a saved one, the leases end at their TTL.
    pub async fn release(
        &self,
        record: &Record,
        tokens: &Tokens,
        identity: Option<&IdentityKey>,
        holdings: &Holdings,
    ) {
        self.reservations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&record.volume_id);
        if holdings.values().all(|held| held.lease.is_none()) {
            return;
        }
        let known = identity.and_then(|key| self.existing_session(key));
        let session = match known {
            Some(session) => session,
            None => match self.resolve(record, tokens, &Cycle::default(), false).await {
                Ok((_, _, session)) => session,
                Err(e) => {
                    tracing::warn!(leases = holdings.len(), error = %crate::error::chain(&e),
                        "cannot revoke the volume's leases; they end at their TTL");
                    return;
                }
            },
        };
        for held in holdings.values() {
            self.revoke(&session, held).await;
        }
    }

    /// The volume's SSI, identity and session. Without a token for the SSI's audience the
    /// session can still revoke with a token it kept or saved, so `need_token` false lets it be
    /// made (a login with it would fail).
    async fn resolve(
        &self,
        record: &Record,
        tokens: &Tokens,
        cycle: &Cycle,
        need_token: bool,
    ) -> Result<(Arc<SecretsStoreImport>, IdentityKey, Arc<Session>), Error> {
        let namespace = &record.pod.namespace;
        let ssi = self.ssi(namespace, &record.ssi, cycle).await?;
        ssi.spec.validate().map_err(|source| Error::InvalidSsi {
            namespace: namespace.clone(),
            name: record.ssi.clone(),
            source,
        })?;
        let audience = ssi
            .spec
            .audience
            .clone()
            .unwrap_or_else(|| self.settings.token_audience.clone());
        let key = self.identity(&ssi, record)?;
        let jwt = match tokens.get(&audience) {
            Some(jwt) => jwt.clone(),
            None if need_token => return Err(Error::MissingToken { audience }),
            None => SecretString::from(String::new()),
        };
        let ssi_name = format!("{namespace}/{}", record.ssi);
        let session = self.session(&key, &jwt, &ssi_name)?;
        Ok((ssi, key, session))
    }

    async fn ssi(
        &self,
        namespace: &str,
        name: &str,
        cycle: &Cycle,
    ) -> Result<Arc<SecretsStoreImport>, Error> {
        // NB: only ever the pod's own namespace (security invariant 2): the name comes from the
        // pod spec, the namespace from kubelet.
        let api: Api<SecretsStoreImport> = Api::namespaced(self.kube.clone(), namespace);
        let key = (namespace.to_owned(), name.to_owned());
        let cell = cycle.cell(&cycle.ssis, key.clone());
        let found = cell
            .get_or_init(|| async {
                match api.get_opt(name).await {
                    Ok(Some(mut ssi)) => {
                        // The status is the drivers' own report, its size grows with the
                        // nodes that mount the SSI; reading needs the spec alone, the status
                        // writer the number of entries.
                        let nodes = ssi.status.take().map(|status| status.nodes);
                        let listed = crate::status::Listed::of(
                            nodes.as_deref().unwrap_or_default(),
                            &self.node,
                            std::time::SystemTime::now(),
                        );
                        self.remember_listed(&key, listed);
                        ssi.spec.normalize();
                        let bytes = ssi_core::json::encoded_len(&ssi.spec);
                        cycle.keep_or_forget(&cycle.ssis, &key, &cell, bytes);
                        Ok(Arc::new(ssi))
                    }
                    Ok(None) => Err(SsiLookup::NotFound),
                    Err(e) => Err(SsiLookup::Failed(Arc::new(e))),
                }
            })
            .await
            .clone();
        cycle.looked_up(&cycle.ssis, &key, &cell);
        found.map_err(|lookup| match lookup {
            SsiLookup::NotFound => Error::SsiNotFound {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            },
            SsiLookup::Failed(source) => Error::Kube {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                source,
            },
        })
    }

    /// Applies the operator's defaults and limits to what the SSI asks for.
    fn identity(&self, ssi: &SecretsStoreImport, record: &Record) -> Result<IdentityKey, Error> {
        let spec = &ssi.spec;
        let refuse = |reason: String| Error::Refused {
            namespace: record.pod.namespace.clone(),
            name: record.ssi.clone(),
            reason,
        };
        let address = match &spec.address {
            Some(requested) => {
                let url = Url::parse(requested)
                    .map_err(|e| refuse(format!("spec.address {requested:?} is not a URL: {e}")))?;
                let allowed = self
                    .settings
                    .default_address
                    .iter()
                    .chain(&self.settings.allowed_addresses);
                if !allowed.clone().any(|a| same_address(a, &url)) {
                    return Err(refuse(format!(
                        "spec.address {requested} is not allowed by this driver; the operator can add it to \
                         --allowed-store-addresses, or leave spec.address out to use the default store"
                    )));
                }
                url
            }
            None => self.settings.default_address.clone().ok_or_else(|| {
                refuse(
                    "no store address: set spec.address, or start the driver with --store-address"
                        .into(),
                )
            })?,
        };
        let skip_tls_verify = spec.skip_tls_verify.unwrap_or(false);
        let login = spec.login(&self.settings.login);
        if skip_tls_verify && !self.settings.allow_skip_tls_verify {
            return Err(refuse(
                "spec.skipTLSVerify is true, which this driver does not allow (--allow-skip-tls-verify); \
                 set spec.caCert to the store's CA instead"
                    .into(),
            ));
        }
        Ok(IdentityKey {
            store: Connection {
                address: address.as_str().trim_end_matches('/').to_owned(),
                namespace: spec
                    .namespace
                    .clone()
                    .or_else(|| self.settings.namespace.clone()),
                ca_pem: spec
                    .ca_cert
                    .clone()
                    .or_else(|| self.settings.ca_pem.clone()),
                skip_tls_verify,
            },
            auth_path: login.mount,
            role: login.role,
            auth_method: login.method,
            service_account_namespace: record.pod.namespace.clone(),
            service_account: record.pod.service_account.clone(),
            audience: spec.audience.clone(),
        })
    }

    /// The session of `key`, created on first use; the freshest JWT replaces the old one.
    fn session(
        &self,
        key: &IdentityKey,
        jwt: &SecretString,
        ssi_name: &str,
    ) -> Result<Arc<Session>, Error> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(session) = sessions.get(key) {
            // NB: an empty JWT (a revocation without kubelet's token) never replaces a real one.
            if !jwt.expose_secret().is_empty() {
                session.set_jwt(jwt.clone());
            }
            return Ok(session.clone());
        }
        let client = self.client(&key.store).map_err(|source| Error::Store {
            ssi: ssi_name.to_owned(),
            what: "a connection to the store".into(),
            source: Arc::new(source),
        })?;
        let auth = key.login();
        let session = Arc::new(match self.tokens.load(key) {
            Some((token, login_id)) => {
                Session::restored(client, auth, jwt.clone(), token, login_id)
            }
            None => Session::new(client, auth, jwt.clone()),
        });
        sessions.insert(key.clone(), session.clone());
        Ok(session)
    }

    fn client(&self, store: &Connection) -> Result<Client, ssi_vault::Error> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(client) = clients.get(store) {
            return Ok(client.clone());
        }
        let mut config = StoreConfig::of(store)?;
        config.timeout = self.settings.timeout;
        config.max_response_bytes = self.settings.max_response_bytes;
        let metrics = self.metrics.clone();
        let client = Client::new(&config)?.with_observer(Arc::new(
            move |operation: &Operation, ok: bool| {
                let operation = match operation {
                    Operation::Login { .. } => "login",
                    Operation::Read { .. } => "read",
                    Operation::RenewLease { .. } => "renew",
                    Operation::RevokeLease { .. } => "revoke",
                    Operation::RenewToken => "renew_token",
                    Operation::Write { .. } => "write",
                };
                let result = if ok { Outcome::Ok } else { Outcome::Error };
                metrics
                    .store_requests
                    .get_or_create(&StoreLabels { operation, result })
                    .inc();
            },
        ));
        clients.insert(store.clone(), client.clone());
        Ok(client)
    }

    /// Drops sessions no mounted volume uses any more (their pods are gone), and the store
    /// clients (one per address, CA, namespace) that no remaining session needs: SSIs decide
    /// those keys, so neither map may only grow.
    /// `forget_tokens`: also delete the saved tokens of the identities gone, which only a
    /// caller that knows every volume's identity may ask (see [`crate::tokens`]).
    pub fn retain_sessions(&self, in_use: &HashSet<IdentityKey>, forget_tokens: bool) {
        if forget_tokens {
            self.tokens.retain(in_use);
        }
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|key, _| in_use.contains(key));
        let stores: HashSet<&Connection> = in_use.iter().map(|key| &key.store).collect();
        self.clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|store, _| stores.contains(store));
    }
}

/// Whether two holdings are the same lease (or the same issue), so one replaces the other
/// only in its dates.
fn same_lease(a: &Held, b: &Held) -> bool {
    match (&a.lease, &b.lease) {
        (Some(a), Some(b)) => a.id == b.id,
        (None, None) => a.since == b.since,
        _ => false,
    }
}

/// The distinct requests the SSI's files make, in the order of the files.
fn requests_of(spec: &ssi_core::SecretsStoreImportSpec) -> Vec<Request> {
    let mut requests = Vec::new();
    for file in &spec.files {
        let of_file = file.source.iter().map(Request::of).chain(
            file.template
                .iter()
                .flat_map(|t| t.sources.values().map(|path| Request::get(path))),
        );
        for request in of_file {
            if !requests.contains(&request) {
                requests.push(request);
            }
        }
    }
    requests
}

/// The names of the files that need `request`'s secret.
fn files_needing<'a>(
    spec: &'a ssi_core::SecretsStoreImportSpec,
    request: &'a Request,
) -> impl Iterator<Item = &'a str> {
    spec.files
        .iter()
        .filter(move |file| {
            file.source
                .as_ref()
                .is_some_and(|s| Request::of(s) == *request)
                || file.template.as_ref().is_some_and(|t| {
                    request.method == Method::Get && t.sources.values().any(|p| *p == request.path)
                })
        })
        .map(|file| file.name.as_str())
}

/// The volume's files from the secrets: one key of a secret, or a template rendered over
/// several; a file whose secret is held without its value keeps its `previous` bytes.
async fn files_of(
    renderer: &Renderer,
    spec: &ssi_core::SecretsStoreImportSpec,
    secrets: &HashMap<Request, Option<Arc<Secret>>>,
    previous: Option<&Files>,
    ssi_name: &str,
    allowance: &mut Allowance,
) -> Result<Files, Error> {
    let mut files = BTreeMap::new();
    let mut modes = BTreeMap::new();
    for file in &spec.files {
        if let Some(mode) = file.permission_bits() {
            modes.insert(file.name.clone(), mode);
        }
        let unknown = |request: &Request| secrets.get(request).is_none_or(Option::is_none);
        let needs_unknown = file.source.iter().map(Request::of).any(|r| unknown(&r))
            || file
                .template
                .iter()
                .flat_map(|t| t.sources.values())
                .any(|path| unknown(&Request::get(path)));
        if needs_unknown {
            // NB: obtain_all kept such a holding only if this file is in `previous`.
            if let Some(bytes) = previous.and_then(|files| files.0.get(&file.name)) {
                allowance.spend(bytes.len(), ssi_name)?;
                files.insert(file.name.clone(), bytes.clone());
            }
            continue;
        }
        let source = match (&file.source, &file.template) {
            (Some(source), _) => source,
            (None, Some(template)) => {
                let rendered = renderer
                    .render(template, |path| {
                        secrets
                            .get(&Request::get(path))
                            .and_then(|secret| secret.as_deref())
                    })
                    .await
                    .map_err(|problem| Error::Template {
                        ssi: ssi_name.to_owned(),
                        file: file.name.clone(),
                        problem,
                    })?;
                allowance.spend(rendered.len(), ssi_name)?;
                files.insert(file.name.clone(), rendered);
                continue;
            }
            // NB: validate() refused it already.
            (None, None) => continue,
        };
        let (path, key_name) = (&source.path, &source.key);
        // NB: a secret without its value took the branch above.
        let Some(Some(secret)) = secrets.get(&Request::of(source)) else {
            continue;
        };
        // NB: counted before it is copied; to decode, the text and the file both, until the
        // text goes.
        let cost = secret.value_cost(key_name);
        let copies = if file.decode_base64 { 2 } else { 1 };
        allowance.spend(cost.saturating_mul(copies), ssi_name)?;
        let mut value = secret
            .value_bytes(key_name)
            .map_err(|source| Error::Store {
                ssi: ssi_name.to_owned(),
                what: format!("file {:?}", file.name),
                source: Arc::new(source),
            })?;
        let bytes = if file.decode_base64 {
            value.retain(|b| !b.is_ascii_whitespace());
            base64::engine::general_purpose::STANDARD
                .decode(&value)
                .map_err(|_| Error::Base64 {
                    ssi: ssi_name.to_owned(),
                    file: file.name.clone(),
                    path: path.clone(),
                    key: key_name.clone(),
                })?
        } else {
            value
        };
        allowance.refund(cost.saturating_mul(copies - 1));
        files.insert(file.name.clone(), bytes);
    }
    Ok(Files(files, modes))
}

fn same_address(a: &Url, b: &Url) -> bool {
    a.as_str().trim_end_matches('/') == b.as_str().trim_end_matches('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(address: &str) -> Connection {
        Connection::to(address)
    }

    fn identity() -> IdentityKey {
        IdentityKey::made_up("sa")
    }

    #[test]
    fn saved_token_files_are_named_by_a_stable_hash_of_the_identity() {
        // Tokens are kept on a tmpfs only. host path: a directory of the test's own in /dev/shm.
        let dir = tempfile::tempdir_in("/dev/shm").unwrap();
        let tokens = TokenStore::open(dir.path());
        let key = identity();
        // SHA-256 of the spelled-out identity, its first 16 bytes: the same on every toolchain.
        let expected = {
            use sha2::Digest;
            let digest = sha2::Sha256::digest(key.spelled_out().as_bytes());
            digest[..16]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        assert_eq!(
            tokens.path(&key).unwrap(),
            dir.path().join(format!("{expected}.json"))
        );
        assert_eq!(
            key.spelled_out(),
            "https://vault.example.com:8200|None|None|false|kubernetes|app|ns|sa",
            "a change here renames every saved token file: keep the old name readable"
        );
    }

    #[test]
    fn a_jwt_identity_is_spelled_out_method_first_and_a_kubernetes_one_hashes_as_before() {
        let kubernetes = identity();
        let jwt = IdentityKey {
            auth_method: AuthMethod::Jwt,
            ..identity()
        };
        assert!(jwt.spelled_out().starts_with("jwt|https://"));
        assert_ne!(jwt.spelled_out(), kubernetes.spelled_out());
        // What #[derive(Hash)] gave before there was a method, which names older token files.
        #[derive(Hash)]
        struct Before<'a>(&'a Connection, &'a str, &'a str, &'a str, &'a str);
        let hash = |value: &dyn Fn(&mut std::collections::hash_map::DefaultHasher)| {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            value(&mut hasher);
            std::hash::Hasher::finish(&hasher)
        };
        let k = &kubernetes;
        let before = Before(
            &k.store,
            &k.auth_path,
            &k.role,
            &k.service_account_namespace,
            &k.service_account,
        );
        use std::hash::Hash;
        assert_eq!(hash(&|h| k.hash(h)), hash(&|h| before.hash(h)));
        assert_ne!(hash(&|h| jwt.hash(h)), hash(&|h| k.hash(h)));

        // An audience the SSI names makes another identity; none, the one from before.
        let vault = IdentityKey {
            audience: Some("vault".into()),
            ..identity()
        };
        assert_ne!(vault, kubernetes);
        assert_ne!(hash(&|h| vault.hash(h)), hash(&|h| k.hash(h)));
        assert_eq!(
            vault.spelled_out(),
            format!("{}|\"vault\"", kubernetes.spelled_out())
        );
        let saved = serde_json::to_value(&kubernetes).unwrap();
        assert!(
            saved.get("audience").is_none(),
            "records from before read the same"
        );
        let read: IdentityKey =
            serde_json::from_value(serde_json::to_value(&vault).unwrap()).unwrap();
        assert_eq!(read, vault);
    }

    #[test]
    fn a_record_keeps_the_identity_its_leases_were_obtained_as() {
        let dir = tempfile::tempdir().unwrap();
        let records = crate::state::Store::open(dir.path()).unwrap();
        let key = identity();
        let record = Record {
            volume_id: "csi-1".into(),
            target_path: dir.path().join("target"),
            pod: crate::state::PodInfo {
                namespace: "ns".into(),
                name: "p".into(),
                uid: "u".into(),
                service_account: "sa".into(),
            },
            ssi: "app".into(),
            mount_group: None,
            held: Vec::new(),
            held_by: Some(key.clone()),
        };
        records.save(&record).unwrap();
        let loaded = crate::state::Store::open(dir.path())
            .unwrap()
            .load_all()
            .unwrap();
        assert_eq!(
            loaded[0].held_by.as_ref(),
            Some(&key),
            "renewed as this identity after a restart"
        );
    }

    #[tokio::test]
    async fn store_clients_go_with_the_last_session_that_needs_them() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        // Never called: the client only has to exist.
        let kube = kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap()))
            .unwrap();
        let settings = Settings {
            default_address: None,
            allowed_addresses: Vec::new(),
            login: Default::default(),
            namespace: None,
            ca_pem: None,
            allow_skip_tls_verify: false,
            token_audience: String::new(),
            timeout: Duration::from_secs(1),
            max_response_bytes: 1024,
            volume_limit: 8 << 20,
        };
        let fetcher = Fetcher::new(kube, settings, Arc::default());
        for address in ["http://a.example:8200", "http://b.example:8200"] {
            fetcher.client(&store(address)).unwrap();
        }
        let kept = IdentityKey {
            store: store("http://a.example:8200"),
            auth_path: "kubernetes".into(),
            role: "r".into(),
            auth_method: AuthMethod::Kubernetes,
            service_account_namespace: "ns".into(),
            service_account: "sa".into(),
            audience: None,
        };
        fetcher.retain_sessions(&HashSet::from([kept]), true);
        let clients = fetcher.clients.lock().unwrap();
        assert_eq!(clients.len(), 1);
        assert!(clients.contains_key(&store("http://a.example:8200")));
        drop(clients);
        fetcher.retain_sessions(&HashSet::new(), true);
        assert!(fetcher.clients.lock().unwrap().is_empty());
    }

    #[rstest::rstest]
    // Within the reservation.
    #[case(256, 1024, &[100, 100], true, false)]
    // Beyond the reservation, within the limit: the fetch starts again with its limit.
    #[case(256, 1024, &[200, 100], false, true)]
    // Beyond the limit: refused for good.
    #[case(256, 1024, &[1100], false, false)]
    // The whole limit reserved already: nothing more to grow into.
    #[case(1024, 1024, &[1000, 100], false, false)]
    fn an_allowance_refuses_what_is_beyond_it_and_says_whether_the_limit_would_do(
        #[case] reserved: usize,
        #[case] limit: usize,
        #[case] spends: &[usize],
        #[case] allowed: bool,
        #[case] outgrown: bool,
    ) {
        let mut allowance = Allowance::new(reserved, limit);
        let result = spends
            .iter()
            .try_for_each(|&bytes| allowance.spend(bytes, "ns/ssi"));
        assert_eq!(result.is_ok(), allowed);
        assert_eq!(allowance.outgrown, outgrown);
        if let Err(error) = result {
            let message = error.to_string();
            assert!(message.contains("more than 1 KiB at once"), "{message}");
            assert_eq!(error.code(), tonic::Code::InvalidArgument);
        }
    }

    #[tokio::test]
    async fn files_beyond_the_volumes_limit_are_refused_before_they_are_copied() {
        // 256 files of one 4 MiB value: a gigabyte if every file were built.
        let value = "v".repeat(4 << 20);
        let secret =
            Secret::from_response("secret/big", serde_json::json!({"data": {"value": value}}))
                .unwrap();
        let files = (0..256)
            .map(|i| ssi_core::SecretFile::new(format!("f{i}"), "secret/big", "value"))
            .collect();
        let spec = ssi_core::SecretsStoreImportSpec::new("app", files);
        let secrets = HashMap::from([(Request::get("secret/big"), Some(Arc::new(secret)))]);
        let limit = 8 << 20;
        let mut allowance = Allowance::new(limit, limit);
        let renderer = Renderer::new("/proc/self/exe");
        let error = files_of(&renderer, &spec, &secrets, None, "ns/big", &mut allowance)
            .await
            .unwrap_err();
        assert!(
            matches!(error, Error::TooLarge { limit: l, .. } if l == limit),
            "{error}"
        );
        // Two files were built; the third was refused before it was copied.
        assert!(allowance.spent <= limit + (4 << 20), "{}", allowance.spent);
    }

    #[tokio::test]
    async fn publishes_share_a_lookup_while_it_is_in_flight_and_not_after() {
        let publishes = Cycle::in_flight();
        let key = ("ns".to_owned(), "app".to_owned());
        let first = publishes.cell(&publishes.ssis, key.clone());
        let joined = publishes.cell(&publishes.ssis, key.clone());
        assert!(Arc::ptr_eq(&first, &joined), "one lookup in flight");
        let value = first
            .get_or_init(|| async { Err(SsiLookup::NotFound) })
            .await
            .clone();
        assert!(matches!(value, Err(SsiLookup::NotFound)));
        publishes.looked_up(&publishes.ssis, &key, &first);
        // The one that joined still has the value; whoever comes now looks again, a failure
        // included.
        assert!(matches!(joined.get(), Some(Err(SsiLookup::NotFound))));
        let later = publishes.cell(&publishes.ssis, key.clone());
        assert!(!Arc::ptr_eq(&first, &later) && later.get().is_none());
        publishes.looked_up(&publishes.ssis, &key, &joined);
        assert!(
            publishes.ssis.lock().unwrap().contains_key(&key),
            "a done lookup's late caller leaves the new one in place"
        );

        // A rotation cycle keeps what it looked up for its other volumes.
        let cycle = Cycle::default();
        let cell = cycle.cell(&cycle.ssis, key.clone());
        cycle.looked_up(&cycle.ssis, &key, &cell);
        assert!(Arc::ptr_eq(&cell, &cycle.cell(&cycle.ssis, key)));
    }

    #[tokio::test]
    async fn a_cancelled_publish_leaves_nothing_in_the_in_flight_lookups() {
        let publishes = Cycle::in_flight();
        let key = |name: &str| ("ns".to_owned(), name.to_owned());
        {
            // Kubelet gives up on the publish while its lookup hangs: the future is dropped.
            let cell = publishes.cell(&publishes.ssis, key("hangs"));
            let lookup = cell.get_or_init(std::future::pending);
            let polled = tokio::time::timeout(Duration::from_millis(10), lookup).await;
            assert!(polled.is_err(), "still looking up");
        }
        assert_eq!(publishes.ssis.lock().unwrap().len(), 1, "left behind");
        let other = publishes.cell(&publishes.ssis, key("other"));
        let map = publishes.ssis.lock().unwrap();
        assert_eq!(map.len(), 1, "the next lookup sweeps it out");
        assert!(Arc::ptr_eq(&map[&key("other")], &other));
    }

    #[test]
    fn a_cycle_keeps_reads_for_other_volumes_up_to_its_limit_only() {
        let cycle = Cycle::default();
        let read = |size: usize| {
            Arc::new(SharedRead {
                secret: Arc::new(
                    Secret::from_response(
                        "secret/x",
                        serde_json::json!({"data": {"v": "x".repeat(size)}}),
                    )
                    .unwrap(),
                ),
                token: TokenState {
                    login: 1,
                    until: None,
                    renew_at: None,
                },
                taken: AtomicBool::new(false),
                weighed: AtomicBool::new(false),
            })
        };
        let kept = |path: &str, size: usize| {
            let key = (identity(), path.to_owned());
            let cell = cycle.cell(&cycle.reads, key.clone());
            let shared = read(size);
            cell.set(Ok(shared.clone())).ok().unwrap();
            cycle.keep_or_forget(&cycle.reads, &key, &cell, shared.secret.retained_bytes());
            cycle.reads.lock().unwrap().contains_key(&key)
        };
        assert!(kept("small", 1024));
        assert!(
            !kept("large", CYCLE_KEPT),
            "beyond the limit with the first"
        );
        assert!(
            kept("another small", 1024),
            "the forgotten one is not counted"
        );
    }
}
