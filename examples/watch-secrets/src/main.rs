//! An application that notices when its secret changes, for docs/rotation.md and the demo.
//!
//! `watch-secrets DIR FILE` prints FILE (a name inside DIR) at start and again each time its
//! content changes. A real application would reload its configuration where this one prints.
//!
//! It watches the directory, not the file. The driver never writes into a file: it writes a new
//! generation directory and atomically renames the `..data` symlink over the old one, so
//! `DIR/FILE -> ..data/FILE` resolves to a new inode. A watch on the file itself (the guide's
//! IN_MODIFY example) stays on the old inode and never fires. The directory sees the rename as
//! IN_MOVED_TO `..data`; other drivers and kubelet's own Secret volumes work the same way.

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// How long a burst of events may take before the file is read again.
const SETTLE: Duration = Duration::from_millis(100);

fn main() -> ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [dir, file] = args.as_slice() else {
        eprintln!("usage: watch-secrets DIR FILE   (e.g. watch-secrets /mnt/secrets db-password)");
        return ExitCode::from(2);
    };
    match watch(dir, file) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("watch-secrets: {e}");
            ExitCode::FAILURE
        }
    }
}

fn watch(dir: &Path, file: &Path) -> Result<(), String> {
    // As a container's PID 1 the process gets no default action for SIGTERM: without handling
    // it, every pod deletion would wait out the grace period and end in SIGKILL.
    let mut stop = SigSet::empty();
    stop.add(Signal::SIGTERM);
    stop.add(Signal::SIGINT);
    stop.thread_block()
        .map_err(|e| format!("block signals: {e}"))?;
    let signals =
        SignalFd::with_flags(&stop, SfdFlags::SFD_CLOEXEC).map_err(|e| format!("signalfd: {e}"))?;
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
        .map_err(|e| format!("inotify: {e}"))?;
    // Watch before the first read, so a change between the two is not missed.
    let events = AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_CLOSE_WRITE;
    inotify
        .add_watch(dir, events)
        .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    let path = dir.join(file);
    let mut current = read(&path);
    print(file, &current);
    loop {
        let mut ready = [
            PollFd::new(inotify.as_fd(), PollFlags::POLLIN),
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
        ];
        poll(&mut ready, PollTimeout::NONE).map_err(|e| format!("poll: {e}"))?;
        if ready[1].any().unwrap_or(false) {
            return Ok(());
        }
        // One rotation is a burst of events (new generation, link, rename, clean-up): let it
        // finish, take all of it, and compare the content, so the application reacts once per
        // actual change.
        std::thread::sleep(SETTLE);
        let mut seen = Vec::new();
        loop {
            match inotify.read_events() {
                Ok(batch) => seen.extend(batch.iter().map(|event| {
                    let name = event.name.as_deref().unwrap_or_default();
                    format!("{} {}", event_name(event.mask), name.to_string_lossy())
                })),
                Err(Errno::EAGAIN) => break,
                Err(e) => return Err(format!("inotify: {e}")),
            }
        }
        let latest = read(&path);
        if latest != current {
            println!("inotify on {}: {}", dir.display(), seen.join(", "));
            print(file, &latest);
            current = latest;
        }
    }
}

fn event_name(mask: AddWatchFlags) -> &'static str {
    [
        (AddWatchFlags::IN_MOVED_TO, "IN_MOVED_TO"),
        (AddWatchFlags::IN_CREATE, "IN_CREATE"),
        (AddWatchFlags::IN_DELETE, "IN_DELETE"),
        (AddWatchFlags::IN_CLOSE_WRITE, "IN_CLOSE_WRITE"),
    ]
    .into_iter()
    .find(|(flag, _)| mask.contains(*flag))
    .map_or("other", |(_, name)| name)
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn print(file: &Path, content: &Option<String>) {
    match content {
        Some(text) => println!("{}: {}", file.display(), text.trim_end()),
        None => println!("{}: (missing)", file.display()),
    }
}
