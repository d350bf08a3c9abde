//! The Vault tokens that hold leases, kept across a restart of the driver on a tmpfs.
//!
//! A lease lives only as long as the token that obtained it, so a driver that forgot its
//! tokens at a restart (an upgrade, a crash) would have to replace every database user of the
//! node within the token TTL. The token of an identity holding leases is therefore saved, and
//! only on a tmpfs (`/run` on the node): it survives the driver's restart, never reaches the
//! node's disk, and is gone with a reboot, which ends the pods anyway. A directory that is no
//! tmpfs is not written to; leases then go on until their old token's expiry and are replaced
//! before it.

use crate::fetch::IdentityKey;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use ssi_vault::VaultToken;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// What is saved of a token.
#[derive(Serialize, Deserialize)]
struct Saved {
    /// Whose token it is, spelled out: a file is used only for exactly this identity.
    identity: String,
    token: String,
    /// Unix seconds; `None` for a token that never expires.
    expires_at: Option<u64>,
    renewable: bool,
    login_id: u64,
}

/// Saved tokens, one file per identity; does nothing when the directory is not a tmpfs.
#[derive(Debug)]
pub struct TokenStore {
    dir: Option<PathBuf>,
    /// What was written last per file, so a token is written again only when it changed.
    written: Mutex<HashMap<PathBuf, (u64, Option<u64>)>>,
}

fn unix(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

impl TokenStore {
    /// Saves into `dir` (created 0700) if it is on a tmpfs; otherwise says so and saves nothing.
    pub fn open(dir: &Path) -> TokenStore {
        let usable = std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)))
            .map_err(|e| e.to_string())
            .and_then(|()| {
                let fs = nix::sys::statfs::statfs(dir).map_err(|e| e.to_string())?;
                if fs.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC {
                    Ok(())
                } else {
                    Err("it is not a tmpfs, and tokens are never written to a disk".to_owned())
                }
            });
        match usable {
            Ok(()) => TokenStore {
                dir: Some(dir.to_owned()),
                written: Mutex::default(),
            },
            Err(why) => {
                tracing::warn!(dir = %dir.display(), reason = %why,
                    "the tokens holding leases are not kept across restarts; after one, leased secrets are replaced within the store role's token TTL");
                TokenStore::disabled()
            }
        }
    }

    /// A store that keeps nothing.
    pub fn disabled() -> TokenStore {
        TokenStore {
            dir: None,
            written: Mutex::default(),
        }
    }

    /// The file of `key`'s token: named by a SHA-256 of the identity spelled out, which no
    /// toolchain or release changes.
    pub(crate) fn path(&self, key: &IdentityKey) -> Option<PathBuf> {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(key.spelled_out().as_bytes());
        let name: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        Some(self.dir.as_ref()?.join(format!("{name}.json")))
    }

    /// Where releases before 0.2 saved `key`'s token: named by std's `DefaultHasher`, whose
    /// output may change between toolchains. Read once after an upgrade, never written.
    fn legacy_path(&self, key: &IdentityKey) -> Option<PathBuf> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut hasher);
        Some(
            self.dir
                .as_ref()?
                .join(format!("{:016x}.json", hasher.finish())),
        )
    }

    /// The token saved for `key` and its login id, if one is there and has not expired.
    pub fn load(&self, key: &IdentityKey) -> Option<(VaultToken, u64)> {
        let bytes = match std::fs::read(self.path(key)?) {
            Ok(bytes) => bytes,
            Err(_) => std::fs::read(self.legacy_path(key)?).ok()?,
        };
        let saved: Saved = serde_json::from_slice(&bytes).ok()?;
        let expires_at = saved
            .expires_at
            .map(|secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs.min(4_102_444_800)));
        if saved.identity != key.spelled_out()
            || expires_at.is_some_and(|at| at <= SystemTime::now())
        {
            return None;
        }
        let token =
            VaultToken::restore(SecretString::from(saved.token), expires_at, saved.renewable);
        Some((token, saved.login_id))
    }

    /// Saves `token` (obtained by login `login_id`) for `key`, unless that is what is there.
    pub fn save(&self, key: &IdentityKey, token: &VaultToken, login_id: u64) {
        let Some(path) = self.path(key) else { return };
        let expires_at = token.expires_at().map(unix);
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        if written.get(&path) == Some(&(login_id, expires_at)) {
            return;
        }
        let saved = Saved {
            identity: key.spelled_out(),
            token: token.expose().to_owned(),
            expires_at,
            renewable: token.renewable(),
            login_id,
        };
        let tmp = path.with_extension("json.tmp");
        let result = serde_json::to_vec(&saved)
            .map_err(std::io::Error::other)
            .and_then(|bytes| {
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&tmp)?;
                file.write_all(&bytes)
            })
            .and_then(|()| std::fs::rename(&tmp, &path));
        match result {
            Ok(()) => {
                written.insert(path, (login_id, expires_at));
            }
            Err(e) => tracing::warn!(error = %e, "could not save the token holding leases"),
        }
    }

    /// Deletes the tokens of identities not in `in_use`.
    pub fn retain(&self, in_use: &HashSet<IdentityKey>) {
        let Some(dir) = &self.dir else { return };
        let keep: HashSet<PathBuf> = in_use.iter().filter_map(|key| self.path(key)).collect();
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        for path in entries.flatten().map(|e| e.path()) {
            if !keep.contains(&path) {
                let _ = std::fs::remove_file(&path);
                written.remove(&path);
            }
        }
    }
}
