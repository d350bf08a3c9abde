use crate::retry::is_retryable_status;
use crate::{Error, Operation, RetryPolicy, Secret};
use reqwest::header::{HeaderMap, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use ssi_core::Login;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use url::Url;

/// Where the store is and how to talk to it.
#[derive(Clone)]
pub struct StoreConfig {
    /// Base address, e.g. `https://vault.example.com:8200` (a path prefix is kept).
    pub address: Url,
    /// Vault Enterprise / OpenBao namespace, sent as `X-Vault-Namespace`.
    pub namespace: Option<String>,
    /// PEM bundle of the CAs to trust instead of the system's.
    pub ca_pem: Option<String>,
    /// Accept any server certificate. For tests and emergencies only.
    pub skip_tls_verify: bool,
    /// Bound on each HTTP request, connection included.
    pub timeout: Duration,
    /// How failed requests are retried.
    pub retry: RetryPolicy,
    /// Largest reply body read from the store; a larger one is an error naming the operation.
    pub max_response_bytes: usize,
}

/// Most JSON values one reply may hold: a secret of a few hundred fields, a certificate chain,
/// with room to spare. A reply of tiny values (a hostile or misconfigured store) costs about 20
/// times its size as a tree, so its size alone does not bound it.
pub const MAX_REPLY_VALUES: usize = 16_384;

/// Default of [`StoreConfig::max_response_bytes`]: far above any secret a pod mounts (Vault's KV
/// entries are typically well under 1 MiB), far below what would hurt a node.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

impl StoreConfig {
    /// The client's configuration for `connection`, the other settings at their defaults.
    pub fn of(connection: &ssi_core::Connection) -> Result<StoreConfig, Error> {
        let address = Url::parse(&connection.address).map_err(|e| Error::Config {
            reason: format!(
                "the store address {:?} is not a URL: {e}",
                connection.address
            ),
        })?;
        Ok(StoreConfig {
            namespace: connection.namespace.clone(),
            ca_pem: connection.ca_pem.clone(),
            skip_tls_verify: connection.skip_tls_verify,
            ..StoreConfig::new(address)
        })
    }

    /// The store at `address`, with system CAs, a 10 s timeout and the default retries and
    /// reply limit.
    pub fn new(address: Url) -> StoreConfig {
        StoreConfig {
            address,
            namespace: None,
            ca_pem: None,
            skip_tls_verify: false,
            timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        }
    }
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreConfig")
            .field("address", &self.address.as_str())
            .field("namespace", &self.namespace)
            .field("ca_pem", &self.ca_pem.as_ref().map(|_| "<pem>"))
            .field("skip_tls_verify", &self.skip_tls_verify)
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .field("max_response_bytes", &self.max_response_bytes)
            .finish()
    }
}

/// A Vault token with the moment it was issued and how long it lives.
#[derive(Clone)]
pub struct VaultToken {
    secret: SecretString,
    issued: Instant,
    /// `None` for tokens that do not expire (root tokens).
    ttl: Option<Duration>,
    renewable: bool,
}

impl VaultToken {
    /// Wraps a token obtained elsewhere (e.g. a root token in tests).
    pub fn new(secret: SecretString, ttl: Option<Duration>) -> VaultToken {
        VaultToken {
            secret,
            issued: Instant::now(),
            ttl,
            renewable: false,
        }
    }

    /// A token saved earlier, expiring at `expires_at` (`None`: never): its TTL is what is left.
    pub fn restore(
        secret: SecretString,
        expires_at: Option<std::time::SystemTime>,
        renewable: bool,
    ) -> VaultToken {
        let ttl = expires_at.map(|at| {
            at.duration_since(std::time::SystemTime::now())
                .unwrap_or_default()
        });
        VaultToken {
            renewable,
            ..VaultToken::new(secret, ttl)
        }
    }

    /// Whether the store lets the token be renewed (`auth/token/renew-self`).
    pub fn renewable(&self) -> bool {
        self.renewable
    }

    /// When the token expires by the wall clock; `None` if it never does.
    pub fn expires_at(&self) -> Option<std::time::SystemTime> {
        self.ttl
            .map(|ttl| std::time::SystemTime::now() + ttl.saturating_sub(self.issued.elapsed()))
    }

    /// How long the token lived when issued; `None` if it never expires.
    pub fn ttl(&self) -> Option<Duration> {
        self.ttl
    }

    /// Whether the token expires within `margin` from now (never, for tokens without a TTL).
    pub fn expires_within(&self, margin: Duration) -> bool {
        self.ttl
            .is_some_and(|ttl| self.issued.elapsed() + margin >= ttl)
    }

    /// When the token is two thirds into its life, the time to renew it; `None` if it never
    /// expires.
    pub fn renew_at(&self) -> Option<std::time::SystemTime> {
        let ttl = self.ttl?;
        Some(std::time::SystemTime::now() + (ttl * 2 / 3).saturating_sub(self.issued.elapsed()))
    }

    /// The token itself, for the `X-Vault-Token` header. Keep it out of logs and error messages.
    pub fn expose(&self) -> &str {
        self.secret.expose_secret()
    }
}

impl fmt::Debug for VaultToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultToken")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// Called once per login or read, after retries, with whether it succeeded: lets a caller count
/// store traffic (metrics, benchmarks) without the client knowing about any metrics system.
pub type Observer = Arc<dyn Fn(&Operation, bool) + Send + Sync>;

/// What a lease renewal granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// How long the lease now lasts, from the renewal on.
    pub duration: Duration,
    /// Whether it can be renewed again.
    pub renewable: bool,
}

/// A connection to one store. Cheap to clone; clones share the connection pool.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    address: Url,
    retry: RetryPolicy,
    max_response_bytes: usize,
    observer: Option<Observer>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("address", &self.address.as_str())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for the store `config` describes; [`Error::Config`] when the address is not
    /// http(s), the namespace is no valid header value or the CA bundle holds no usable certificate.
    pub fn new(config: &StoreConfig) -> Result<Client, Error> {
        let invalid = |reason: String| Error::Config { reason };
        if !matches!(config.address.scheme(), "http" | "https") {
            return Err(invalid(format!(
                "address {} must start with http:// or https://",
                config.address
            )));
        }
        // NB: reqwest is built without a bundled crypto provider so that the whole project uses
        // ring once; binaries install it in main, this covers library users and tests. An error
        // only means a provider is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();

        let mut headers = HeaderMap::new();
        if let Some(ns) = config.namespace.as_deref().filter(|ns| !ns.is_empty()) {
            let value = HeaderValue::from_str(ns)
                .map_err(|_| invalid(format!("namespace {ns:?} is not a valid header value")))?;
            headers.insert("X-Vault-Namespace", value);
        }
        let mut builder = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .tls_danger_accept_invalid_certs(config.skip_tls_verify)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("ssi-vault/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &config.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
                .map_err(|e| invalid(format!("the CA bundle is not valid PEM: {e}")))?;
            if certs.is_empty() {
                return Err(invalid("the CA bundle holds no certificate".into()));
            }
            builder = builder.tls_certs_only(certs);
        } else if config.address.scheme() == "http" {
            // Plain HTTP never uses TLS (redirects are not followed): skip loading the system's
            // roots, which costs milliseconds at every injector start.
            builder = builder.tls_certs_only(Vec::new());
        }
        let http = builder
            .build()
            .map_err(|e| invalid(format!("failed to set up the HTTP client: {e}")))?;
        Ok(Client {
            http,
            address: config.address.clone(),
            retry: config.retry,
            max_response_bytes: config.max_response_bytes,
            observer: None,
        })
    }

    /// Reports every login and read to `observer`.
    pub fn with_observer(mut self, observer: Observer) -> Client {
        self.observer = Some(observer);
        self
    }

    /// The store's base address.
    pub fn address(&self) -> &Url {
        &self.address
    }

    /// Logs in as `login`, presenting `jwt` (a ServiceAccount token). Both auth methods take
    /// the same request; they differ in how the store checks the token (see [`ssi_core::login`]).
    pub async fn login(&self, login: &Login, jwt: &SecretString) -> Result<VaultToken, Error> {
        let Login {
            method,
            mount,
            role,
        } = login;
        let auth_path = mount.as_str();
        let operation = Operation::Login {
            method: *method,
            auth_path: auth_path.to_owned(),
            role: role.to_owned(),
        };
        if !ssi_core::names::is_safe_path(auth_path) {
            return Err(Error::InvalidPath {
                path: auth_path.to_owned(),
            });
        }
        let url = self.url(&format!("auth/{auth_path}/login"))?;
        let body = json!({ "jwt": jwt.expose_secret(), "role": role });
        let response = self
            .send(&operation, &[jwt.expose_secret()], || {
                self.http.post(url.clone()).json(&body)
            })
            .await
            .map_err(|error| match error {
                // Refusals of the token only: a missing mount (404), a bad request (400), a
                // store that cannot be reached or failed (5xx) say nothing about the token.
                Error::Api {
                    operation,
                    status: status @ (401 | 403),
                    errors,
                } => Error::LoginRefused {
                    operation,
                    status,
                    errors,
                    token_audiences: crate::claims::token_audiences(jwt.expose_secret()),
                },
                other => other,
            })?;
        let auth = response
            .get("auth")
            .filter(|a| a.is_object())
            .ok_or_else(|| Error::InvalidResponse {
                operation: operation.clone(),
                detail: "no auth block".into(),
            })?;
        let token = auth
            .get("client_token")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::InvalidResponse {
                operation: operation.clone(),
                detail: "no client_token".into(),
            })?;
        Ok(token_from_auth(token, auth))
    }

    /// Extends `token`'s life (`auth/token/renew-self`, which the default policy allows) and
    /// returns it with what the store granted, which is less near the token's maximum TTL.
    /// Leases the token obtained live only as long as it does.
    pub async fn renew_token(&self, token: &VaultToken) -> Result<VaultToken, Error> {
        let operation = Operation::RenewToken;
        let url = self.url("auth/token/renew-self")?;
        let response = self
            .send(&operation, &[token.expose()], || {
                self.http
                    .put(url.clone())
                    .header("X-Vault-Token", token.expose())
                    .json(&json!({}))
            })
            .await?;
        let auth = response
            .get("auth")
            .filter(|a| a.is_object())
            .ok_or_else(|| Error::InvalidResponse {
                operation: operation.clone(),
                detail: "no auth block".into(),
            })?;
        Ok(token_from_auth(token.expose(), auth))
    }

    /// Reads the secret at `path` (the full API path below `/v1/`, e.g. `secret/data/app`),
    /// optionally a given KV v2 `version`.
    pub async fn read(
        &self,
        token: &VaultToken,
        path: &str,
        version: Option<u64>,
    ) -> Result<Secret, Error> {
        let operation = Operation::Read {
            path: path.to_owned(),
            version,
        };
        if !ssi_core::names::is_safe_path(path) {
            return Err(Error::InvalidPath {
                path: path.to_owned(),
            });
        }
        let mut url = self.url(path)?;
        if let Some(v) = version {
            url.query_pairs_mut().append_pair("version", &v.to_string());
        }
        let body = self
            .send(&operation, &[token.expose()], || {
                self.http
                    .get(url.clone())
                    .header("X-Vault-Token", token.expose())
            })
            .await
            .map_err(|e| match e {
                Error::Api { status: 404, .. } => Error::NotFound {
                    path: path.to_owned(),
                },
                other => other,
            })?;
        Secret::from_response(path, body)
            .map_err(|detail| Error::InvalidResponse { operation, detail })
    }

    /// Writes `body` (a JSON object) to `path` and returns what the store answered, for engines
    /// that issue a secret on a write (`pki/issue/<role>`, `database/...`).
    pub async fn write(
        &self,
        token: &VaultToken,
        path: &str,
        body: &Value,
    ) -> Result<Secret, Error> {
        let operation = Operation::Write {
            path: path.to_owned(),
        };
        if !ssi_core::names::is_safe_path(path) {
            return Err(Error::InvalidPath {
                path: path.to_owned(),
            });
        }
        let url = self.url(path)?;
        let answer = self
            .send(&operation, &[token.expose()], || {
                self.http
                    .post(url.clone())
                    .header("X-Vault-Token", token.expose())
                    .json(body)
            })
            .await?;
        Secret::from_response(path, answer)
            .map_err(|detail| Error::InvalidResponse { operation, detail })
    }

    /// Asks to extend the lease `lease_id` (of the secret read from `path`) by `increment`;
    /// returns what the store granted, which is less near the lease's maximum TTL.
    pub async fn renew_lease(
        &self,
        token: &VaultToken,
        path: &str,
        lease_id: &str,
        increment: Duration,
    ) -> Result<Lease, Error> {
        let operation = Operation::RenewLease {
            path: path.to_owned(),
        };
        let url = self.url("sys/leases/renew")?;
        let body = json!({ "lease_id": lease_id, "increment": increment.as_secs() });
        let response = self
            .send(&operation, &[token.expose(), lease_id], || {
                self.http
                    .put(url.clone())
                    .header("X-Vault-Token", token.expose())
                    .json(&body)
            })
            .await?;
        Ok(Lease {
            duration: crate::ttl_from_secs(
                response
                    .get("lease_duration")
                    .and_then(Value::as_u64)
                    .unwrap_or(0),
            ),
            renewable: response
                .get("renewable")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        })
    }

    /// Revokes the lease `lease_id` of the secret read from `path`, through
    /// `sys/leases/revoke/<lease_id>`, so that an operator can grant it per lease prefix
    /// (`path "sys/leases/revoke/database/creds/app/*"`) rather than for every lease.
    pub async fn revoke_lease(
        &self,
        token: &VaultToken,
        path: &str,
        lease_id: &str,
    ) -> Result<(), Error> {
        let operation = Operation::RevokeLease {
            path: path.to_owned(),
        };
        // NB: the id came from the store's reply; it goes into the URL only if it cannot change
        // the URL's meaning.
        if !ssi_core::names::is_safe_path(lease_id) {
            return Err(Error::InvalidResponse {
                operation,
                detail: "the lease id is not a plain path".into(),
            });
        }
        let url = self.url(&format!("sys/leases/revoke/{lease_id}"))?;
        self.send(&operation, &[token.expose(), lease_id], || {
            self.http
                .put(url.clone())
                .header("X-Vault-Token", token.expose())
        })
        .await
        .map(drop)
    }

    fn url(&self, path: &str) -> Result<Url, Error> {
        let mut url = self.address.clone();
        url.path_segments_mut()
            .map_err(|()| Error::Config {
                reason: format!("address {} cannot take a path", self.address),
            })?
            .pop_if_empty()
            .push("v1")
            .extend(path.split('/'));
        Ok(url)
    }

    /// Sends a request, retrying transport errors, 5xx and 429 within the retry policy, and
    /// returns the JSON body of a 2xx answer. `credentials` (what the request carries: a JWT, a
    /// token, a lease id) are cut out of the store's error texts.
    async fn send(
        &self,
        operation: &Operation,
        credentials: &[&str],
        request: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<Value, Error> {
        let result = self
            .send_with_retries(operation, credentials, request)
            .await;
        if let Some(observer) = &self.observer {
            observer(operation, result.is_ok());
        }
        result
    }

    async fn send_with_retries(
        &self,
        operation: &Operation,
        credentials: &[&str],
        request: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<Value, Error> {
        let mut retry = 0;
        loop {
            let (error, pause) = match self.attempt(operation, credentials, request()).await {
                Attempt::Done(result) => return result,
                Attempt::Retryable(error, pause) => (error, pause),
            };
            if retry >= self.retry.max_retries {
                return Err(error);
            }
            let pause = match pause {
                Pause::Backoff => self.retry.backoff(retry),
                Pause::Asked(asked) => asked,
                Pause::Throttled(asked) => self.retry.throttled(retry, asked),
            };
            tracing::debug!(%operation, retry, ?pause, error = %error, "retrying store request");
            tokio::time::sleep(pause).await;
            retry += 1;
        }
    }

    /// One request and its reply. The store's error texts leave here without `credentials`,
    /// before anything (a retry's log line included) shows them.
    async fn attempt(
        &self,
        operation: &Operation,
        credentials: &[&str],
        request: reqwest::RequestBuilder,
    ) -> Attempt {
        // A write that reached the store may have issued a secret: it is sent again only when
        // it cannot have arrived (no connection) or the store said to come back later (429).
        let issues = matches!(operation, Operation::Write { .. });
        let response = match request.send().await {
            Ok(response) => response,
            Err(source) if issues && !source.is_connect() => {
                return Attempt::Done(Err(self.unreachable(operation, source)));
            }
            Err(source) => {
                return Attempt::Retryable(self.unreachable(operation, source), Pause::Backoff);
            }
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        // NB: the share of the reply memory is held until the reply is parsed.
        let (bytes, _share) = match read_bounded(response, self.max_response_bytes).await {
            Ok(read) => read,
            Err(BodyError::TooLarge) => {
                return Attempt::Done(Err(Error::ResponseTooLarge {
                    operation: operation.clone(),
                    limit: self.max_response_bytes,
                }));
            }
            // A reply cut short is a transport failure. A read is retried like one; a login or
            // a renewal may have taken effect (a token issued), so it is not sent twice unless
            // the status said the store failed anyway.
            Err(BodyError::Transport(source)) => {
                let error = self.unreachable(operation, source);
                return if matches!(operation, Operation::Read { .. })
                    || (is_retryable_status(status) && !issues)
                {
                    Attempt::Retryable(error, Pause::Backoff)
                } else {
                    Attempt::Done(Err(error))
                };
            }
        };
        // NB: a revocation answers 204 with no body at all.
        if (200..300).contains(&status) && bytes.is_empty() {
            return Attempt::Done(Ok(Value::Null));
        }
        if (200..300).contains(&status) {
            return Attempt::Done(
                ssi_core::json::from_slice_bounded(&bytes, MAX_REPLY_VALUES).map_err(|e| {
                    Error::InvalidResponse {
                        operation: operation.clone(),
                        detail: format!("HTTP {status} with a body that is not JSON we take ({e})"),
                    }
                }),
            );
        }
        let error = Error::Api {
            operation: operation.clone(),
            status,
            errors: without_credentials(store_errors(&bytes), credentials),
        };
        if is_retryable_status(status) && (!issues || status == 429) {
            let asked = self.retry.server_requested(retry_after.as_deref());
            let pause = if status == 429 {
                Pause::Throttled(asked)
            } else {
                asked.map_or(Pause::Backoff, Pause::Asked)
            };
            Attempt::Retryable(error, pause)
        } else {
            Attempt::Done(Err(error))
        }
    }

    fn unreachable(&self, operation: &Operation, source: reqwest::Error) -> Error {
        Error::Unreachable {
            operation: operation.clone(),
            address: self.address.to_string(),
            source: source.without_url(),
        }
    }
}

/// The token of a login's or a renewal's `auth` block.
fn token_from_auth(token: &str, auth: &Value) -> VaultToken {
    let ttl = auth
        .get("lease_duration")
        .and_then(Value::as_u64)
        .filter(|&s| s > 0)
        .map(crate::ttl_from_secs);
    let mut token = VaultToken::new(SecretString::from(token.to_owned()), ttl);
    token.renewable = auth
        .get("renewable")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    token
}

/// How one request ended: for good, or with an error worth another try after a pause.
enum Attempt {
    Done(Result<Value, Error>),
    Retryable(Error, Pause),
}

/// The pause before the next try.
enum Pause {
    /// Our jittered backoff.
    Backoff,
    /// What the store asked for (`Retry-After`).
    Asked(Duration),
    /// The store refused as too many (429), asking for a pause or not.
    Throttled(Option<Duration>),
}

/// Why a reply's body was not read.
enum BodyError {
    TooLarge,
    Transport(reqwest::Error),
}

/// The `errors` array Vault puts in every error body; a non-JSON body (a proxy's HTML page) is
/// summarised instead of echoed.
fn store_errors(body: &[u8]) -> Vec<String> {
    match ssi_core::json::from_slice_bounded(body, MAX_REPLY_VALUES) {
        Ok(value) => value
            .get("errors")
            .and_then(Value::as_array)
            .map(|errors| {
                errors
                    .iter()
                    .filter_map(Value::as_str)
                    .map(one_line)
                    .collect()
            })
            .unwrap_or_default(),
        Err(_) if body.is_empty() => Vec::new(),
        Err(_) => vec![format!("non-JSON body of {} bytes", body.len())],
    }
}

/// Vault wraps multi-errors as "1 error occurred:\n\t* permission denied\n\n"; one line reads
/// better in logs and events.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The memory the replies being read and parsed may take together, in the whole process:
/// however many volumes rotate at once, no more than this is in flight (a reply's text twice,
/// as its buffer grows, and its tree). A reply waits for its share as it streams in.
pub const REPLY_MEMORY: usize = 24 * 1024 * 1024;

/// KiB of [`REPLY_MEMORY`] free.
static REPLY_MEMORY_KIB: tokio::sync::Semaphore =
    tokio::sync::Semaphore::const_new(REPLY_MEMORY / 1024);

/// What a tree of `len` bytes of JSON may cost, at most [`MAX_REPLY_VALUES`] values.
fn tree_cost(len: usize) -> usize {
    ssi_core::json::tree_cost(len, MAX_REPLY_VALUES)
}

fn kib(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX)
}

/// The body of `response`, read up to `limit` bytes (refused by its Content-Length or as soon
/// as it streams in past the limit), with its share of [`REPLY_MEMORY`] for reading it and for
/// its tree, held until the caller drops it.
async fn read_bounded(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<(Vec<u8>, tokio::sync::SemaphorePermit<'static>), BodyError> {
    if response
        .content_length()
        .is_some_and(|length| length > limit as u64)
    {
        return Err(BodyError::TooLarge);
    }
    // A reply takes its share as it streams in, without waiting while it holds some: when the
    // budget is short, it gives back what it holds and waits for the most it may need at once,
    // so no two replies can each hold part and wait for the other's. A limit above the budget
    // waits for all of it.
    let share = |len: usize| kib(2 * len + tree_cost(len)).min(kib(REPLY_MEMORY));
    let mut held = REPLY_MEMORY_KIB
        .acquire_many(0)
        .await
        .map_err(|_| BodyError::TooLarge)?;
    let mut at_most = false;
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Transport)? {
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge);
        }
        let more = share(body.len() + chunk.len()).saturating_sub(held.num_permits() as u32);
        if !at_most && more > 0 {
            match REPLY_MEMORY_KIB.try_acquire_many(more) {
                Ok(permit) => held.merge(permit),
                Err(_) => {
                    drop(std::mem::replace(
                        &mut held,
                        REPLY_MEMORY_KIB
                            .acquire_many(0)
                            .await
                            .map_err(|_| BodyError::TooLarge)?,
                    ));
                    held = REPLY_MEMORY_KIB
                        .acquire_many(share(limit))
                        .await
                        .map_err(|_| BodyError::TooLarge)?;
                    at_most = true;
                }
            }
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, held))
}

/// The store's error texts with each credential, and each dot-separated part of one (a JWT's
/// payload, a token's body), cut out: a store or a proxy in front of it that echoes the request
/// must not put the pod's token, the store token or a lease id into our messages.
fn without_credentials(errors: Vec<String>, credentials: &[&str]) -> Vec<String> {
    let mut secrets: Vec<&str> = credentials.to_vec();
    secrets.extend(
        credentials
            .iter()
            .flat_map(|credential| credential.split('.'))
            .filter(|part| part.len() >= 8),
    );
    errors
        .into_iter()
        .map(|mut text| {
            for secret in &secrets {
                if !secret.is_empty() && text.contains(secret) {
                    text = text.replace(secret, "<token>");
                }
            }
            text
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_echoed_token_is_cut_out_of_store_errors() {
        let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOlsidmF1bHQiXX0.c2lnbmF0dXJlLWJ5dGVz";
        let errors = without_credentials(
            vec![
                format!("bad token {jwt}"),
                "payload eyJhdWQiOlsidmF1bHQiXX0 rejected".to_owned(),
                "permission denied".to_owned(),
            ],
            &[jwt],
        );
        assert_eq!(
            errors,
            [
                "bad token <token>",
                "payload <token> rejected",
                "permission denied"
            ]
        );
    }

    fn client(address: &str) -> Client {
        Client::new(&StoreConfig::new(Url::parse(address).expect("url"))).expect("client")
    }

    #[test]
    fn builds_api_urls_below_v1_keeping_a_prefix() {
        assert_eq!(
            client("https://vault:8200")
                .url("secret/data/app")
                .expect("url")
                .as_str(),
            "https://vault:8200/v1/secret/data/app"
        );
        assert_eq!(
            client("https://proxy/vault/")
                .url("auth/main-kube/login")
                .expect("url")
                .as_str(),
            "https://proxy/vault/v1/auth/main-kube/login"
        );
    }

    #[test]
    fn rejects_bad_configuration_clearly() {
        let mut config = StoreConfig::new(Url::parse("ftp://vault").expect("url"));
        let err = Client::new(&config).expect_err("ftp");
        assert!(err.to_string().contains("http:// or https://"), "{err}");

        config.address = Url::parse("https://vault").expect("url");
        config.ca_pem = Some("not a pem".into());
        let err = Client::new(&config).expect_err("bad pem");
        assert!(err.to_string().contains("CA bundle"), "{err}");

        config.ca_pem = None;
        config.namespace = Some("bad\nns".into());
        let err = Client::new(&config).expect_err("bad ns");
        assert!(err.to_string().contains("namespace"), "{err}");
    }

    #[test]
    fn parses_store_error_bodies() {
        assert_eq!(
            store_errors(br#"{"errors":["permission denied"]}"#),
            vec!["permission denied"]
        );
        assert_eq!(store_errors(br#"{"errors":[]}"#), Vec::<String>::new());
        assert_eq!(
            store_errors(b"{\"errors\":[\"1 error occurred:\\n\\t* permission denied\\n\\n\"]}"),
            vec!["1 error occurred: * permission denied"]
        );
        assert_eq!(store_errors(b""), Vec::<String>::new());
        assert_eq!(
            store_errors(b"<html>bad gateway</html>"),
            vec!["non-JSON body of 24 bytes"]
        );
    }

    #[test]
    fn token_expiry_margin() {
        let token = VaultToken::new(
            SecretString::from("s.hunter2".to_owned()),
            Some(Duration::from_secs(60)),
        );
        assert!(!token.expires_within(Duration::from_secs(10)));
        assert!(token.expires_within(Duration::from_secs(60)));
        let root = VaultToken::new(SecretString::from("t".to_owned()), None);
        assert!(!root.expires_within(Duration::from_secs(1_000_000)));
        assert!(!format!("{token:?}").contains("hunter2"));
    }

    /// A MOCK store, for faults OpenBao does not produce on demand: every connection gets
    /// `reply(request head)` and is closed. Returns its address and a count of connections.
    async fn mock_store(
        reply: fn(&str) -> String,
    ) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = format!("http://{}", listener.local_addr().expect("address"));
        let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = connections.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n")
                    && stream.read(&mut byte).await.is_ok_and(|n| n == 1)
                {
                    head.push(byte[0]);
                }
                let answer = reply(&String::from_utf8_lossy(&head));
                let _ = stream.write_all(answer.as_bytes()).await;
            }
        });
        (address, connections)
    }

    #[tokio::test]
    async fn a_reply_cut_short_is_a_transport_failure_and_retried() {
        let (address, connections) = mock_store(|_| {
            "HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{\"data\""
                .to_owned()
        })
        .await;
        let mut config = StoreConfig::new(Url::parse(&address).expect("url"));
        config.retry.max_retries = 2;
        config.retry.base_delay = Duration::from_millis(1);
        let token = VaultToken::new(SecretString::from("t".to_owned()), None);
        let err = Client::new(&config)
            .expect("client")
            .read(&token, "secret/data/app", None)
            .await
            .expect_err("cut short");
        assert!(matches!(err, Error::Unreachable { .. }), "{err}");
        assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    /// This process's peak resident set, in KiB.
    fn peak_kib() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| {
                let line = status.lines().find(|l| l.starts_with("VmHWM:"))?.to_owned();
                line.split_whitespace().nth(1)?.parse().ok()
            })
            .unwrap_or(0)
    }

    #[tokio::test]
    async fn a_dense_reply_is_refused_naming_the_limit_without_building_its_tree() {
        // About 4 MiB of tiny objects: some 80 MiB as a whole Value tree. A MOCK store: OpenBao
        // refuses to store such a secret by its own JSON limits.
        static BODY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let body = BODY.get_or_init(|| {
            let objects = "{},".repeat(1_300_000);
            format!(
                r#"{{"data": {{"data": {{"k": [{}{{}}]}}, "metadata": {{"version": 1}}}}}}"#,
                objects
            )
        });
        assert!(
            body.len() < DEFAULT_MAX_RESPONSE_BYTES,
            "within the size limit"
        );
        let (address, _) = mock_store(|_| {
            let body = BODY.get().map_or("", String::as_str);
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        })
        .await;
        let config = StoreConfig::new(Url::parse(&address).expect("url"));
        let token = VaultToken::new(SecretString::from("t".to_owned()), None);
        let before = peak_kib();
        let err = Client::new(&config)
            .expect("client")
            .read(&token, "secret/data/app", None)
            .await
            .expect_err("too dense");
        let grown = peak_kib().saturating_sub(before);
        assert!(
            err.to_string()
                .contains(&format!("more than {MAX_REPLY_VALUES} JSON values")),
            "{err}"
        );
        // The mock's answer (4 MiB), the body read (4 MiB) and a bounded tree: no 80 MiB tree.
        eprintln!("[dense reply] peak grew by {grown} KiB");
        assert!(grown < 16 * 1024, "peak grew by {grown} KiB");
    }

    #[tokio::test]
    async fn a_write_that_may_have_issued_a_secret_is_not_sent_twice() {
        let (address, connections) = mock_store(|_| {
            "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                .to_owned()
        })
        .await;
        let mut config = StoreConfig::new(Url::parse(&address).expect("url"));
        config.retry.max_retries = 2;
        config.retry.base_delay = Duration::from_millis(1);
        let client = Client::new(&config).expect("client");
        let token = VaultToken::new(SecretString::from("t".to_owned()), None);
        let err = client
            .write(&token, "pki/issue/web", &json!({"common_name": "a"}))
            .await
            .expect_err("503");
        assert_eq!(err.status(), Some(503), "{err}");
        assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 1);
        // A read of the same store is retried: it changes nothing.
        client
            .read(&token, "secret/data/app", None)
            .await
            .expect_err("503");
        assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn a_store_that_echoes_the_request_gets_no_credential_into_our_errors() {
        // Echoes the token header back in its error, as a careless proxy might.
        let (address, _) = mock_store(|head| {
            let token = head
                .lines()
                .find_map(|line| line.strip_prefix("x-vault-token: "))
                .unwrap_or_default();
            let body = format!("{{\"errors\":[\"token {token} is not allowed\"]}}");
            format!(
                "HTTP/1.1 403 Forbidden\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        })
        .await;
        let secret = "hvs.CAESIJ-store-token-body";
        let token = VaultToken::new(SecretString::from(secret.to_owned()), None);
        let err = client(&address)
            .read(&token, "secret/data/app", None)
            .await
            .expect_err("refused");
        let text = err.to_string();
        assert!(text.contains("token <token> is not allowed"), "{text}");
        assert!(!text.contains("CAESIJ"), "{text}");
    }

    #[tokio::test]
    async fn rejects_unsafe_paths_before_sending() {
        let c = client("http://127.0.0.1:9");
        let token = VaultToken::new(SecretString::from("t".to_owned()), None);
        let err = c
            .read(&token, "secret/../sys/raw", None)
            .await
            .expect_err("unsafe");
        assert!(matches!(err, Error::InvalidPath { .. }), "{err}");
        let err = c
            .login(
                &Login::resolve("r", None, Some("../sys"), &Default::default()),
                &SecretString::from("jwt".to_owned()),
            )
            .await
            .expect_err("unsafe");
        assert!(matches!(err, Error::InvalidPath { .. }), "{err}");
    }
}
