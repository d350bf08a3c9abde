//! Watching the container's secrets-store volumes for rotations. The driver swaps a volume's
//! `..data` link when its files change, as kubelet does for its own volumes; inotify reports the
//! swap as a rename into the volume's top directory. No polling: the watch costs one blocked
//! thread and nothing else until a volume rotates.

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use std::ffi::OsStr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;

/// How long the injector waits after a swap for the others of the same rotation (one per
/// volume), so that they cause one reaction.
pub const SETTLE: Duration = Duration::from_secs(1);

/// The least time between two reactions, whatever rotates: an app is not restarted or
/// signalled in a loop by a store that changes a value every second.
pub const MIN_GAP: Duration = Duration::from_secs(10);

/// The name the driver swaps in at each rotation.
const DATA_LINK: &str = "..data";

/// Starts a thread that sends the index of a directory of `dirs` to `changed` each time its
/// `..data` link is swapped. Fails when a directory cannot be watched, naming it.
pub fn watch(dirs: &[PathBuf], changed: UnboundedSender<usize>) -> Result<(), String> {
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC)
        .map_err(|e| format!("failed to start watching files: {e}"))?;
    let mut watches = Vec::new();
    for dir in dirs {
        let watch = inotify
            .add_watch(dir, AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_CREATE)
            .map_err(|e| {
                format!(
                    "failed to watch {} for rotations: {e} (is the secrets-store volume mounted there?)",
                    dir.display()
                )
            })?;
        watches.push(watch);
    }
    std::thread::Builder::new()
        .name("files".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            loop {
                let events = match inotify.read_events() {
                    Ok(events) => events,
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(_) => return,
                };
                for event in events {
                    if event.name.as_deref() != Some(OsStr::new(DATA_LINK)) {
                        continue;
                    }
                    let Some(index) = watches.iter().position(|w| *w == event.wd) else {
                        continue;
                    };
                    if changed.send(index).is_err() {
                        return;
                    }
                }
            }
        })
        .map_err(|e| format!("failed to start the file watch thread: {e}"))?;
    Ok(())
}

/// When to react to rotations: [`SETTLE`] after the first swap of a burst, never sooner than
/// [`MIN_GAP`] after the last reaction.
#[derive(Debug, Default)]
pub struct Pacing {
    due: Option<Instant>,
    last: Option<Instant>,
}

impl Pacing {
    /// A swap was seen at `now`.
    pub fn swapped(&mut self, now: Instant) {
        if self.due.is_none() {
            let settled = now + SETTLE;
            self.due = Some(
                self.last
                    .map_or(settled, |last| settled.max(last + MIN_GAP)),
            );
        }
    }

    /// When the next reaction is due, if one is.
    pub fn due(&self) -> Option<Instant> {
        self.due
    }

    /// The reaction happened at `now`.
    pub fn reacted(&mut self, now: Instant) {
        self.due = None;
        self.last = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swaps_together_make_one_reaction_and_reactions_keep_their_distance() {
        let start = Instant::now();
        let mut pacing = Pacing::default();
        assert_eq!(pacing.due(), None);
        pacing.swapped(start);
        pacing.swapped(start + Duration::from_millis(300));
        assert_eq!(
            pacing.due(),
            Some(start + SETTLE),
            "one reaction for the burst"
        );
        pacing.reacted(start + SETTLE);
        // Another rotation 2 s later: held back until 10 s after the last reaction.
        pacing.swapped(start + Duration::from_secs(3));
        assert_eq!(pacing.due(), Some(start + SETTLE + MIN_GAP));
        pacing.reacted(start + SETTLE + MIN_GAP);
        // Much later: only the settling time.
        let later = start + Duration::from_secs(60);
        pacing.swapped(later);
        assert_eq!(pacing.due(), Some(later + SETTLE));
    }

    #[test]
    fn a_swap_of_the_data_link_is_seen_and_other_files_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let (sender, mut changed) = tokio::sync::mpsc::unbounded_channel();
        watch(&[dir.path().to_owned()], sender).unwrap();
        // What the driver's writer does: a new generation, a temporary link, a rename.
        std::fs::write(dir.path().join("unrelated"), "x").unwrap();
        std::fs::create_dir(dir.path().join("..2026_12_06")).unwrap();
        std::os::unix::fs::symlink("..2026_12_06", dir.path().join("..data_tmp")).unwrap();
        std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).unwrap();
        let runtime = crate::runtime().unwrap();
        let seen = runtime
            .block_on(async { tokio::time::timeout(Duration::from_secs(5), changed.recv()).await });
        assert_eq!(seen, Ok(Some(0)));
        assert!(changed.try_recv().is_err(), "one swap, one message");
        let error = watch(
            &[dir.path().join("missing")],
            tokio::sync::mpsc::unbounded_channel().0,
        )
        .unwrap_err();
        assert!(
            error.contains("missing") && error.contains("mounted"),
            "{error}"
        );
    }
}
