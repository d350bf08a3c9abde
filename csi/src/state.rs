//! Mount records in the node-local state directory, so that a restarted driver knows what it
//! mounted: rotation resumes and unpublish still finds the volume.
//!
//! A record holds no token and no secret value (a lease's id and dates, at most): after a restart, rotation of a volume waits for
//! kubelet's next republish (`requiresRepublish: true`) to hand over a fresh token, rather than
//! keeping pod credentials on the node's disk.

use serde::{Deserialize, Serialize};
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The pod a volume belongs to, from kubelet's `csi.storage.k8s.io/*` volume context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodInfo {
    /// The pod's namespace, the only one its SecretsStoreImport is read from.
    pub namespace: String,
    /// The pod's name.
    pub name: String,
    /// The pod's UID.
    pub uid: String,
    /// The pod's ServiceAccount, whose token logs in to the store.
    pub service_account: String,
}

/// A published volume as saved on disk: enough to rotate and unpublish it, no token or secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Kubelet's volume id; it also names the record's file.
    pub volume_id: String,
    /// Where the volume's tmpfs is mounted, below kubelet's root.
    pub target_path: PathBuf,
    /// The pod the volume belongs to.
    pub pod: PodInfo,
    /// Name of the SecretsStoreImport, in the pod's namespace.
    pub ssi: String,
    /// The pod's fsGroup when kubelet passed one.
    pub mount_group: Option<u32>,
    /// The leased and issued secrets the volume keeps, without their values: a restarted
    /// driver goes on renewing the leases and revokes them at unpublish.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<crate::held::Held>,
    /// The identity that obtained `held`: a restarted driver renews and revokes them as it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_by: Option<crate::fetch::IdentityKey>,
}

/// The records' directory, `<state-dir>/volumes`, one JSON file per volume.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// Opens the records' directory, creating it if needed; makes `state_dir` owner-only (0700).
    pub fn open(state_dir: &Path) -> io::Result<Store> {
        let dir = state_dir.join("volumes");
        fs::create_dir_all(&dir)?;
        fs::set_permissions(state_dir, fs::Permissions::from_mode(0o700))?;
        Ok(Store { dir })
    }

    fn path(&self, volume_id: &str) -> PathBuf {
        // Volume ids come from kubelet; hex keeps any byte out of the file name's meaning.
        let hex: String = volume_id.bytes().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("{hex}.json"))
    }

    /// Writes the record atomically (temporary file, then rename), readable by root only.
    pub fn save(&self, record: &Record) -> io::Result<()> {
        let path = self.path(&record.volume_id);
        let tmp = path.with_extension("json.tmp");
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(&serde_json::to_vec_pretty(record)?)?;
        file.sync_all()?;
        fs::rename(&tmp, &path)
    }

    /// Deletes the volume's record; one already gone is not an error.
    pub fn remove(&self, volume_id: &str) -> io::Result<()> {
        match fs::remove_file(self.path(volume_id)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    /// Every readable record; unreadable ones are reported and skipped, never fatal, so one
    /// corrupt file cannot stop the driver from serving the other volumes.
    pub fn load_all(&self) -> io::Result<Vec<Record>> {
        let mut records = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            match fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            {
                Ok(record) => records.push(record),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "skipping unreadable mount record")
                }
            }
        }
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> Record {
        Record {
            volume_id: id.into(),
            target_path: "/var/lib/kubelet/pods/u/volumes/kubernetes.io~csi/v/mount".into(),
            pod: PodInfo {
                namespace: "ns".into(),
                name: "p".into(),
                uid: "u".into(),
                service_account: "sa".into(),
            },
            ssi: "app".into(),
            mount_group: Some(2000),
            held: Vec::new(),
            held_by: None,
        }
    }

    #[test]
    fn records_round_trip_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.save(&record("csi-1")).unwrap();
        store.save(&record("../../etc/passwd")).unwrap();
        std::fs::write(dir.path().join("volumes/garbage.json"), "{").unwrap();
        let mut loaded = Store::open(dir.path()).unwrap().load_all().unwrap();
        loaded.sort_by(|a, b| a.volume_id.cmp(&b.volume_id));
        assert_eq!(loaded, vec![record("../../etc/passwd"), record("csi-1")]);
        assert_eq!(
            std::fs::read_dir(dir.path().join("volumes"))
                .unwrap()
                .count(),
            3,
            "ids never escape the dir"
        );

        store.remove("csi-1").unwrap();
        store.remove("csi-1").unwrap();
        assert_eq!(store.load_all().unwrap(), vec![record("../../etc/passwd")]);
    }
}
