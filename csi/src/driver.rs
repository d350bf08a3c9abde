//! The driver's state and its three jobs: publish, unpublish, rotate. What it asks of the
//! outside goes through [`crate::seams`], so that its unit tests run it in memory.

use crate::error::{Error, chain};
use crate::events::{Events, Kind};
use crate::fetch::{Cycle, Fetched, Fetcher, IdentityKey};
use crate::held::{self, Holdings};
use crate::metrics::{EndLabels, Metrics, Outcome, Rotation, RotationLabels, StatusLabels};
use crate::mount;
use crate::request::PublishRequest;
use crate::seams::{Mounts, Reporter, Source};
use crate::state::{self, Record};
use crate::status::{self, StatusBook};
use crate::volumes::{LastError, VolumeTable};
use crate::writer::{self, Access};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// How the driver behaves on this node, from its flags.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The node's name, as kubelet knows it.
    pub node_id: String,
    /// Kubelet's root dir, canonical: every target path must lie below it.
    pub kubelet_root: PathBuf,
    /// `size=` option of each volume's tmpfs (e.g. `4m`).
    pub tmpfs_size: String,
    /// Time between two full rotation cycles (jittered by the scheduler).
    pub rotation_interval: Duration,
    /// Volumes rotated at once.
    pub rotation_concurrency: usize,
    /// How long one volume's reads from the API and the store may take in a rotation: a slow
    /// or unreachable store holds its own volumes up, never the others' renewals.
    pub fetch_deadline: Duration,
}

/// What the driver works with: the store side, the API side and the node side.
#[derive(Debug)]
pub struct Parts<S = Fetcher, R = Events> {
    /// Where the driver counts its work; also served on /metrics.
    pub metrics: Arc<Metrics>,
    /// Reads SecretsStoreImports and the store as each volume's pod.
    pub source: S,
    /// Reports rotations on the pods.
    pub reporter: R,
    /// Mount records in the state dir.
    pub records: state::Store,
    /// The node's mounts.
    pub mounts: Mounts,
}

/// The volumes published on this node and the work on them, shared by the CSI service and the
/// rotation scheduler. Calls on one volume run one at a time.
#[derive(Debug)]
pub struct Driver<S = Fetcher, R = Events> {
    /// The node's name, reported by NodeGetInfo.
    pub node_id: String,
    /// Kubelet's root dir, canonical: every target path must lie below it.
    pub kubelet_root: PathBuf,
    /// `size=` option of each volume's tmpfs (e.g. `4m`).
    pub tmpfs_size: String,
    /// Time between two full rotation cycles (jittered by the scheduler).
    pub rotation_interval: Duration,
    /// Volumes rotated at once; at least 1.
    pub rotation_concurrency: usize,
    /// How long one volume's fetch may take in a rotation.
    pub fetch_deadline: Duration,
    /// Where the driver counts its work; also served on /metrics.
    pub metrics: Arc<Metrics>,
    /// Whether the CSI socket serves (`/readyz`).
    pub ready: Arc<AtomicBool>,
    /// Whether kubelet reported a successful plugin registration (with --registration-socket).
    pub registered: Arc<AtomicBool>,
    source: S,
    reporter: R,
    records: state::Store,
    mounts: Mounts,
    volumes: Mutex<VolumeTable>,
    /// Serialises publish, unpublish and rotation of one volume.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Wakes the rotation scheduler when a publish brings a volume that is due earlier than
    /// it planned (a lease to renew, a token after a restart).
    pub schedule_changed: tokio::sync::Notify,
    /// Wakes the status writer when a volume came, went or was rotated.
    pub status_changed: tokio::sync::Notify,
    /// What this node wrote in the SSIs' status.
    status_book: Mutex<StatusBook>,
    /// The reads of publishes under way, shared by those that arrive together (a Deployment's
    /// pods on one node): see [`Cycle::in_flight`].
    publishes: Cycle,
    /// When this process started: volumes recovered from a previous one count their staleness
    /// from here.
    started: SystemTime,
}

/// A rotation written: whether the files changed, as whom and from which reads, and the files'
/// names (for the log).
struct Rotated {
    changed: bool,
    identity: IdentityKey,
    reads: Vec<crate::held::Request>,
    names: Vec<String>,
}

/// How long filesystem work on one volume may take. Everything in a volume is on a tmpfs and
/// small, so this is only reached when something the pod put there blocks.
const VOLUME_IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `work` on the volume at `target` on a blocking thread, under [`VOLUME_IO_TIMEOUT`]:
/// whatever a pod left in its volume can stall that volume only, never the async workers that
/// serve kubelet and rotate the others.
pub(crate) async fn on_volume<T: Send + 'static>(
    action: &'static str,
    target: &Path,
    work: impl FnOnce(&Path) -> std::io::Result<T> + Send + 'static,
) -> Result<T, Error> {
    let dir = target.to_owned();
    let task = tokio::task::spawn_blocking(move || work(&dir));
    let result = match tokio::time::timeout(VOLUME_IO_TIMEOUT, task).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => Err(std::io::Error::other(format!("the worker failed: {join}"))),
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("gave up after {VOLUME_IO_TIMEOUT:?}"),
        )),
    };
    result.map_err(Error::io(action, target))
}

fn access(record: &Record) -> Access {
    record.mount_group.map_or(Access::World, Access::Group)
}

impl<S: Source, R: Reporter> Driver<S, R> {
    /// A driver with no volumes yet; [`Driver::recover`] takes over those of a previous run.
    pub fn new(settings: Settings, parts: Parts<S, R>) -> Driver<S, R> {
        let Parts {
            metrics,
            source,
            reporter,
            records,
            mounts,
        } = parts;
        metrics
            .rotation_interval
            .set(settings.rotation_interval.as_secs_f64());
        Driver {
            node_id: settings.node_id,
            kubelet_root: settings.kubelet_root,
            tmpfs_size: settings.tmpfs_size,
            rotation_interval: settings.rotation_interval,
            rotation_concurrency: settings.rotation_concurrency.max(1),
            fetch_deadline: settings.fetch_deadline,
            metrics,
            ready: Arc::default(),
            registered: Arc::default(),
            source,
            reporter,
            records,
            mounts,
            volumes: Mutex::new(VolumeTable::new(settings.rotation_interval)),
            locks: Mutex::default(),
            schedule_changed: tokio::sync::Notify::new(),
            status_changed: tokio::sync::Notify::new(),
            status_book: Mutex::default(),
            publishes: Cycle::in_flight(),
            started: SystemTime::now(),
        }
    }

    fn volumes(&self) -> std::sync::MutexGuard<'_, VolumeTable> {
        self.volumes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_of(&self, volume_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(volume_id.to_owned())
            .or_default()
            .clone()
    }

    /// Takes over the volumes a previous run of the driver published.
    pub fn recover(&self) -> std::io::Result<usize> {
        let records = self.records.load_all()?;
        let mut volumes = self.volumes();
        for record in records {
            if !self.mounts.is_mounted(&record.target_path).unwrap_or(false) {
                tracing::warn!(volume = %record.volume_id, target = %record.target_path.display(),
                    "recorded volume is no longer mounted; kubelet will publish it again if the pod still exists");
            }
            volumes.recovered(record);
        }
        self.metrics.mounts.set(volumes.len() as i64);
        Ok(volumes.len())
    }

    /// Mounts the volume and writes its files. Kubelet's republish of a mounted volume hands over
    /// fresh tokens for rotation and rewrites nothing unless the files are gone; one with another
    /// target, SecretsStoreImport or pod is an [`Error::Conflict`]. Every value is fetched before anything is mounted, and a failed step
    /// undoes the mount.
    pub async fn publish(&self, request: PublishRequest) -> Result<(), Error> {
        let started = std::time::Instant::now();
        let PublishRequest { record, tokens } = request;
        let lock = self.lock_of(&record.volume_id);
        let _guard = lock.lock().await;

        // Republish (requiresRepublish): kubelet hands over fresh tokens for a mounted volume.
        let republish = {
            let mut volumes = self.volumes();
            match volumes.get(&record.volume_id) {
                Some(existing) => {
                    if existing.record.target_path != record.target_path
                        || existing.record.ssi != record.ssi
                        || existing.record.pod.uid != record.pod.uid
                    {
                        return Err(Error::Conflict {
                            volume_id: record.volume_id,
                            target: record.target_path,
                        });
                    }
                    volumes.republished(&record.volume_id, tokens.clone(), Instant::now());
                    self.schedule_changed.notify_one();
                    true
                }
                None => false,
            }
        };
        let target = record.target_path.clone();
        if republish
            && self.mounts.is_mounted(&target).unwrap_or(false)
            && on_volume("look at the files of", &target, writer::written)
                .await
                .unwrap_or(false)
        {
            return Ok(());
        }

        // Everything is fetched before anything is mounted, so a failure leaves nothing behind.
        // A republish whose files are gone keeps what the volume held (previous: none, so what
        // only the files had is obtained anew).
        let (holdings, held_by) = self
            .volumes()
            .get(&record.volume_id)
            .map(|v| (v.holdings.clone(), v.identity.clone()))
            .unwrap_or_default();
        let Fetched {
            files,
            memory,
            identity,
            holdings: next,
            reads,
        } = self
            .source
            .fetch(
                &record,
                &tokens,
                &self.publishes,
                &holdings,
                None,
                held_by.as_ref(),
            )
            .await?;
        let files = Arc::new(files);
        let result = self
            .mount_and_write(&record, &files, &next, &identity)
            .await;
        let names: Vec<String> = files.0.keys().cloned().collect();
        drop(files);
        drop(memory);
        self.source
            .settle(&identity, &holdings, &next, result.is_ok())
            .await;
        result?;
        let holdings = next;

        tracing::info!(volume = %record.volume_id, k8s.namespace = %record.pod.namespace, k8s.pod = %record.pod.name,
            ssi.name = %record.ssi, files = ?names, elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "published");
        let mut volumes = self.volumes();
        volumes.published(
            record,
            tokens,
            (identity, holdings, reads),
            SystemTime::now(),
        );
        self.metrics.mounts.set(volumes.len() as i64);
        self.schedule_changed.notify_one();
        self.status_changed.notify_one();
        Ok(())
    }

    /// Mounts the tmpfs at the record's target and writes `files` and the record; a failed step
    /// undoes the mount.
    async fn mount_and_write(
        &self,
        record: &Record,
        files: &Arc<writer::Files>,
        holdings: &Holdings,
        identity: &IdentityKey,
    ) -> Result<(), Error> {
        let target = record.target_path.clone();

        let created_dir = !target.exists();
        if created_dir {
            std::fs::create_dir(&target)
                .map_err(Error::io("create the target directory", &target))?;
        }
        let mounted_here = !self
            .mounts
            .is_mounted(&target)
            .map_err(Error::io("inspect mounts for", &target))?;
        let undo = |error: Error| {
            if mounted_here {
                let _ = self.mounts.unmount(&target);
            }
            if created_dir {
                let _ = std::fs::remove_dir(&target);
            }
            error
        };
        if mounted_here {
            self.mounts
                .mount(&target, &self.tmpfs_size)
                .map_err(Error::io("mount a tmpfs on", &target))?;
        }
        let access = access(record);
        // NB: shared with the writer's thread, not copied: files may be megabytes.
        let written = files.clone();
        on_volume("write the files into", &target, move |dir| {
            writer::write(dir, &written, access)
        })
        .await
        .map_err(undo)?;
        let held = held::to_record(holdings);
        let saved = Record {
            held_by: (!held.is_empty()).then(|| identity.clone()),
            held,
            ..record.clone()
        };
        self.records
            .save(&saved)
            .map_err(Error::io("save the mount record of", &target))
            .map_err(undo)?;
        Ok(())
    }

    /// Unmounts the volume at `target`, removes the directory and forgets the volume. A volume
    /// already gone is not an error; a `target` other than the recorded one is.
    pub async fn unpublish(&self, volume_id: &str, target: &Path) -> Result<(), Error> {
        let lock = self.lock_of(volume_id);
        let _guard = lock.lock().await;
        let target = mount::confine(target, &self.kubelet_root).map_err(Error::InvalidRequest)?;
        if let Some(volume) = self.volumes().get(volume_id)
            && volume.record.target_path != target
        {
            return Err(Error::InvalidRequest(format!(
                "volume {volume_id} is published at {}, not at {}",
                volume.record.target_path.display(),
                target.display()
            )));
        }
        self.mounts
            .unmount(&target)
            .map_err(Error::io("unmount", &target))?;
        match std::fs::remove_dir(&target) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io("remove", &target)(e));
            }
            _ => {}
        }
        self.records
            .remove(volume_id)
            .map_err(Error::io("remove the mount record of", &target))?;
        let gone = {
            let mut volumes = self.volumes();
            let gone = volumes.remove(volume_id);
            self.metrics.mounts.set(volumes.len() as i64);
            gone
        };
        if let Some(volume) = gone {
            self.source
                .release(
                    &volume.record,
                    &volume.tokens,
                    volume.identity.as_ref(),
                    &volume.holdings,
                )
                .await;
        }
        self.locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(volume_id);
        self.status_changed.notify_one();
        Ok(())
    }

    /// Re-reads the volumes that are due (all of them when `full`), with shared lookups, at most
    /// `rotation_concurrency` at a time. Returns when the cycle is done.
    pub async fn rotate(self: &Arc<Self>, full: bool) {
        let started = Instant::now();
        let now = Instant::now();
        let due = self.volumes().due(now, SystemTime::now(), full);
        if due.is_empty() {
            self.measure_expiry();
            return;
        }
        let cycle = Arc::new(Cycle::default());
        let permits = Arc::new(tokio::sync::Semaphore::new(self.rotation_concurrency));
        let mut tasks = tokio::task::JoinSet::new();
        for volume_id in due {
            let (driver, cycle, permits) = (self.clone(), cycle.clone(), permits.clone());
            tasks.spawn(async move {
                let _permit = permits.acquire_owned().await;
                driver.rotate_one(&volume_id, &cycle).await;
            });
        }
        while tasks.join_next().await.is_some() {}
        if full {
            let (in_use, every_identity_known) = self.volumes().identities();
            self.source.retain_sessions(&in_use, every_identity_known);
        }
        self.metrics
            .rotation_cycle_seconds
            .observe(started.elapsed().as_secs_f64());
        self.measure_expiry();
    }

    /// Sets the expiry gauges from the volume table: when the node's leases, certificates and
    /// store tokens end, and how stale its stalest volume is.
    fn measure_expiry(&self) {
        let expiry = self.volumes().expiry(SystemTime::now(), self.started);
        let unix = |time: Option<SystemTime>| {
            time.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map_or(f64::NAN, |since| since.as_secs_f64())
        };
        for (kind, end) in [
            ("lease", expiry.lease),
            ("certificate", expiry.certificate),
            ("token", expiry.token),
        ] {
            self.metrics
                .earliest_end
                .get_or_create(&EndLabels { kind })
                .set(unix(end));
        }
        self.metrics
            .certificate_life_left
            .set(expiry.certificate_life_left.unwrap_or(f64::NAN));
        self.metrics
            .oldest_refresh
            .set(unix(expiry.stalest_success));
    }

    /// Rotates volume `volume_id`: fetches as its pod (within the fetch deadline), writes what
    /// changed, settles its holdings and reports the outcome.
    async fn rotate_one(&self, volume_id: &str, cycle: &Cycle) {
        let lock = self.lock_of(volume_id);
        let _guard = lock.lock().await;
        let Some((record, tokens, holdings, held_by)) = self.volumes().get(volume_id).map(|v| {
            (
                v.record.clone(),
                v.tokens.clone(),
                v.holdings.clone(),
                v.identity.clone(),
            )
        }) else {
            return; // unpublished meanwhile
        };
        if tokens.is_empty() {
            self.count(Rotation::Waiting);
            return;
        }
        self.volumes().looking(volume_id, Instant::now());
        // Held secrets recovered after a restart have their values only in the files, which
        // the fetch reads once it has memory for them.
        let previous = holdings
            .values()
            .any(|held| held.secret.is_none())
            .then_some(record.target_path.as_path());
        // NB: only the reads are cut short, never the write or the settling that follow. What
        // a fetch cut short had obtained is not recorded: its leases end at their TTL.
        let fetched = tokio::time::timeout(
            self.fetch_deadline,
            self.source.fetch(
                &record,
                &tokens,
                cycle,
                &holdings,
                previous,
                held_by.as_ref(),
            ),
        )
        .await
        .unwrap_or_else(|_| {
            Err(Error::Deadline {
                ssi: format!("{}/{}", record.pod.namespace, record.ssi),
                after: self.fetch_deadline,
            })
        });
        let result = match fetched {
            Ok(fetched) => {
                self.write_rotated(&record, (&holdings, held_by.as_ref()), fetched)
                    .await
            }
            Err(e) => Err(e),
        };
        self.conclude(&record, result).await;
    }

    /// Writes what a rotation fetched into the volume, settles the holdings (`old`, with the
    /// identity that held them) either way and keeps the new ones once written. Returns whether
    /// the files changed, with what the fetch was.
    async fn write_rotated(
        &self,
        record: &Record,
        old: (&Holdings, Option<&IdentityKey>),
        fetched: Fetched,
    ) -> Result<Rotated, Error> {
        let Fetched {
            files,
            memory,
            identity,
            holdings,
            reads,
        } = fetched;
        // Never write into a directory whose tmpfs is gone: the bytes would land on the node's disk.
        if !self.mounts.is_mounted(&record.target_path).unwrap_or(false) {
            self.source.settle(&identity, old.0, &holdings, false).await;
            return Err(Error::io("find the tmpfs at", &record.target_path)(
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "the volume is no longer mounted",
                ),
            ));
        }
        let access = access(record);
        // NB: shared with the writer's thread, not copied: files may be megabytes.
        let files = Arc::new(files);
        let written = files.clone();
        let outcome = on_volume("write the files into", &record.target_path, move |dir| {
            writer::write(dir, &written, access)
        })
        .await;
        self.source
            .settle(&identity, old.0, &holdings, outcome.is_ok())
            .await;
        if outcome.is_ok() {
            self.keep_holdings(record, old, holdings, &identity);
        }
        let names: Vec<String> = files.0.keys().cloned().collect();
        // The volume's share of memory goes with the last copy of its files.
        drop(files);
        drop(memory);
        outcome.map(|changed| Rotated {
            changed,
            identity,
            reads,
            names,
        })
    }

    /// Records a rotation's `result` in the volume table and the metrics, and tells the pod
    /// what it should know: a change, or the start of a failure (then once per interval).
    async fn conclude(&self, record: &Record, result: Result<Rotated, Error>) {
        let volume_id = record.volume_id.as_str();
        self.status_changed.notify_one();
        match result {
            Ok(Rotated {
                changed,
                identity,
                reads,
                names,
            }) => {
                {
                    let now = SystemTime::now();
                    let mut volumes = self.volumes();
                    volumes.succeeded(volume_id, (identity, reads), now);
                    if changed {
                        volumes.changed(volume_id, now);
                    }
                }
                if !changed {
                    self.count(Rotation::Unchanged);
                    return;
                }
                self.count(Rotation::Changed);
                tracing::info!(volume = %volume_id, k8s.namespace = %record.pod.namespace, k8s.pod = %record.pod.name,
                    ssi.name = %record.ssi, files = ?names, "rotated: content changed");
                let message = format!(
                    "SecretsStoreImport {} changed in the store; files updated",
                    record.ssi
                );
                self.reporter
                    .report(&record.pod, Kind::Normal, "SecretRotated", &message)
                    .await;
            }
            Err(error) => {
                self.count(Rotation::Failed);
                let message = format!("rotation failed, the old files are kept: {}", chain(&error));
                let last = LastError {
                    code: error.code_label(),
                    message: message.clone(),
                    at: SystemTime::now(),
                };
                let failure = self.volumes().failed(volume_id, last, Instant::now());
                let failures = failure.map_or(0, |f| f.failures);
                tracing::warn!(volume = %volume_id, k8s.namespace = %record.pod.namespace, k8s.pod = %record.pod.name,
                    ssi.name = %record.ssi, failures, error = %message, "rotation failed");
                if failure.is_some_and(|f| f.report) {
                    self.reporter
                        .report(&record.pod, Kind::Warning, "SecretRotationFailed", &message)
                        .await;
                }
            }
        }
    }

    /// Makes `new` the volume's holdings, saving them in its record when they changed.
    /// `old` are the holdings and the identity they were held by before; `identity` holds `new`.
    fn keep_holdings(
        &self,
        record: &Record,
        old: (&Holdings, Option<&IdentityKey>),
        new: Holdings,
        identity: &IdentityKey,
    ) {
        let saved = held::to_record(&new);
        let held_by = (!saved.is_empty()).then(|| identity.clone());
        let was_held_by = (!old.0.is_empty()).then_some(old.1).flatten();
        if saved != held::to_record(old.0) || held_by.as_ref() != was_held_by {
            let record = Record {
                held: saved,
                held_by,
                ..record.clone()
            };
            if let Err(e) = self.records.save(&record) {
                tracing::warn!(volume = %record.volume_id, error = %e, "could not save the volume's leases");
            }
        }
        self.volumes().keep_holdings(&record.volume_id, new);
    }

    /// Writes this node's entries in the status of the SSIs its volumes mount, where due (see
    /// [`crate::status`]); returns how many were written.
    pub async fn report_status(&self, now: Instant) -> usize {
        let due = {
            let current = self.volumes().summaries(&self.node_id);
            self.status_book()
                .due(&current, now, |ssi| self.source.listed(ssi))
        };
        let mut written = 0;
        let started = Instant::now();
        for (ssi, entry) in due {
            let outcome = self.reporter.status(&ssi, entry.as_ref()).await;
            // NB: a write may take up to status::WRITE_TIMEOUT: the next is spaced from its end.
            let now = now + started.elapsed();
            match outcome {
                status::Write::Done { listed } => {
                    written += 1;
                    self.count_status_write(Outcome::Ok);
                    self.status_book().wrote(ssi, entry, now, listed);
                }
                // An SSI that is gone has no entry left to remove.
                status::Write::Gone if entry.is_none() => {
                    self.status_book().wrote(ssi, None, now, 0);
                }
                status::Write::Gone => {
                    tracing::debug!(k8s.namespace = %ssi.0, ssi.name = %ssi.1,
                        "the SecretsStoreImport (or its status) is gone; its entry is tried again later");
                    self.status_book().gone(ssi, now);
                }
                status::Write::Failed(error) => {
                    self.count_status_write(Outcome::Error);
                    tracing::warn!(k8s.namespace = %ssi.0, ssi.name = %ssi.1, error = %error,
                        "could not write the SecretsStoreImport's status; trying again later");
                    self.status_book().failed(ssi, now);
                }
            }
        }
        written
    }

    fn count_status_write(&self, result: Outcome) {
        self.metrics
            .status_writes
            .get_or_create(&StatusLabels { result })
            .inc();
    }

    /// When the status writer should look again for a write it held back to spread the load.
    pub fn status_next_scheduled(&self) -> Option<Instant> {
        self.status_book().next_scheduled()
    }

    fn status_book(&self) -> std::sync::MutexGuard<'_, StatusBook> {
        self.status_book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The secret at `path` changed in the store (a store event, an operator's request): the
    /// volumes that read it are rotated at the scheduler's next wake, now, rather than at
    /// their next cycle. Returns how many.
    pub fn stale(&self, path: &str) -> usize {
        let marked = self.volumes().stale(path, Instant::now()).len();
        if marked > 0 {
            self.schedule_changed.notify_one();
        }
        marked
    }

    /// When the earliest volume should be looked at again: a failed one retried, a held
    /// secret renewed.
    pub fn next_retry(&self) -> Option<Instant> {
        self.volumes().next_due(Instant::now(), SystemTime::now())
    }

    fn count(&self, result: Rotation) {
        self.metrics
            .rotations
            .get_or_create(&RotationLabels { result })
            .inc();
    }
}

#[cfg(test)]
mod tests;
