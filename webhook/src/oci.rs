//! The few registry requests an ENTRYPOINT lookup needs (a manifest, perhaps the platform's
//! manifest from an index, the image config, perhaps a token), on an HTTP client that treats
//! every hop as hostile.
//!
//! Why not oci-client, which this replaced: it follows redirects and token realms to any
//! address, and reads bodies without a limit; neither can be configured from outside. Here:
//! - every host name is resolved by [`CheckedResolver`] at connect time, so a redirect, a token
//!   realm or a DNS answer that changed since the first check (rebinding) cannot lead to
//!   loopback, link-local, metadata or (unless allowed) private addresses;
//! - URLs that name an address literally skip any resolver, so [`Destinations::check`] looks at
//!   them, and at the scheme, on every redirect hop and token realm;
//! - every body is read up to [`BODY_LIMIT`], and whatever is fetched by digest is verified;
//! - failures are told in words of our own: the kind, the image's registry host and the HTTP
//!   status, never a body, never a header, never the address a redirect named. A denial goes
//!   back to whoever created the pod.

use crate::registry::forbidden_address;
use oci_spec::distribution::Reference;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue, WWW_AUTHENTICATE};
use reqwest::{StatusCode, Url};
use serde_json::Value;
use sha2::Digest;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Largest manifest, image config or token answer read. Real ones are kilobytes; the OCI
/// distribution spec asks registries to accept manifests of 4 MiB, yet an index of a thousand
/// platforms still fits in one.
pub const BODY_LIMIT: usize = 1 << 20;

/// Redirect hops followed per request (registries send blobs to a CDN: one hop).
const MAX_REDIRECTS: usize = 5;

const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// Why a lookup failed, as the denial tells it. `host` is the image's registry (the pod's own
/// text, already bounded), never a host a registry named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// The registry refused the credentials, or there were none it accepts.
    #[error("the registry {0} refused access (not authorized); check the pod's imagePullSecrets")]
    Unauthorized(String),
    /// The registry has no such repository or tag.
    #[error("the registry {0} has no such image")]
    NotFound(String),
    /// Any other unexpected HTTP status.
    #[error("the registry {host} answered HTTP {status}")]
    Status {
        /// The image's registry.
        host: String,
        /// The HTTP status code.
        status: u16,
    },
    /// A request ran past its time limit.
    #[error("the registry {0} did not answer in time")]
    Timeout(String),
    /// No connection could be made (DNS, TCP or TLS).
    #[error("the registry {0} could not be reached")]
    Unreachable(String),
    /// A hop (the registry, a redirect or a token realm) led to an address off limits.
    #[error(
        "the registry {host} leads to {kind}, which this webhook does not connect to \
         (an operator can allow a registry with --registry-allowed-hosts)"
    )]
    Forbidden {
        /// The image's registry.
        host: String,
        /// The kind of address refused (e.g. loopback), never the address itself.
        kind: &'static str,
    },
    /// A body went past [`BODY_LIMIT`].
    #[error("the registry {host} sent more than {BODY_LIMIT} bytes for the {what}")]
    TooLarge {
        /// The image's registry.
        host: String,
        /// What was being read (manifest, image config, token answer).
        what: &'static str,
    },
    /// A reply that does not parse, or a blob that does not match its digest.
    #[error("the registry {host} sent something that is not a usable {what}")]
    Invalid {
        /// The image's registry.
        host: String,
        /// What was expected (e.g. image manifest).
        what: &'static str,
    },
}

/// Where requests may go: the operator's settings, applied to every hop.
#[derive(Debug, Clone, Default)]
pub struct Destinations {
    /// Hosts (`host` or `host:port`) that skip the address check: the operator vouches for them.
    pub trusted_hosts: Vec<String>,
    /// Whether private addresses may be reached (an in-cluster registry).
    pub allow_private: bool,
    /// `host:port` of registries spoken to over plain HTTP (local and test registries).
    pub plain_http: Vec<String>,
}

impl Destinations {
    /// Whether the operator vouches for a host name, as a resolver sees it (without a port).
    fn trusted_name(&self, name: &str) -> bool {
        self.trusted_hosts
            .iter()
            .any(|trusted| host_part(trusted) == name)
    }

    /// Whether the operator vouches for an address written in a URL: an entry names it with
    /// this port, or without one and the port is HTTPS's own (443). A host vouched for is not
    /// vouched for on its other ports (its API server, its SSH).
    fn trusted_authority(&self, host: &str, port: u16) -> bool {
        let with_port = format!("{host}:{port}");
        self.trusted_hosts
            .iter()
            .any(|trusted| *trusted == with_port || (*trusted == host && port == 443))
    }

    /// Whether `url` may be requested: HTTPS (HTTP only to a plain-HTTP registry), and, for an
    /// address written literally (which no resolver sees), an address we connect to.
    /// Returns the kind of address refused.
    pub fn check(&self, url: &Url) -> Result<(), &'static str> {
        let host = url.host_str().unwrap_or_default();
        let port = url.port_or_known_default().unwrap_or_default();
        let with_port = format!("{host}:{port}");
        match url.scheme() {
            "https" => {}
            "http"
                if self
                    .plain_http
                    .iter()
                    .any(|h| *h == host || *h == with_port) => {}
            _ => return Err("a plain-HTTP or non-HTTP address"),
        }
        let address = match url.host() {
            Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
            Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
            // The resolver checks the addresses of names; one the operator vouches for skips
            // that check, so it is held to the port it was named with here.
            Some(url::Host::Domain(_)) if self.trusted_name(host) => {
                return if self.trusted_authority(host, port) {
                    Ok(())
                } else {
                    Err("a port --registry-allowed-hosts does not name for that host")
                };
            }
            Some(url::Host::Domain(_)) => return Ok(()),
            None => return Err("an address without a host"),
        };
        if self.trusted_authority(host, port) {
            return Ok(());
        }
        forbidden_address(address, self.allow_private).map_or(Ok(()), Err)
    }
}

/// `host[:port]` → host, brackets of IPv6 literals removed.
fn host_part(authority: &str) -> &str {
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !host.ends_with(':') => {
            host
        }
        _ => authority,
    };
    host.trim_start_matches('[').trim_end_matches(']')
}

/// The refusal a resolver or redirect check raises, found again in the error's chain.
#[derive(Debug)]
struct ForbiddenAddress(&'static str);

impl std::fmt::Display for ForbiddenAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for ForbiddenAddress {}

/// Resolves host names and refuses those with any address off limits, at the moment of
/// connecting: the answer checked is the answer used.
#[derive(Debug)]
struct CheckedResolver(Destinations);

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        let trusted = self.0.trusted_name(&host);
        let allow_private = self.0.allow_private;
        Box::pin(async move {
            let addresses: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if !trusted
                && let Some(kind) = addresses
                    .iter()
                    .find_map(|address| forbidden_address(address.ip(), allow_private))
            {
                return Err(Box::new(ForbiddenAddress(kind)) as _);
            }
            Ok(Box::new(addresses.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Credentials for one registry, from a pull secret.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Credential {
    /// User name for the registry's basic or token auth.
    pub username: String,
    /// Password or token; never in `Debug` output.
    pub password: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// One HTTP client for every lookup: it holds no credentials (each lookup keeps its own token),
/// so sharing it shares connections and nothing else.
#[derive(Debug, Clone)]
pub struct Fetcher {
    http: reqwest::Client,
    destinations: Destinations,
    architecture: String,
}

impl Fetcher {
    /// `ca_certificates` (DER) are trusted besides the system's roots.
    pub fn new(
        destinations: Destinations,
        ca_certificates: &[Vec<u8>],
        architecture: String,
        timeout: Duration,
    ) -> Result<Fetcher, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let certificates = ca_certificates
            .iter()
            .map(|der| reqwest::Certificate::from_der(der))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("a registry CA certificate is not usable: {e}"))?;
        let hops = destinations.clone();
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            // NB: previous() holds the first URL too.
            if attempt.previous().len() > MAX_REDIRECTS {
                return attempt.error(ForbiddenAddress("too many redirects"));
            }
            match hops.check(attempt.url()) {
                Ok(()) => attempt.follow(),
                Err(kind) => attempt.error(ForbiddenAddress(kind)),
            }
        });
        let http = reqwest::Client::builder()
            .tls_certs_merge(certificates)
            .dns_resolver(Arc::new(CheckedResolver(destinations.clone())))
            .redirect(redirects)
            .referer(false)
            // Hosts are the pods' choice: keep few idle connections, briefly.
            .pool_max_idle_per_host(2)
            .pool_idle_timeout(Duration::from_secs(10))
            // NB: proxies from the environment would resolve names themselves, past our check.
            .no_proxy()
            .connect_timeout(timeout)
            .read_timeout(timeout)
            .user_agent(concat!("ssi-webhook/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("failed to set up the registry HTTP client: {e}"))?;
        Ok(Fetcher {
            http,
            destinations,
            architecture,
        })
    }

    /// The image config (JSON bytes) of `reference` for linux and our architecture.
    pub async fn image_config(
        &self,
        reference: &Reference,
        host: &str,
        credential: Option<&Credential>,
    ) -> Result<Vec<u8>, Failure> {
        let registry = reference.resolve_registry();
        let scheme = if self.destinations.plain_http.iter().any(|h| h == registry) {
            "http"
        } else {
            "https"
        };
        let base = Url::parse(&format!(
            "{scheme}://{registry}/v2/{}/",
            reference.repository()
        ))
        .map_err(|_| Failure::Invalid {
            host: host.to_owned(),
            what: "image reference",
        })?;
        let mut session = Session {
            fetcher: self,
            host,
            base,
            repository: reference.repository(),
            credential,
            authorization: None,
        };
        let wanted = reference
            .digest()
            .or(reference.tag())
            .unwrap_or("latest")
            .to_owned();
        let mut manifest = session.manifest(&wanted).await?;
        if let Some(entries) = &manifest.manifests {
            let digest = self
                .platform_manifest(entries)
                .ok_or_else(|| Failure::Invalid {
                    host: host.to_owned(),
                    what: "image index (no linux image for this architecture)",
                })?;
            manifest = session.manifest(&digest).await?;
        }
        let config = manifest
            .config
            .map(|descriptor| descriptor.digest)
            .filter(|digest| checked_digest(digest))
            .ok_or_else(|| Failure::Invalid {
                host: host.to_owned(),
                what: "image manifest",
            })?;
        session
            .fetch(
                &format!("blobs/{config}"),
                "*/*",
                "image config",
                Some(&config),
            )
            .await
    }

    /// The digest of the linux manifest for our architecture in an image index.
    fn platform_manifest(&self, entries: &[IndexEntry]) -> Option<String> {
        entries
            .iter()
            .find(|entry| {
                entry.platform.as_ref().is_some_and(|platform| {
                    platform.os == "linux" && platform.architecture == self.architecture
                })
            })
            .map(|entry| entry.digest.clone())
            .filter(|digest| checked_digest(digest))
    }
}

/// The fields of a manifest or index that a lookup reads; serde skips the rest of the body
/// without keeping it (a parsed `Value` of a 1 MiB body could take a hundred times that).
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    schema_version: u32,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    manifests: Option<Vec<IndexEntry>>,
}

#[derive(serde::Deserialize)]
struct Descriptor {
    digest: String,
}

#[derive(serde::Deserialize)]
struct IndexEntry {
    digest: String,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(serde::Deserialize)]
struct Platform {
    os: String,
    architecture: String,
}

/// One lookup's conversation with a registry: the token it earned stays here.
struct Session<'a> {
    fetcher: &'a Fetcher,
    host: &'a str,
    base: Url,
    repository: &'a str,
    credential: Option<&'a Credential>,
    authorization: Option<HeaderValue>,
}

impl Session<'_> {
    async fn manifest(&mut self, reference: &str) -> Result<Manifest, Failure> {
        let digest = reference.contains(':').then_some(reference);
        let body = self
            .fetch(
                &format!("manifests/{reference}"),
                MANIFEST_TYPES,
                "image manifest",
                digest,
            )
            .await?;
        let manifest: Manifest =
            serde_json::from_slice(&body).map_err(|_| self.invalid("image manifest"))?;
        if manifest.schema_version != 2 {
            return Err(self.invalid("image manifest (only schema version 2 is read)"));
        }
        Ok(manifest)
    }

    /// GETs `path` under the repository, answering the registry's challenge once; checks the
    /// body against `digest` when there is one.
    async fn fetch(
        &mut self,
        path: &str,
        accept: &str,
        what: &'static str,
        digest: Option<&str>,
    ) -> Result<Vec<u8>, Failure> {
        let url = self.base.join(path).map_err(|_| self.invalid(what))?;
        let mut response = self.get(&url, accept).await?;
        // A challenge counts only from the registry itself: one from where a redirect led
        // (a CDN, or anyone the registry names) must not get the pod's credentials.
        if response.status() == StatusCode::UNAUTHORIZED
            && self.authorization.is_none()
            && same_origin(response.url(), &url)
        {
            let challenge = response
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
                .unwrap_or_default();
            self.authorization = Some(self.authorize(&challenge).await?);
            response = self.get(&url, accept).await?;
        }
        let body = self.body(self.ok(response)?, what).await?;
        if let Some(digest) = digest
            && !digest_matches(digest, &body)
        {
            return Err(self.invalid(what));
        }
        Ok(body)
    }

    async fn get(&self, url: &Url, accept: &str) -> Result<reqwest::Response, Failure> {
        self.fetcher
            .destinations
            .check(url)
            .map_err(|kind| self.forbidden(kind))?;
        let mut request = self.fetcher.http.get(url.clone()).header(ACCEPT, accept);
        if let Some(authorization) = &self.authorization {
            request = request.header(AUTHORIZATION, authorization.clone());
        }
        request.send().await.map_err(|e| self.transport(&e))
    }

    /// Answers a `WWW-Authenticate` challenge: Basic with the pod's credentials, or Bearer with
    /// a token from the realm (RFC 6750 / the distribution token protocol).
    async fn authorize(&self, challenge: &str) -> Result<HeaderValue, Failure> {
        let refused = || Failure::Unauthorized(self.host.to_owned());
        let (scheme, parameters) = parse_challenge(challenge).ok_or_else(refused)?;
        let basic = self
            .credential
            .map(|c| (c.username.as_str(), c.password.as_str()));
        if scheme.eq_ignore_ascii_case("basic") {
            let (user, password) = basic.ok_or_else(refused)?;
            return sensitive(&format!("Basic {}", basic_token(user, password)))
                .ok_or_else(refused);
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(refused());
        }
        let parameter = |name: &str| {
            parameters
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(name))
                .map(|(_, value)| value.as_str())
        };
        let mut realm = parameter("realm")
            .and_then(|realm| Url::parse(realm).ok())
            .ok_or_else(|| self.invalid("authentication challenge"))?;
        let scope = format!("repository:{}:pull", self.repository);
        {
            let mut query = realm.query_pairs_mut();
            if let Some(service) = parameter("service") {
                query.append_pair("service", service);
            }
            query.append_pair("scope", &scope);
        }
        self.fetcher
            .destinations
            .check(&realm)
            .map_err(|kind| self.forbidden(kind))?;
        let mut request = self.fetcher.http.get(realm);
        if let Some((user, password)) = basic {
            request = request.basic_auth(user, Some(password));
        }
        let response = request.send().await.map_err(|e| self.transport(&e))?;
        let body = self.body(self.ok(response)?, "token answer").await?;
        let answer: Value =
            serde_json::from_slice(&body).map_err(|_| self.invalid("token answer"))?;
        let token = answer["token"]
            .as_str()
            .or(answer["access_token"].as_str())
            .filter(|token| !token.is_empty())
            .ok_or_else(|| self.invalid("token answer"))?;
        sensitive(&format!("Bearer {token}")).ok_or_else(|| self.invalid("token answer"))
    }

    fn ok(&self, response: reqwest::Response) -> Result<reqwest::Response, Failure> {
        match response.status() {
            status if status.is_success() => Ok(response),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                Err(Failure::Unauthorized(self.host.to_owned()))
            }
            StatusCode::NOT_FOUND => Err(Failure::NotFound(self.host.to_owned())),
            status => Err(Failure::Status {
                host: self.host.to_owned(),
                status: status.as_u16(),
            }),
        }
    }

    /// The body, up to [`BODY_LIMIT`]: refused before reading when the length is announced,
    /// else as soon as it grows past.
    async fn body(
        &self,
        mut response: reqwest::Response,
        what: &'static str,
    ) -> Result<Vec<u8>, Failure> {
        let too_large = || Failure::TooLarge {
            host: self.host.to_owned(),
            what,
        };
        if response
            .content_length()
            .is_some_and(|length| length > BODY_LIMIT as u64)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.transport(&e))? {
            if body.len() + chunk.len() > BODY_LIMIT {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    fn transport(&self, error: &reqwest::Error) -> Failure {
        let mut source: Option<&dyn std::error::Error> = Some(error);
        while let Some(cause) = source {
            if let Some(ForbiddenAddress(kind)) = cause.downcast_ref::<ForbiddenAddress>() {
                return self.forbidden(kind);
            }
            source = cause.source();
        }
        if error.is_timeout() {
            Failure::Timeout(self.host.to_owned())
        } else {
            Failure::Unreachable(self.host.to_owned())
        }
    }

    fn forbidden(&self, kind: &'static str) -> Failure {
        Failure::Forbidden {
            host: self.host.to_owned(),
            kind,
        }
    }

    fn invalid(&self, what: &'static str) -> Failure {
        Failure::Invalid {
            host: self.host.to_owned(),
            what,
        }
    }
}

fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// A header value marked sensitive (kept out of reqwest's debug output), if it is one.
fn sensitive(text: &str) -> Option<HeaderValue> {
    let mut value = HeaderValue::from_str(text).ok()?;
    value.set_sensitive(true);
    Some(value)
}

fn basic_token(user: &str, password: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

/// A digest we can verify and may put into a URL: `sha256:` or `sha512:` and lowercase hex of
/// the right length. Registries name these; nothing else reaches a path.
fn checked_digest(digest: &str) -> bool {
    let hex_length = match digest.split_once(':') {
        Some(("sha256", hex)) => (hex, 64),
        Some(("sha512", hex)) => (hex, 128),
        _ => return false,
    };
    let (hex, length) = hex_length;
    hex.len() == length && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn digest_matches(digest: &str, body: &[u8]) -> bool {
    let hex = |bytes: &[u8]| -> String { bytes.iter().map(|b| format!("{b:02x}")).collect() };
    match digest.split_once(':') {
        Some(("sha256", expected)) => hex(&sha2::Sha256::digest(body)) == expected,
        Some(("sha512", expected)) => hex(&sha2::Sha512::digest(body)) == expected,
        _ => false,
    }
}

/// `Bearer realm="https://auth.example/token",service="registry.example"` → the scheme and its
/// parameters. Values may be quoted (with backslash escapes) or bare tokens.
fn parse_challenge(header: &str) -> Option<(String, Vec<(String, String)>)> {
    let header = header.trim();
    let (scheme, mut rest) = header.split_once(' ').unwrap_or((header, ""));
    if scheme.is_empty() {
        return None;
    }
    let mut parameters = Vec::new();
    loop {
        rest = rest.trim_start_matches([' ', ',']);
        if rest.is_empty() {
            return Some((scheme.to_owned(), parameters));
        }
        let (key, after) = rest.split_once('=')?;
        let key = key.trim();
        let after = after.trim_start();
        let value;
        if let Some(quoted) = after.strip_prefix('"') {
            let mut text = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((at, c)) = chars.next() {
                match c {
                    '\\' => text.push(chars.next()?.1),
                    '"' => {
                        end = Some(at + 1);
                        break;
                    }
                    c => text.push(c),
                }
            }
            value = text;
            rest = &quoted[end?..];
        } else {
            let end = after.find(',').unwrap_or(after.len());
            value = after[..end].trim().to_owned();
            rest = &after[end..];
        }
        if key.is_empty() {
            return None;
        }
        parameters.push((key.to_owned(), value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_as_registries_send_them() {
        let (scheme, parameters) = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/ubuntu:pull,push""#,
        )
        .unwrap();
        assert_eq!(scheme, "Bearer");
        assert_eq!(
            parameters,
            [
                (
                    "realm".to_owned(),
                    "https://auth.docker.io/token".to_owned()
                ),
                ("service".to_owned(), "registry.docker.io".to_owned()),
                (
                    "scope".to_owned(),
                    "repository:library/ubuntu:pull,push".to_owned()
                ),
            ]
        );
        let (scheme, parameters) = parse_challenge(r#"Basic realm="a \"quoted\" realm""#).unwrap();
        assert_eq!(scheme, "Basic");
        assert_eq!(parameters[0].1, r#"a "quoted" realm"#);
        let (_, parameters) = parse_challenge("Bearer realm=bare, service = s").unwrap();
        assert_eq!(parameters[0].1, "bare");
        assert_eq!(parameters[1], ("service".to_owned(), "s".to_owned()));
        assert!(parse_challenge(r#"Bearer realm="unterminated"#).is_none());
        assert!(parse_challenge("Bearer =x").is_none());
        assert!(parse_challenge("").is_none());
    }

    #[test]
    fn only_verifiable_digests_reach_a_url() {
        let body = b"{}";
        let digest = format!(
            "sha256:{}",
            sha2::Sha256::digest(body)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        assert!(checked_digest(&digest));
        assert!(digest_matches(&digest, body));
        assert!(!digest_matches(&digest, b"{ }"));
        for bad in [
            "sha256:../../../v2/other/blobs",
            "md5:d41d8cd98f00b204e9800998ecf8427e",
            "sha256:ABCDEF",
            &digest.to_uppercase(),
            "",
        ] {
            assert!(!checked_digest(bad), "{bad}");
        }
    }

    #[test]
    fn every_hop_is_checked() {
        let destinations = Destinations {
            trusted_hosts: vec![
                "127.0.0.1:5000".into(),
                "registry.internal".into(),
                "mirror.internal:5443".into(),
            ],
            allow_private: false,
            plain_http: vec!["10.0.0.5:80".into()],
        };
        let check = |url: &str| destinations.check(&Url::parse(url).unwrap());
        assert_eq!(check("https://registry.example/v2/"), Ok(()));
        assert!(
            check("https://169.254.169.254/latest")
                .unwrap_err()
                .contains("metadata")
        );
        assert!(check("https://[::1]/").unwrap_err().contains("loopback"));
        assert!(check("https://10.1.2.3/").unwrap_err().contains("private"));
        assert!(
            check("http://registry.example/")
                .unwrap_err()
                .contains("plain-HTTP")
        );
        assert!(check("file:///etc/passwd").is_err());
        // The operator's registry, and that address on no other port.
        assert_eq!(check("https://127.0.0.1:5000/"), Ok(()));
        assert!(
            check("https://127.0.0.1:6000/")
                .unwrap_err()
                .contains("loopback")
        );
        // A trusted name on the port it was named with (443 when none), and on no other.
        assert_eq!(check("https://registry.internal/v2/"), Ok(()));
        assert_eq!(check("https://mirror.internal:5443/v2/"), Ok(()));
        for elsewhere in [
            "https://registry.internal:6443/",
            "https://registry.internal:22/",
            "https://mirror.internal/v2/",
        ] {
            assert!(
                check(elsewhere).unwrap_err().contains("does not name"),
                "{elsewhere}"
            );
        }
        // Plain HTTP to the configured registry, and the address check still applies to it.
        assert!(
            check("http://10.0.0.5:80/")
                .unwrap_err()
                .contains("private")
        );
    }
}
