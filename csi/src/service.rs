//! The CSI Identity and Node services over the driver.

use crate::driver::Driver;
use crate::error::{Error, chain};
use crate::metrics::{OperationLabels, Outcome};
use crate::proto::{self, identity_server::Identity, node_server::Node};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tonic::{Request, Response, Status};

/// The CSI Identity and Node services kubelet calls.
#[derive(Debug, Clone)]
pub struct CsiService {
    /// The driver that does the work, shared with the rotation scheduler.
    pub driver: Arc<Driver>,
}

impl CsiService {
    /// Counts the call and logs a failure with its whole cause chain: kubelet only shows the
    /// message in the pod's events, so the node's log must hold it too.
    fn finish<T>(
        &self,
        operation: &'static str,
        result: Result<T, Error>,
    ) -> Result<Response<T>, Status> {
        let (outcome, code) = match &result {
            Ok(_) => (Outcome::Ok, "ok"),
            Err(e) => (Outcome::Error, e.code_label()),
        };
        self.driver
            .metrics
            .csi_requests
            .get_or_create(&OperationLabels {
                operation,
                result: outcome,
                code,
            })
            .inc();
        result.map(Response::new).map_err(|error| {
            tracing::warn!(operation, code = code, error = %chain(&error), "CSI call failed");
            Status::from(error)
        })
    }
}

#[tonic::async_trait]
impl Identity for CsiService {
    async fn get_plugin_info(
        &self,
        _: Request<proto::GetPluginInfoRequest>,
    ) -> Result<Response<proto::GetPluginInfoResponse>, Status> {
        Ok(Response::new(proto::GetPluginInfoResponse {
            name: ssi_core::DRIVER_NAME.into(),
            vendor_version: env!("CARGO_PKG_VERSION").into(),
            manifest: Default::default(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _: Request<proto::GetPluginCapabilitiesRequest>,
    ) -> Result<Response<proto::GetPluginCapabilitiesResponse>, Status> {
        // A node-only plugin: no controller service, no topology.
        Ok(Response::new(proto::GetPluginCapabilitiesResponse {
            capabilities: vec![],
        }))
    }

    async fn probe(
        &self,
        _: Request<proto::ProbeRequest>,
    ) -> Result<Response<proto::ProbeResponse>, Status> {
        Ok(Response::new(proto::ProbeResponse {
            ready: Some(self.driver.ready.load(Ordering::Relaxed)),
        }))
    }
}

#[tonic::async_trait]
impl Node for CsiService {
    async fn node_publish_volume(
        &self,
        request: Request<proto::NodePublishVolumeRequest>,
    ) -> Result<Response<proto::NodePublishVolumeResponse>, Status> {
        let result = match crate::request::parse(request.get_ref(), &self.driver.kubelet_root) {
            Ok(parsed) => self.driver.publish(parsed).await,
            Err(e) => Err(e),
        };
        self.finish(
            "publish",
            result.map(|()| proto::NodePublishVolumeResponse {}),
        )
    }

    async fn node_unpublish_volume(
        &self,
        request: Request<proto::NodeUnpublishVolumeRequest>,
    ) -> Result<Response<proto::NodeUnpublishVolumeResponse>, Status> {
        let request = request.into_inner();
        let result = if request.volume_id.is_empty() || request.target_path.is_empty() {
            Err(Error::InvalidRequest(
                "volume_id and target_path are required".into(),
            ))
        } else {
            self.driver
                .unpublish(&request.volume_id, Path::new(&request.target_path))
                .await
        };
        self.finish(
            "unpublish",
            result.map(|()| proto::NodeUnpublishVolumeResponse {}),
        )
    }

    async fn node_get_capabilities(
        &self,
        _: Request<proto::NodeGetCapabilitiesRequest>,
    ) -> Result<Response<proto::NodeGetCapabilitiesResponse>, Status> {
        use proto::node_service_capability::{Rpc, Type, rpc::Type as RpcType};
        // VOLUME_MOUNT_GROUP: kubelet passes the pod's fsGroup, and the files become root:fsGroup
        // 0640 instead of world-readable.
        let capability = proto::NodeServiceCapability {
            r#type: Some(Type::Rpc(Rpc {
                r#type: RpcType::VolumeMountGroup as i32,
            })),
        };
        Ok(Response::new(proto::NodeGetCapabilitiesResponse {
            capabilities: vec![capability],
        }))
    }

    async fn node_get_info(
        &self,
        _: Request<proto::NodeGetInfoRequest>,
    ) -> Result<Response<proto::NodeGetInfoResponse>, Status> {
        Ok(Response::new(proto::NodeGetInfoResponse {
            node_id: self.driver.node_id.clone(),
            max_volumes_per_node: 0,
            accessible_topology: None,
        }))
    }

    async fn node_stage_volume(
        &self,
        _: Request<proto::NodeStageVolumeRequest>,
    ) -> Result<Response<proto::NodeStageVolumeResponse>, Status> {
        Err(Status::unimplemented("ephemeral volumes are not staged"))
    }

    async fn node_unstage_volume(
        &self,
        _: Request<proto::NodeUnstageVolumeRequest>,
    ) -> Result<Response<proto::NodeUnstageVolumeResponse>, Status> {
        Err(Status::unimplemented("ephemeral volumes are not staged"))
    }

    async fn node_get_volume_stats(
        &self,
        _: Request<proto::NodeGetVolumeStatsRequest>,
    ) -> Result<Response<proto::NodeGetVolumeStatsResponse>, Status> {
        Err(Status::unimplemented("volume stats are not reported"))
    }

    async fn node_expand_volume(
        &self,
        _: Request<proto::NodeExpandVolumeRequest>,
    ) -> Result<Response<proto::NodeExpandVolumeResponse>, Status> {
        Err(Status::unimplemented("secret volumes are not expanded"))
    }
}
