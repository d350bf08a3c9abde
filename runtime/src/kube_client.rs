//! The Kubernetes client both servers use, named in the apiserver's audit log and metrics.

/// A client configured as `kube::Client::try_default` does (`KUBECONFIG`, else in-cluster)
/// that sends `User-Agent: <component>/<version>`. kube-rs sends none, so without it an
/// administrator reading the apiserver's audit log could not tell our requests from any other
/// client's.
pub async fn kube_client(component: &str, version: &str) -> anyhow::Result<kube::Client> {
    Ok(kube::Client::try_from(config(component, version).await?)?)
}

/// Like [`kube_client`], for writes whose caller retries on its own terms: kube-rs retries a
/// 429, 503 or 504 up to 15 times within seconds by default, which turns every write an
/// overloaded API server times out into a burst of them (seen: status patches of 250 nodes
/// against one object, 18 patches per write). A request is given up after `timeout`, which
/// also ends the API server's work on it.
pub async fn kube_client_without_retries(
    component: &str,
    version: &str,
    timeout: std::time::Duration,
) -> anyhow::Result<kube::Client> {
    let mut config = config(component, version).await?;
    config.default_retry = false;
    config.read_timeout = Some(timeout);
    config.write_timeout = Some(timeout);
    // NB: else the time a pooled connection sat idle counts against the read timeout.
    config.reset_reader_on_write = true;
    Ok(kube::Client::try_from(config)?)
}

async fn config(component: &str, version: &str) -> anyhow::Result<kube::Config> {
    let mut config = kube::Config::infer().await?;
    let agent = http::HeaderValue::try_from(format!("{component}/{version}"))?;
    config.headers.push((http::header::USER_AGENT, agent));
    Ok(config)
}
