//! Where the driver meets the outside: the source of secrets (the store, asked as each volume's
//! pod), the reporter (Events on the pod; a status later) and the node's mounts. The driver's
//! rules (what a publish, a rotation and an unpublish do with them) run against in-memory fakes
//! in its unit tests; the end-to-end suites run them against the real store, API server and
//! kernel (docs/reference/STYLE.md, "Tests").

use crate::error::Error;
use crate::events::{Events, Kind};
use crate::fetch::{Cycle, Fetched, Fetcher, IdentityKey, Tokens};
use crate::held::Holdings;
use crate::state::{PodInfo, Record};
use crate::status::{self, SsiKey};
use ssi_core::NodeStatus;
use std::collections::HashSet;
use std::future::Future;
use std::path::Path;

/// Where a volume's files come from.
pub trait Source: Send + Sync + 'static {
    /// The volume's files and what it will hold once they are written, read as its pod with
    /// `tokens`, sharing the reads of `cycle`. `holdings` are what it holds now, obtained as
    /// `held_by`; `previous` is its mounted directory when their values must be read back from
    /// the files (after a restart).
    fn fetch(
        &self,
        record: &Record,
        tokens: &Tokens,
        cycle: &Cycle,
        holdings: &Holdings,
        previous: Option<&Path>,
        held_by: Option<&IdentityKey>,
    ) -> impl Future<Output = Result<Fetched, Error>> + Send;

    /// After a write (`written`) or a failed one: gives back what is no longer used, the old
    /// holdings or the new ones.
    fn settle(
        &self,
        identity: &IdentityKey,
        old: &Holdings,
        new: &Holdings,
        written: bool,
    ) -> impl Future<Output = ()> + Send;

    /// What SSI `ssi`'s status held when it was last read, if it was.
    fn listed(&self, _ssi: &SsiKey) -> Option<status::Listed> {
        None
    }

    /// Gives back everything an unpublished volume held.
    fn release(
        &self,
        record: &Record,
        tokens: &Tokens,
        identity: Option<&IdentityKey>,
        holdings: &Holdings,
    ) -> impl Future<Output = ()> + Send;

    /// Forgets the identities no volume uses any more (`forget_tokens`: also their saved
    /// tokens, which only a caller that knows every volume's identity may ask).
    fn retain_sessions(&self, in_use: &HashSet<IdentityKey>, forget_tokens: bool);
}

/// Where the driver tells what happened to a pod's volume, and what its volumes of a
/// SecretsStoreImport are like (the SSI's status).
pub trait Reporter: Send + Sync + 'static {
    /// Writes this node's `entry` in the status of SSI `ssi` (namespace, name), or removes it.
    fn status(
        &self,
        ssi: &SsiKey,
        entry: Option<&NodeStatus>,
    ) -> impl Future<Output = status::Write> + Send;

    /// Tells `pod` of a rotation's outcome (`reason` is a CamelCase word, `message` never holds
    /// a value).
    fn report(
        &self,
        pod: &PodInfo,
        kind: Kind,
        reason: &str,
        message: &str,
    ) -> impl Future<Output = ()> + Send;
}

impl Source for Fetcher {
    fn fetch(
        &self,
        record: &Record,
        tokens: &Tokens,
        cycle: &Cycle,
        holdings: &Holdings,
        previous: Option<&Path>,
        held_by: Option<&IdentityKey>,
    ) -> impl Future<Output = Result<Fetched, Error>> + Send {
        Fetcher::fetch(self, record, tokens, cycle, holdings, previous, held_by)
    }

    fn settle(
        &self,
        identity: &IdentityKey,
        old: &Holdings,
        new: &Holdings,
        written: bool,
    ) -> impl Future<Output = ()> + Send {
        Fetcher::settle(self, identity, old, new, written)
    }

    fn release(
        &self,
        record: &Record,
        tokens: &Tokens,
        identity: Option<&IdentityKey>,
        holdings: &Holdings,
    ) -> impl Future<Output = ()> + Send {
        Fetcher::release(self, record, tokens, identity, holdings)
    }

    fn retain_sessions(&self, in_use: &HashSet<IdentityKey>, forget_tokens: bool) {
        Fetcher::retain_sessions(self, in_use, forget_tokens)
    }

    fn listed(&self, ssi: &SsiKey) -> Option<status::Listed> {
        Fetcher::listed(self, ssi)
    }
}

impl Reporter for Events {
    async fn status(&self, ssi: &SsiKey, entry: Option<&NodeStatus>) -> status::Write {
        status::apply(self.status_client(), self.node(), (&ssi.0, &ssi.1), entry).await
    }

    fn report(
        &self,
        pod: &PodInfo,
        kind: Kind,
        reason: &str,
        message: &str,
    ) -> impl Future<Output = ()> + Send {
        self.emit(pod, kind, reason, message)
    }
}

/// The node's mounts: a tmpfs per volume. The in-memory kind is for the driver's unit tests,
/// which must not mount anything on the host (they run unprivileged, beside other work).
#[derive(Debug, Default)]
pub enum Mounts {
    /// The kernel's (mount(2), /proc/self/mountinfo).
    #[default]
    Kernel,
    /// Directories the test calls mounted; their files are real files in a test directory.
    #[cfg(test)]
    InMemory(std::sync::Mutex<HashSet<std::path::PathBuf>>),
}

impl Mounts {
    /// Whether `path` is a mount point.
    pub fn is_mounted(&self, path: &Path) -> std::io::Result<bool> {
        match self {
            Mounts::Kernel => crate::mount::is_mount_point(path),
            #[cfg(test)]
            Mounts::InMemory(mounted) => Ok(mounted
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(path)),
        }
    }

    /// Mounts a tmpfs of `size` at `target`.
    pub fn mount(&self, target: &Path, size: &str) -> std::io::Result<()> {
        match self {
            Mounts::Kernel => crate::mount::mount_tmpfs(target, size),
            #[cfg(test)]
            Mounts::InMemory(mounted) => {
                let _ = size;
                mounted
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(target.to_owned());
                Ok(())
            }
        }
    }

    /// Unmounts everything at `target`; nothing mounted is not an error.
    pub fn unmount(&self, target: &Path) -> std::io::Result<()> {
        match self {
            Mounts::Kernel => crate::mount::unmount_all(target),
            #[cfg(test)]
            Mounts::InMemory(mounted) => {
                let gone = mounted
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(target);
                // What a tmpfs held goes with it.
                if gone && target.exists() {
                    for entry in std::fs::read_dir(target)? {
                        let path = entry?.path();
                        match std::fs::symlink_metadata(&path)?.is_dir() {
                            true => std::fs::remove_dir_all(&path)?,
                            false => std::fs::remove_file(&path)?,
                        }
                    }
                }
                Ok(())
            }
        }
    }
}
