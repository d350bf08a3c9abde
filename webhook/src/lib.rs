//! `ssi-webhook`: the admission webhook (DESIGN.md 3.3).
//!
//! [`mutate::mutate`] is one pod-template mutation for Pods and every workload kind
//! (secrets-store volumes made read-only and required to name an SSI, the import shorthand, the
//! subPath policy); [`review::review`] turns an AdmissionReview into an answer with the patch
//! computed by diffing; [`router::router`] serves `POST /mutate` with the SSI existence
//! warnings; [`tls::CertStore`] holds the serving certificate, reloaded on kubelet's symlink swap;
//! [`server::serve_https`] is rustls with HTTP/1.1 and HTTP/2; [`run`] puts them together with
//! the admin port.
//!
//! Design choice: objects stay JSON from request to patch. A typed round trip through
//! k8s-openapi would drop fields this build does not know, and the diff would then delete them
//! from the user's object.

pub mod annotations;
pub mod config;
pub mod inject;
pub mod matching;
pub mod metrics;
pub mod mutate;
pub mod oci;
pub mod refusal;
pub mod registry;
pub mod review;
pub mod router;
pub mod server;
pub mod shape;
pub mod tls;

use anyhow::Context;
use config::Args;
use metrics::{Metrics, ReloadLabels};
use router::{AppState, SsiChecker};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tls::CertStore;

/// Serves admission reviews until `shutdown` completes; then reports not-ready, keeps serving
/// for the configured delay, stops accepting and drains the requests in flight.
pub async fn run(
    args: Args,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let certs = CertStore::load(&args.tls_cert, &args.tls_key)
        .context("failed to load the serving certificate (--tls-cert, --tls-key)")?;
    let client_roots = args
        .client_ca_file
        .as_deref()
        .map(tls::client_roots)
        .transpose()
        .context("failed to load the client CA (--client-ca-file)")?;
    let registry_lookup = args.env_injection && args.registry_lookup;
    let kube = if args.ssi_lookup || registry_lookup {
        Some(ssi_runtime::kube_client::kube_client("ssi-webhook", env!("CARGO_PKG_VERSION")).await.context(
            "failed to set up the Kubernetes client (or start with --ssi-lookup=false --registry-lookup=false)",
        )?)
    } else {
        None
    };
    let ssis = match &kube {
        Some(client) if args.ssi_lookup => {
            SsiChecker::new(client.clone(), args.ssi_lookup_deadline, args.ssi_cache_ttl)
        }
        _ => SsiChecker::disabled(),
    };
    let registry = match &kube {
        Some(client) if registry_lookup => {
            let ca_certificates = match &args.registry_ca_file {
                Some(path) => {
                    let pem = std::fs::read(path).with_context(|| {
                        format!("failed to read --registry-ca-file {}", path.display())
                    })?;
                    registry::ca_bundle(&pem).map_err(|e| {
                        anyhow::anyhow!("--registry-ca-file {}: {e}", path.display())
                    })?
                }
                None => Vec::new(),
            };
            Some(
                registry::Registry::new(
                    client.clone(),
                    registry::RegistrySettings {
                        deadline: args.registry_deadline,
                        cache_ttl: args.registry_cache_ttl,
                        ca_certificates,
                        architecture: args.registry_architecture.clone(),
                        plain_http: args.registry_plain_http.clone(),
                        allowed_hosts: args.registry_allowed_hosts.clone(),
                        allow_private: args.registry_allow_private,
                    },
                )
                .map_err(|e| anyhow::anyhow!("--registry-ca-file: {e}"))?,
            )
        }
        _ => None,
    };
    let injector_ca_pem = match &args.injector_ca_file {
        Some(path) => {
            let pem = std::fs::read(path)
                .with_context(|| format!("failed to read --injector-ca-file {}", path.display()))?;
            let pem = String::from_utf8(pem)
                .with_context(|| format!("--injector-ca-file {} is not text", path.display()))?;
            inject::check_ca_pem(&pem)
                .map_err(|why| anyhow::anyhow!("--injector-ca-file {} {why}", path.display()))?;
            Some(pem)
        }
        None => None,
    };
    let metrics = Arc::new(Metrics::default());
    let listener = tokio::net::TcpListener::bind(args.listen_addr)
        .await
        .with_context(|| format!("failed to bind the listen address {}", args.listen_addr))?;
    let admin = tokio::net::TcpListener::bind(args.admin_addr)
        .await
        .with_context(|| format!("failed to bind the admin address {}", args.admin_addr))?;
    let ready = Arc::new(AtomicBool::new(false));
    let scraped = metrics.clone();
    tokio::spawn(ssi_runtime::admin::serve(
        admin,
        ssi_runtime::admin::Health {
            ready: ready.clone(),
            metrics: Arc::new(move || scraped.encode()),
        },
    ));
    let reloader = tokio::spawn(reload_loop(
        certs.clone(),
        args.tls_reload_interval,
        metrics.clone(),
    ));

    let app = router::router(Arc::new(AppState {
        policy: review::Policy {
            subpath: args.subpath_policy,
            enforce: true,
            injector: args.env_injection.then(|| inject::InjectorSettings {
                image: args.injector_image.clone(),
                default_address: args.injector_default_address.clone(),
                default_login: ssi_core::LoginDefaults {
                    method: args.injector_default_auth_method,
                    mount: args.injector_default_auth_path.clone(),
                },
                default_namespace: args.injector_default_namespace.clone(),
                default_ca_pem: injector_ca_pem,
                token_audience: args.injector_token_audience.clone(),
                registry_lookup,
            }),
        },
        ssis,
        registry,
        metrics,
        admission: router::Admission::new(args.max_in_flight, std::time::Duration::from_secs(5)),
    }));
    let draining = {
        let ready = ready.clone();
        let delay = args.shutdown_delay;
        async move {
            shutdown.await;
            ready.store(false, Ordering::Relaxed);
            tracing::info!(
                ?delay,
                "not ready; serving on until endpoints drop this replica"
            );
            tokio::time::sleep(delay).await;
        }
    };
    ready.store(true, Ordering::Relaxed);
    tracing::info!(addr = %args.listen_addr, admin = %args.admin_addr, policy = ?args.subpath_policy, "serving admission reviews");
    let result = server::serve_https(listener, app, certs, client_roots, draining).await;
    reloader.abort();
    result.context("the TLS configuration is unusable")
}

/// Re-reads the certificate files on every tick. Kubelet's Secret updates are symlink swaps
/// that inotify on the file paths would miss; a read through the paths always sees them.
async fn reload_loop(certs: Arc<CertStore>, interval: std::time::Duration, metrics: Arc<Metrics>) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    let mut last_error = None;
    loop {
        ticks.tick().await;
        match certs.reload() {
            Ok(false) => last_error = None,
            Ok(true) => {
                last_error = None;
                metrics
                    .certificate_reloads
                    .get_or_create(&ReloadLabels { result: "ok" })
                    .inc();
                tracing::info!("serving certificate changed; new connections get the new one");
            }
            Err(e) => {
                let text = format!("{:#}", anyhow::Error::new(e));
                // NB: kubelet may be midway through an update; say it once, not every tick.
                if last_error.as_ref() != Some(&text) {
                    metrics
                        .certificate_reloads
                        .get_or_create(&ReloadLabels { result: "error" })
                        .inc();
                    tracing::warn!(error = %text, "serving certificate not reloaded; the previous one stays");
                    last_error = Some(text);
                }
            }
        }
    }
}
