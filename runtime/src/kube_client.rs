//! The Kubernetes client both servers use, named in the apiserver's audit log and metrics.

/// A client configured as `kube::Client::try_default` does (`KUBECONFIG`, else in-cluster)
/// that sends `User-Agent: <component>/<version>`. kube-rs sends none, so without it an
/// administrator reading the apiserver's audit log could not tell our requests from any other
/// client's.
pub async fn kube_client(component: &str, version: &str) -> anyhow::Result<kube::Client> {
    let mut config = kube::Config::infer().await?;
    let agent = http::HeaderValue::try_from(format!("{component}/{version}"))?;
    config.headers.push((http::header::USER_AGENT, agent));
    Ok(kube::Client::try_from(config)?)
}
