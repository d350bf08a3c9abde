use crate::{Client, Error, Lease, Secret, VaultToken};
use secrecy::SecretString;
use ssi_core::Login;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// One identity's logged-in state against one store.
///
/// The Vault token is reused until shortly before it expires; a 403 on a read (token revoked,
/// policy changed under us) drops it and logs in once more before giving up. Concurrent callers
/// share one login: the token slot is locked across the login call.
pub struct Session {
    client: Client,
    auth: Login,
    jwt: Mutex<SecretString>,
    token: tokio::sync::Mutex<Option<VaultToken>>,
    logins: AtomicU64,
    /// Which login the cached token comes from, unique in the process.
    login_id: AtomicU64,
}

/// The token a request went out with, as the leases in its reply see it: they live only as
/// long as that token does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenUsed {
    /// Which login obtained the token (unique across restarts of the process).
    pub login: u64,
    /// When the token expires, if it does.
    pub until: Option<std::time::SystemTime>,
    /// When the session renews it next (two thirds into its life).
    pub renew_at: Option<std::time::SystemTime>,
}

impl TokenUsed {
    fn of(token: &VaultToken, login: u64) -> TokenUsed {
        TokenUsed {
            login,
            until: token.expires_at(),
            renew_at: token.renew_at(),
        }
    }
}

/// Numbers every login, so that a token is never mistaken for another one, also across
/// restarts of the process (ids start from the clock at the first login).
fn next_login_id() -> u64 {
    static LOGIN_IDS: std::sync::OnceLock<AtomicU64> = std::sync::OnceLock::new();
    LOGIN_IDS
        .get_or_init(|| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            AtomicU64::new(now.as_micros() as u64)
        })
        .fetch_add(1, Ordering::Relaxed)
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("client", &self.client)
            .field("auth", &self.auth)
            .field("logins", &self.logins())
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A session that logs in through `client` as `auth` with `jwt`; nothing is sent until the
    /// first token is needed.
    pub fn new(client: Client, auth: Login, jwt: SecretString) -> Session {
        Session {
            client,
            auth,
            jwt: Mutex::new(jwt),
            token: tokio::sync::Mutex::new(None),
            logins: AtomicU64::new(0),
            login_id: AtomicU64::new(0),
        }
    }

    /// A session that goes on with a token a previous process saved (with the id of the login
    /// that obtained it): leases that token obtained stay alive as it is renewed.
    pub fn restored(
        client: Client,
        auth: Login,
        jwt: SecretString,
        token: VaultToken,
        login_id: u64,
    ) -> Session {
        Session {
            token: tokio::sync::Mutex::new(Some(token)),
            login_id: AtomicU64::new(login_id),
            ..Session::new(client, auth, jwt)
        }
    }

    /// The token in use and the id of the login that obtained it, to be saved for a restart.
    pub async fn current_token(&self) -> Option<(VaultToken, u64)> {
        let slot = self.token.lock().await;
        slot.as_ref()
            .map(|token| (token.clone(), self.login_id.load(Ordering::Relaxed)))
    }

    /// Where and as what this session logs in.
    pub fn auth(&self) -> &Login {
        &self.auth
    }

    /// Replaces the ServiceAccount JWT used for the next login (kubelet hands over fresh ones).
    pub fn set_jwt(&self, jwt: SecretString) {
        *self
            .jwt
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = jwt;
    }

    /// How many logins this session has made; lets callers and tests see reuse at work.
    pub fn logins(&self) -> u64 {
        self.logins.load(Ordering::Relaxed)
    }

    /// Revokes a lease as this identity (see [`Client::revoke_lease`]).
    pub async fn revoke_lease(&self, path: &str, lease_id: &str) -> Result<(), Error> {
        let token = self.token().await?;
        self.client.revoke_lease(&token, path, lease_id).await
    }

    /// A token valid for a while yet: the cached one, or a fresh login.
    pub async fn token(&self) -> Result<VaultToken, Error> {
        Ok(self.token_with_margin(refresh_margin).await?.0)
    }

    /// Keeps the token alive for the leases it obtained: renews it once two thirds of its life
    /// have passed (a new login when it cannot be renewed), and says which token is in use now.
    pub async fn keep_alive(&self) -> Result<TokenUsed, Error> {
        let (token, login) = self
            .token_with_margin(|ttl| ttl.map_or(Duration::ZERO, |ttl| ttl / 3))
            .await?;
        Ok(TokenUsed::of(&token, login))
    }

    async fn token_with_margin(
        &self,
        margin: impl Fn(Option<Duration>) -> Duration,
    ) -> Result<(VaultToken, u64), Error> {
        let mut slot = self.token.lock().await;
        let login_id = |id: &AtomicU64| id.load(Ordering::Relaxed);
        if let Some(token) = slot.as_ref().filter(|t| !t.expires_within(margin(t.ttl()))) {
            return Ok((token.clone(), login_id(&self.login_id)));
        }
        // A renewal keeps the token, and with it every lease it obtained (leases die with their
        // token); a new login is the fallback when it cannot be renewed or is near its max TTL.
        if let Some(old) = slot
            .as_ref()
            .filter(|t| t.renewable() && !t.expires_within(Duration::ZERO))
        {
            match self.client.renew_token(old).await {
                Ok(renewed) if !renewed.expires_within(margin(old.ttl())) => {
                    *slot = Some(renewed.clone());
                    return Ok((renewed, login_id(&self.login_id)));
                }
                Ok(_) => {
                    tracing::debug!("the session's token is near its max TTL; logging in again")
                }
                Err(e) => {
                    tracing::debug!(error = %e, "the session's token was not renewed; logging in again")
                }
            }
        }
        let jwt = self
            .jwt
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        let token = self.client.login(&self.auth, &jwt).await?;
        self.logins.fetch_add(1, Ordering::Relaxed);
        self.login_id.store(next_login_id(), Ordering::Relaxed);
        *slot = Some(token.clone());
        Ok((token, login_id(&self.login_id)))
    }

    /// Forgets the cached token, so the next call logs in again.
    pub async fn invalidate(&self) {
        *self.token.lock().await = None;
    }

    /// Reads a secret as this identity, logging in again once if the store refuses the token.
    pub async fn read(&self, path: &str, version: Option<u64>) -> Result<Secret, Error> {
        Ok(self.read_tracked(path, version).await?.0)
    }

    /// [`Self::read`], also saying which token the read went out with: a lease in the reply
    /// lives only as long as that token.
    pub async fn read_tracked(
        &self,
        path: &str,
        version: Option<u64>,
    ) -> Result<(Secret, TokenUsed), Error> {
        let (token, login) = self.token_with_margin(refresh_margin).await?;
        match self.client.read(&token, path, version).await {
            Err(e) if e.is_permission_denied() => {
                tracing::debug!(path, "store refused the cached token; logging in again");
                self.invalidate().await;
                let (token, login) = self.token_with_margin(refresh_margin).await?;
                let secret = self.client.read(&token, path, version).await?;
                Ok((secret, TokenUsed::of(&token, login)))
            }
            other => Ok((other?, TokenUsed::of(&token, login))),
        }
    }

    /// Writes as this identity (see [`Client::write`]); a refused cached token is replaced
    /// once, as for reads.
    pub async fn write(&self, path: &str, body: &serde_json::Value) -> Result<Secret, Error> {
        Ok(self.write_tracked(path, body).await?.0)
    }

    /// [`Self::write`], also saying which token the write went out with.
    pub async fn write_tracked(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<(Secret, TokenUsed), Error> {
        let (token, login) = self.token_with_margin(refresh_margin).await?;
        match self.client.write(&token, path, body).await {
            Err(e) if e.is_permission_denied() => {
                self.invalidate().await;
                let (token, login) = self.token_with_margin(refresh_margin).await?;
                let secret = self.client.write(&token, path, body).await?;
                Ok((secret, TokenUsed::of(&token, login)))
            }
            other => Ok((other?, TokenUsed::of(&token, login))),
        }
    }

    /// Renews a lease as this identity (see [`Client::renew_lease`]).
    pub async fn renew_lease(
        &self,
        path: &str,
        lease_id: &str,
        increment: Duration,
    ) -> Result<Lease, Error> {
        let token = self.token().await?;
        self.client
            .renew_lease(&token, path, lease_id, increment)
            .await
    }
}

/// How long before expiry a token is replaced: a fifth of its lifetime, at least one second and
/// at most a minute, so a 10-minute token serves 9 minutes and a short test token still gets used.
fn refresh_margin(ttl: Option<Duration>) -> Duration {
    ttl.map_or(Duration::ZERO, |ttl| {
        (ttl / 5).clamp(Duration::from_secs(1), Duration::from_secs(60))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_margin_scales_with_ttl_within_bounds() {
        assert_eq!(refresh_margin(None), Duration::ZERO);
        assert_eq!(
            refresh_margin(Some(Duration::from_secs(600))),
            Duration::from_secs(60)
        );
        assert_eq!(
            refresh_margin(Some(Duration::from_secs(100))),
            Duration::from_secs(20)
        );
        assert_eq!(
            refresh_margin(Some(Duration::from_secs(2))),
            Duration::from_secs(1)
        );
    }
}
