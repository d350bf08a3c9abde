//! Kubelet's plugin registration API (pluginregistration v1): kubelet's plugin watcher finds the
//! registration socket in `<kubelet-root>/plugins_registry`, asks GetInfo, checks the CSI endpoint
//! with NodeGetInfo, and reports the outcome with NotifyRegistrationStatus. Serving it here lets
//! the DaemonSet run without the node-driver-registrar sidecar.

use crate::registration_proto::registration_server::Registration;
use crate::registration_proto::{
    InfoRequest, PluginInfo, RegistrationStatus, RegistrationStatusResponse,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::net::UnixListener;
use tonic::{Request, Response, Status};

/// The plugin type kubelet's CSI handler expects.
const PLUGIN_TYPE: &str = "CSIPlugin";
/// CSI spec versions this driver serves, in kubelet's notation.
const SUPPORTED_VERSIONS: [&str; 1] = ["1.0.0"];

/// Answers kubelet's plugin watcher: names the driver and its CSI socket, and notes whether
/// kubelet registered it.
#[derive(Debug, Clone)]
pub struct Registrar {
    /// The CSI socket as kubelet reaches it.
    pub endpoint: String,
    /// Whether kubelet reported a successful registration (for /readyz and tests).
    pub registered: Arc<AtomicBool>,
}

#[tonic::async_trait]
impl Registration for Registrar {
    async fn get_info(&self, _: Request<InfoRequest>) -> Result<Response<PluginInfo>, Status> {
        Ok(Response::new(PluginInfo {
            r#type: PLUGIN_TYPE.to_owned(),
            name: ssi_core::DRIVER_NAME.to_owned(),
            endpoint: self.endpoint.clone(),
            supported_versions: SUPPORTED_VERSIONS.iter().map(|v| (*v).to_owned()).collect(),
        }))
    }

    async fn notify_registration_status(
        &self,
        request: Request<RegistrationStatus>,
    ) -> Result<Response<RegistrationStatusResponse>, Status> {
        let status = request.into_inner();
        self.registered
            .store(status.plugin_registered, Ordering::Relaxed);
        if status.plugin_registered {
            tracing::info!("kubelet registered the driver");
        } else {
            tracing::error!(error = %status.error, "kubelet refused to register the driver");
        }
        Ok(Response::new(RegistrationStatusResponse {}))
    }
}

/// Serves kubelet's plugin registration API until `stop` turns true. Kubelet (1.37 included)
/// dials this socket by its path, so every GetInfo carries the path as `:authority`: the fix of
/// the CSI socket applies here too, and is what makes registration work at all.
pub async fn serve(
    listener: UnixListener,
    registrar: Registrar,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    tracing::info!(endpoint = %registrar.endpoint, "serving kubelet plugin registration");
    let result = tonic::transport::Server::builder()
        .add_service(
            crate::registration_proto::registration_server::RegistrationServer::new(registrar),
        )
        .serve_with_incoming_shutdown(
            tokio_stream::StreamExt::map(
                tokio_stream::wrappers::UnixListenerStream::new(listener),
                |conn| conn.map(crate::authority::AuthorityFix::new),
            ),
            async move {
                let _ = stop.wait_for(|stopping| *stopping).await;
            },
        )
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "the plugin registration server failed");
    }
}
