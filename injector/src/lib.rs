//! `ssi-injector`: resolves `secrets-store:<path>#<key>` environment values and execs the app
//! (DESIGN.md 3.4).
//!
//! Design choices:
//! - Identity: the pod's own ServiceAccount token (the file kubelet projects), never anyone
//!   else's; the webhook only passes addresses and names.
//! - Fail closed: the app never starts with an unresolved reference. Only a 404, and only with
//!   `ignore-missing-secrets`, leaves a variable out.
//! - Nothing of the injector remains: its `SSI_INJECTOR_*` configuration is removed and the app
//!   replaces it by `exec` as the container's PID 1.
//! - Small: no kube client, no logging framework; one current-thread runtime for the reads.

pub mod config;
pub mod files;
pub mod reference;
pub mod resolve;
pub mod supervise;

use config::{Config, LogLevel};
use resolve::{Fetched, Read};
use secrecy::{ExposeSecret, SecretString};
use ssi_vault::{Client, Lease, Session, StoreConfig};
use std::collections::{BTreeSet, HashMap};
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Where Kubernetes looks for a container's termination message.
pub const TERMINATION_LOG: &str = "/dev/termination-log";

/// Writes one log line to stderr. Lines carry names, paths and keys only.
pub fn log(config_level: LogLevel, json: bool, level: LogLevel, message: &str) {
    if level > config_level {
        return;
    }
    let name = match level {
        LogLevel::Error => "error",
        LogLevel::Warn => "warn",
        LogLevel::Info => "info",
        LogLevel::Debug => "debug",
    };
    if json {
        let line = serde_json::json!({"level": name, "component": "ssi-injector", "msg": message});
        eprintln!("{line}");
    } else {
        eprintln!("ssi-injector {name}: {message}");
    }
}

/// The store as the pod: one session (its token cached for its TTL) for every fetch.
#[derive(Debug)]
pub struct Store {
    /// `None` for a container that only has its files watched: no store was configured.
    session: Option<Arc<Session>>,
    token_path: PathBuf,
}

/// A lease on a secret the app was given.
#[derive(Debug, Clone)]
pub struct LeaseInfo {
    /// Path of the secret the lease is on.
    pub path: String,
    /// `None` when the store gives a duration but no lease to renew (KV v1 `ttl`).
    pub id: Option<String>,
    /// How long the lease lasted when the secret was read.
    pub duration: Duration,
    /// Whether the store lets the lease be renewed.
    pub renewable: bool,
}

/// What one fetch returned: fields by read, and the leases among them.
#[derive(Debug, Default)]
pub struct Fetch {
    /// Each read's fields, or that the secret does not exist.
    pub values: HashMap<Read, Fetched>,
    /// The leases of the secrets read that have one.
    pub leases: Vec<LeaseInfo>,
    /// The store token, when a variable asked for it (`secrets-store:login`).
    pub token: Option<SecretString>,
}

impl Store {
    /// Sets up the client and the session from `config`; nothing is sent yet. `Err` when the CA
    /// bundle cannot be read or the store configuration is invalid.
    pub fn connect(config: &Config) -> Result<Store, String> {
        let Some(access) = &config.store else {
            return Ok(Store {
                session: None,
                token_path: config.token_path.clone(),
            });
        };
        let ca_pem = match &config.ca_cert {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| format!("failed to read the CA bundle {}: {e}", path.display()))?,
            ),
            None => config.ca_pem.clone(),
        };
        let connection = ssi_core::Connection {
            namespace: config.namespace.clone(),
            ca_pem,
            skip_tls_verify: config.skip_tls_verify,
            ..ssi_core::Connection::to(access.address.as_str())
        };
        let mut store = StoreConfig::of(&connection).map_err(|e| e.to_string())?;
        store.timeout = config.timeout;
        let client = Client::new(&store).map_err(|e| e.to_string())?;
        let auth = access.login.clone();
        Ok(Store {
            session: Some(Arc::new(Session::new(
                client,
                auth,
                SecretString::from(String::new()),
            ))),
            token_path: config.token_path.clone(),
        })
    }

    /// Reads (and writes, for `>>`) every secret once, concurrently, logged in as the pod; with
    /// `with_token`, keeps the store token for `secrets-store:login`. The token file is read
    /// again each time because kubelet replaces a projected token before it expires.
    pub async fn fetch_all(
        &self,
        reads: &BTreeSet<Read>,
        with_token: bool,
    ) -> Result<Fetch, String> {
        if reads.is_empty() && !with_token {
            return Ok(Fetch::default());
        }
        let session = self.session()?;
        let jwt = std::fs::read_to_string(&self.token_path).map_err(|e| {
            format!(
                "failed to read the ServiceAccount token {}: {e} (set secrets-store.deckhouse.io/service-account-token-path)",
                self.token_path.display()
            )
        })?;
        session.set_jwt(SecretString::from(jwt.trim().to_owned()));
        // One login before the reads fan out, so that they share its token.
        let token = session.token().await.map_err(|e| e.to_string())?;
        let mut fetch = Fetch {
            token: with_token.then(|| SecretString::from(token.expose().to_owned())),
            ..Fetch::default()
        };
        let mut tasks = tokio::task::JoinSet::new();
        for read in reads.iter().cloned() {
            let session = session.clone();
            tasks.spawn(async move {
                let result = match &read.write {
                    Some(body) => match serde_json::from_str(body) {
                        Ok(body) => session.write(&read.path, &body).await,
                        Err(_) => Err(ssi_vault::Error::Config {
                            reason: format!("the body of the write to {} is not JSON", read.path),
                        }),
                    },
                    None => session.read(&read.path, read.version).await,
                };
                (read, result)
            });
        }
        let mut problems = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            let (read, result) = joined.map_err(|e| format!("a read task failed: {e}"))?;
            match result {
                Ok(secret) => {
                    if let Some(duration) = secret.lease_duration.filter(|d| !d.is_zero()) {
                        fetch.leases.push(LeaseInfo {
                            path: read.path.clone(),
                            id: secret.lease_id.clone().filter(|id| !id.is_empty()),
                            duration,
                            renewable: secret.renewable,
                        });
                    }
                    let fields = secret.fields().map(|(k, v)| (k.to_owned(), v)).collect();
                    fetch.values.insert(read, Fetched::Found(fields));
                }
                Err(ssi_vault::Error::NotFound { .. }) => {
                    fetch.values.insert(read, Fetched::Missing);
                }
                Err(e) => problems.push(e.to_string()),
            }
        }
        if !problems.is_empty() {
            problems.sort();
            return Err(problems.join("; "));
        }
        Ok(fetch)
    }

    /// The session, or why there is none.
    fn session(&self) -> Result<&Arc<Session>, String> {
        self.session.as_ref().ok_or_else(|| {
            format!(
                "the environment names secrets-store: values, but no store is set: annotate the \
                 pod with secrets-store.deckhouse.io/role (or set {} and {})",
                config::ENV_ADDR,
                config::ENV_ROLE
            )
        })
    }

    /// Gives the lease back to the store (its credentials end now).
    pub async fn revoke(&self, lease: &LeaseInfo, id: &str) -> Result<(), String> {
        self.session()?
            .revoke_lease(&lease.path, id)
            .await
            .map_err(|e| e.to_string())
    }

    /// Extends a lease by its own duration; returns what the store granted.
    pub async fn renew(&self, lease: &LeaseInfo, id: &str) -> Result<Lease, String> {
        self.session()?
            .renew_lease(&lease.path, id, lease.duration)
            .await
            .map_err(|e| e.to_string())
    }
}

/// The application's environment, and the leases of what it was given.
#[derive(Debug)]
pub struct Resolved {
    /// The environment to start the application with.
    pub env: Vec<(OsString, OsString)>,
    /// The leases of the secrets it was given, for `watch-for-lease`.
    pub leases: Vec<LeaseInfo>,
    /// Time spent waiting for the store (login and reads), for the startup log line.
    pub store_time: Duration,
}

/// Resolves the references in `env` (the container's environment) through `store`; notices
/// about ignored missing secrets are logged.
pub async fn resolve(
    config: &Config,
    store: &Store,
    env: Vec<(OsString, OsString)>,
) -> Result<Resolved, String> {
    let plan = resolve::plan(env, &config.env_from_paths)?;
    if matches!(config.mode, config::Mode::WatchForData { .. })
        && let Some(write) = plan.reads.iter().find(|read| read.write.is_some())
    {
        // Every poll would issue a new secret, see it differ and restart the app.
        return Err(format!(
            "a write reference (>>secrets-store:{}) issues a new secret at every poll of \
             watch-for-data; use it with restart-on-secret-change none or watch-for-lease",
            write.path
        ));
    }
    let started = std::time::Instant::now();
    let fetch = store.fetch_all(&plan.reads, plan.needs_token).await?;
    let store_time = started.elapsed();
    let token = fetch.token.as_ref().map(ExposeSecret::expose_secret);
    let rendered = resolve::render(plan, &fetch.values, token, config.ignore_missing)?;
    for notice in &rendered.notices {
        log(config.log_level, config.json_log, LogLevel::Warn, notice);
    }
    Ok(Resolved {
        env: rendered.env,
        leases: fetch.leases,
        store_time,
    })
}

/// [`resolve`] on a runtime of its own, for the exec mode.
pub fn resolve_environment(
    config: &Config,
    env: Vec<(OsString, OsString)>,
) -> Result<Resolved, String> {
    // NB: without a reference there is nothing to read; setting up the HTTP client (system
    // roots included) would be the larger part of the injector's start-up for nothing.
    let plan = resolve::plan(env.clone(), &config.env_from_paths)?;
    if plan.reads.is_empty() && !plan.needs_token {
        let rendered = resolve::render(plan, &HashMap::new(), None, config.ignore_missing)?;
        return Ok(Resolved {
            env: rendered.env,
            leases: Vec::new(),
            store_time: Duration::ZERO,
        });
    }
    let runtime = runtime()?;
    runtime.block_on(async {
        let store = Store::connect(config)?;
        resolve(config, &store, env).await
    })
}

/// A current-thread runtime: the injector does a handful of requests, concurrency enough.
pub fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("failed to start the runtime: {e}"))
}
