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
pub mod reference;
pub mod resolve;

use config::{Config, LogLevel};
use resolve::{Fetched, Read};
use secrecy::SecretString;
use ssi_vault::{Client, KubernetesAuth, Session, StoreConfig};
use std::collections::{BTreeSet, HashMap};
use std::ffi::OsString;
use std::sync::Arc;

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

/// Reads every secret once, concurrently, logged in once as the pod.
pub async fn fetch_all(
    config: &Config,
    reads: &BTreeSet<Read>,
) -> Result<HashMap<Read, Fetched>, String> {
    if reads.is_empty() {
        return Ok(HashMap::new());
    }
    let jwt = std::fs::read_to_string(&config.token_path).map_err(|e| {
        format!(
            "failed to read the ServiceAccount token {}: {e} (set secrets-store.deckhouse.io/service-account-token-path)",
            config.token_path.display()
        )
    })?;
    let ca_pem = match &config.ca_cert {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| format!("failed to read the CA bundle {}: {e}", path.display()))?,
        ),
        None => None,
    };
    let mut store = StoreConfig::new(config.address.clone());
    store.namespace = config.namespace.clone();
    store.ca_pem = ca_pem;
    store.skip_tls_verify = config.skip_tls_verify;
    store.timeout = config.timeout;
    let client = Client::new(&store).map_err(|e| e.to_string())?;
    let session = Arc::new(Session::new(
        client,
        KubernetesAuth {
            auth_path: config.auth_path.clone(),
            role: config.role.clone(),
        },
        SecretString::from(jwt.trim().to_owned()),
    ));
    // One login before the reads fan out, so that they share its token.
    session.token().await.map_err(|e| e.to_string())?;
    let mut tasks = tokio::task::JoinSet::new();
    for read in reads.iter().cloned() {
        let session = session.clone();
        tasks.spawn(async move {
            let result = session.read(&read.0, read.1).await;
            (read, result)
        });
    }
    let mut fetched = HashMap::new();
    let mut problems = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (read, result) = joined.map_err(|e| format!("a read task failed: {e}"))?;
        match result {
            Ok(secret) => {
                let fields = secret.fields().map(|(k, v)| (k.to_owned(), v)).collect();
                fetched.insert(read, Fetched::Found(fields));
            }
            Err(ssi_vault::Error::NotFound { .. }) => {
                fetched.insert(read, Fetched::Missing);
            }
            Err(e) => problems.push(e.to_string()),
        }
    }
    if !problems.is_empty() {
        problems.sort();
        return Err(problems.join("; "));
    }
    Ok(fetched)
}

/// The application's environment from the container's: references resolved, configuration gone.
pub fn resolve_environment(
    config: &Config,
    env: Vec<(OsString, OsString)>,
) -> Result<Vec<(OsString, OsString)>, String> {
    let plan = resolve::plan(env, &config.env_from_paths)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("failed to start the runtime: {e}"))?;
    let fetched = runtime.block_on(fetch_all(config, &plan.reads))?;
    let rendered = resolve::render(plan, &fetched, config.ignore_missing)?;
    for notice in &rendered.notices {
        log(config.log_level, config.json_log, LogLevel::Warn, notice);
    }
    Ok(rendered.env)
}
