//! `ssi-csi`: the CSI node driver `secrets-store.csi.deckhouse.io` (DESIGN.md 3.2).
//!
//! Design choices:
//! - Identity: the store is always asked as the pod being served. Kubelet hands the pod's
//!   ServiceAccount token over in the volume context (CSIDriver `tokenRequests`); the driver's own
//!   credentials only read SecretsStoreImports (from the pod's namespace) and write Events.
//! - Nothing half-done: a publish fetches every value before it mounts anything, writes through a
//!   kubelet-style atomic swap, and undoes its mount if a step fails. Rotation writes only when
//!   bytes differ and keeps the old files on any failure.
//! - Shared work, never shared identity: Vault tokens are cached per (store, Vault namespace,
//!   auth path, role, ServiceAccount); a rotation cycle reads each SSI and each (identity, path)
//!   once, however many volumes use it.
//! - Restart-safe without secrets on disk: mount records (no tokens) live in the state dir; after
//!   a restart rotation resumes at kubelet's next republish, which brings a fresh token.

/// A volume's fetch in a rotation may take this many store timeouts (`--store-timeout`): enough
/// for a login, a token renewal and a read with their retries on a slow store (at 3, a loaded
/// bed's Vault once had a lease replaced instead of renewed, most likely a rotation cut short
/// before its token renewal), short enough that a dead store holds only its volumes.
pub const FETCH_DEADLINE_TIMEOUTS: u32 = 5;

pub mod authority;
pub mod config;
pub mod driver;
pub mod error;
pub mod events;
pub mod fetch;
pub mod held;
pub mod metrics;
pub mod mount;
pub mod registration;
pub mod request;
pub mod rotation;
pub mod seams;
pub mod service;
pub mod state;
pub mod status;
pub mod template;
pub mod tokens;
pub mod volumes;
pub mod writer;

pub mod proto {
    //! The CSI v1.9.0 API, generated from `proto/csi.proto`.
    #![allow(clippy::all, missing_debug_implementations, missing_docs)]
    tonic::include_proto!("csi.v1");
}

pub mod registration_proto {
    //! Kubelet's plugin registration API v1, generated from `proto/pluginregistration/api.proto`.
    #![allow(clippy::all, missing_debug_implementations, missing_docs)]
    tonic::include_proto!("pluginregistration");
}

use anyhow::Context;
use config::Args;
use driver::Driver;
use metrics::Metrics;
use std::future::Future;
use std::os::unix::fs::FileTypeExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::net::UnixListener;

/// Runs the driver until `shutdown` completes, then drains in-flight calls.
pub async fn run(
    args: Args,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let kube = ssi_runtime::kube_client::kube_client("ssi-csi", env!("CARGO_PKG_VERSION"))
        .await
        .context("failed to set up the Kubernetes client")?;
    let status_client = ssi_runtime::kube_client::kube_client_without_retries(
        "ssi-csi",
        env!("CARGO_PKG_VERSION"),
        status::WRITE_TIMEOUT,
    )
    .await
    .context("failed to set up the Kubernetes client")?;
    let ca_pem = match &args.store.ca_cert {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("failed to read --store-ca-cert {}", path.display()))?,
        ),
        None => None,
    };
    let settings = fetch::Settings {
        default_address: args.store.address.clone(),
        allowed_addresses: args.store.allowed_addresses.clone(),
        login: ssi_core::LoginDefaults {
            method: args.store.auth_method,
            mount: args.store.auth_path.clone(),
        },
        namespace: args.store.namespace.clone(),
        ca_pem,
        allow_skip_tls_verify: args.store.allow_skip_tls_verify,
        token_audience: args.token_audience.clone(),
        timeout: args.store.timeout,
        max_response_bytes: args.store.max_response_bytes,
        // NB: parse_size accepted it, at most 1g.
        volume_limit: config::size_in_bytes(&args.tmpfs_size)
            .unwrap_or(usize::MAX / 2)
            .saturating_mul(2),
    };
    let metrics = Arc::new(Metrics::default());
    let records = state::Store::open(&args.state_dir)
        .with_context(|| format!("failed to open the state dir {}", args.state_dir.display()))?;
    let kubelet_root = args
        .kubelet_root
        .canonicalize()
        .with_context(|| format!("kubelet root {} is not usable", args.kubelet_root.display()))?;
    let driver = Arc::new(Driver::new(
        driver::Settings {
            node_id: args.node_id.clone(),
            kubelet_root,
            tmpfs_size: args.tmpfs_size.clone(),
            rotation_interval: args.rotation_interval,
            rotation_concurrency: args.rotation_concurrency,
            // A login and a read, each with a retry, under the store's timeout.
            fetch_deadline: args.store.timeout * FETCH_DEADLINE_TIMEOUTS,
        },
        driver::Parts {
            metrics: metrics.clone(),
            source: fetch::Fetcher::new(kube.clone(), settings, metrics.clone())
                .with_token_store(tokens::TokenStore::open(&args.token_dir))
                .for_node(args.node_id.clone()),
            reporter: events::Events::new(kube, args.node_id.clone())
                .with_status_client(status_client),
            records,
            mounts: seams::Mounts::Kernel,
        },
    ));
    let recovered = driver.recover().context("failed to load mount records")?;
    tracing::info!(recovered, "mount records loaded");

    let listener = listen(&args.socket)?;
    let admin = tokio::net::TcpListener::bind(args.admin_addr)
        .await
        .with_context(|| format!("failed to bind the admin address {}", args.admin_addr))?;
    tokio::spawn(ssi_runtime::admin::serve(
        admin,
        ssi_runtime::admin::Health {
            ready: driver.ready.clone(),
            metrics: Arc::new(move || metrics.encode()),
        },
    ));
    let rotation = tokio::spawn(rotation::run(driver.clone()));
    let status_writer = tokio::spawn(status::run(driver.clone()));

    driver.ready.store(true, Ordering::Relaxed);
    tracing::info!(socket = %args.socket.display(), node = %args.node_id, "serving CSI");
    let service = service::CsiService {
        driver: driver.clone(),
    };
    let (stopping, stop) = tokio::sync::watch::channel(false);
    let registration = match &args.registration_socket {
        Some(path) => {
            let endpoint = args.kubelet_csi_socket.as_ref().unwrap_or(&args.socket);
            Some(tokio::spawn(registration::serve(
                listen(path)?,
                registration::Registrar {
                    endpoint: endpoint.display().to_string(),
                    registered: driver.registered.clone(),
                },
                stop,
            )))
        }
        None => None,
    };
    let mut stopped = stopping.subscribe();
    let grace = args.shutdown_grace;
    let server = tonic::transport::Server::builder()
        .add_service(proto::identity_server::IdentityServer::new(service.clone()))
        .add_service(proto::node_server::NodeServer::new(service))
        .serve_with_incoming_shutdown(
            tokio_stream::StreamExt::map(
                tokio_stream::wrappers::UnixListenerStream::new(listener),
                |conn| conn.map(authority::AuthorityFix::new),
            ),
            async move {
                shutdown.await;
                let _ = stopping.send(true);
            },
        );
    // NB: the graceful drain waits for every client to close its connection; one that keeps it
    // open must not keep the driver (and its sockets) alive past the grace period.
    let result = tokio::select! {
        result = server => result,
        () = async {
            let _ = stopped.wait_for(|stopping| *stopping).await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!(?grace, "connections still open after the grace period; stopping anyway");
            Ok(())
        }
    };
    rotation.abort();
    status_writer.abort();
    if let Some(registration) = registration {
        registration.abort();
        let _ = registration.await;
    }
    for socket in std::iter::once(&args.socket).chain(&args.registration_socket) {
        let _ = std::fs::remove_file(socket);
    }
    result.context("the CSI server failed")
}

/// Binds a socket, readable and writable by root only from the moment it exists.
fn listen(path: &std::path::Path) -> anyhow::Result<UnixListener> {
    match std::fs::symlink_metadata(path) {
        // NB: a socket left by a killed driver blocks bind; remove it, but nothing else.
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => anyhow::bail!(
            "{} exists and is not a socket; refusing to replace it",
            path.display()
        ),
        Err(_) => {}
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let listener = UnixListener::bind(path);
    nix::sys::stat::umask(old);
    listener.with_context(|| format!("failed to listen on {}", path.display()))
}
