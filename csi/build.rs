//! Compiles the vendored CSI v1.9.0 spec and kubelet's plugin registration API v1. protoc comes from the protoc-bin-vendored crate so that
//! a fresh machine builds without installing protobuf-compiler first.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    let include = protoc_bin_vendored::include_path()?;
    println!("cargo:rerun-if-changed=proto/csi.proto");
    println!("cargo:rerun-if-changed=proto/pluginregistration/api.proto");
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // NB: kubelet puts the pod's ServiceAccount tokens in volume_context (and may in
        // secrets), so the request type gets no Debug: it cannot be logged by accident.
        .skip_debug(["csi.v1.NodePublishVolumeRequest"])
        .compile_with_config(
            config,
            &[
                "proto/csi.proto".into(),
                "proto/pluginregistration/api.proto".into(),
            ],
            &["proto".into(), include],
        )?;
    Ok(())
}
