//! Kubelet-style atomic updates of a volume's files.
//!
//! Layout of a volume:
//! ```text
//! db-password -> ..data/db-password      one symlink per user file
//! ..data      -> ..2026_11_28_03_22_43.1 the current generation
//! ..2026_11_28_03_22_43.1/db-password    the bytes
//! ```
//! An update writes a new generation directory, points a temporary link at it and renames that
//! link over `..data` (rename(2) is atomic), then adds or removes user-visible links and deletes
//! the old generation. A reader therefore sees either all old or all new files, never a mix. An
//! inotify watch on the directory sees the swap as IN_MOVED_TO of `..data`; a watch on a file
//! sees nothing, because the file's inode never changes (new bytes live in a new inode).

//!
//! The directory is on a tmpfs mounted into a pod, so everything in it is treated as written by the
//! pod: the current generation is read through directory handles without following links
//! (`O_NOFOLLOW` on every name), regular files only, each size-capped, and `..data` must name a
//! generation of our own shape directly below the volume. Only such a generation is ever deleted.

use nix::dir::Dir;
use nix::fcntl::{OFlag, openat, readlinkat};
use nix::sys::stat::Mode;
use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt, symlink};
use std::path::Path;

const DATA_LINK: &str = "..data";
const DATA_LINK_TMP: &str = "..data_tmp";
/// Largest file read back from a volume. What the driver writes is bounded by the volume's tmpfs
/// (4 MiB by default), so anything larger was not written by the driver.
const MAX_FILE_SIZE: u64 = 16 * 1024 * 1024;

/// File name -> content, and the modes asked for (file name -> permission bits; files not
/// listed get the volume's default, see [`Access`]). `Debug` lists names only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Files(pub BTreeMap<String, Vec<u8>>, pub BTreeMap<String, u32>);

impl fmt::Debug for Files {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// Who may read the files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// root-owned, 0644: readable by any user of the pod.
    World,
    /// root:<gid>, 0640: kubelet passed the pod's fsGroup as volume_mount_group.
    Group(u32),
}

/// The files currently visible in `dir`, with the mode of every one, or `None` when nothing was
/// written there yet.
pub fn current(dir: &Path) -> io::Result<Option<Files>> {
    let mut files = BTreeMap::new();
    let mut modes = BTreeMap::new();
    let visited = visit_current(dir, |name, bytes, mode| {
        files.insert(name.clone(), bytes);
        modes.insert(name, mode);
        true
    })?;
    Ok(visited.map(|_| Files(files, modes)))
}

/// Whether `dir` shows a generation of ours: its `..data` link and the directory that names,
/// without reading a file. What a republish checks at every pod sync, where reading the files
/// would cost their whole size in memory, outside any budget, for each volume kubelet republishes.
pub fn written(dir: &Path) -> io::Result<bool> {
    let root = open_dir(dir)?;
    let Some(generation) = current_generation(&root)? else {
        return Ok(false);
    };
    let opened = openat(
        &root,
        generation.as_str(),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    );
    Ok(opened.is_ok())
}

/// Whether `dir` shows exactly `files` with `modes`, read one file at a time (never the whole
/// generation beside the new one).
fn unchanged(
    dir: &Path,
    files: &BTreeMap<String, Vec<u8>>,
    modes: &BTreeMap<String, u32>,
) -> io::Result<bool> {
    let mut seen = 0;
    let visited = visit_current(dir, |name, bytes, mode| {
        seen += 1;
        files.get(&name) == Some(&bytes) && modes.get(&name) == Some(&mode)
    })?;
    Ok(visited == Some(true) && seen == files.len())
}

/// Reads the files currently visible in `dir` one at a time into `visit` (name, bytes, mode),
/// which says whether to go on. `None` when nothing was written there yet, else whether every
/// file was visited.
fn visit_current(
    dir: &Path,
    mut visit: impl FnMut(String, Vec<u8>, u32) -> bool,
) -> io::Result<Option<bool>> {
    let root = open_dir(dir)?;
    let Some(generation) = current_generation(&root)? else {
        return Ok(None);
    };
    let generation_dir = openat(
        &root,
        generation.as_str(),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| {
        foreign(format!(
            "generation {generation} is not a directory of ours ({e})"
        ))
    })?;
    let mut listing = Dir::from_fd(generation_dir.try_clone()?)?;
    for entry in listing.iter() {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "." || name == ".." {
            continue;
        }
        if !is_file_name(&name) {
            return Err(foreign(format!(
                "unexpected entry {name:?} in {generation}"
            )));
        }
        let (bytes, mode) = read_regular_file(&generation_dir, &name)?;
        if !visit(name, bytes, mode) {
            return Ok(Some(false));
        }
    }
    Ok(Some(true))
}

/// Opens `dir` itself without following a link in its place.
fn open_dir(dir: &Path) -> io::Result<OwnedFd> {
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW).bits())
        .open(dir)?;
    Ok(OwnedFd::from(file))
}

/// The generation `..data` names, `None` when there is no `..data` yet. Anything but a link to a
/// name of our generations' shape is an error: the pod put it there.
fn current_generation(root: &OwnedFd) -> io::Result<Option<String>> {
    match readlinkat(root, DATA_LINK) {
        Ok(target) => {
            let target = target.to_string_lossy().into_owned();
            if is_generation_name(&target) {
                Ok(Some(target))
            } else {
                Err(foreign(format!(
                    "{DATA_LINK} points at {target:?}, not at a generation of the driver"
                )))
            }
        }
        Err(nix::errno::Errno::ENOENT) => Ok(None),
        Err(e) => Err(foreign(format!(
            "{DATA_LINK} is not a link of the driver ({e})"
        ))),
    }
}

/// Reads `name` below `dir` if it is a regular file of at most [`MAX_FILE_SIZE`] bytes. A FIFO
/// opens without blocking (`O_NONBLOCK`) and is refused before any read, like a device.
fn read_regular_file(dir: &OwnedFd, name: &str) -> io::Result<(Vec<u8>, u32)> {
    let fd = openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| foreign(format!("cannot open {name:?} as a plain file ({e})")))?;
    let file = fs::File::from(fd);
    let metadata = file.metadata()?;
    if !metadata.file_type().is_file() {
        return Err(foreign(format!("{name:?} is not a regular file")));
    }
    if metadata.len() > MAX_FILE_SIZE {
        return Err(foreign(format!(
            "{name:?} is larger than {MAX_FILE_SIZE} bytes"
        )));
    }
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    file.take(MAX_FILE_SIZE + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_SIZE {
        return Err(foreign(format!("{name:?} grew past {MAX_FILE_SIZE} bytes")));
    }
    Ok((bytes, metadata.permissions().mode() & 0o777))
}

/// Something in the volume that the driver did not put there.
fn foreign(what: String) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("the volume holds something the driver did not write: {what}"),
    )
}

/// A user file name: one path component, not reserved for the layout.
fn is_file_name(name: &str) -> bool {
    !(name.is_empty() || name.contains('/') || name == "." || name.starts_with(".."))
}

/// `..YYYY_MM_DD_HH_MM_SS.NNNNNNNNN`, as [`new_generation_name`] makes them.
fn is_generation_name(name: &str) -> bool {
    const SHAPE: &[u8] = b"dddd_dd_dd_dd_dd_dd.ddddddddd";
    name.strip_prefix("..").is_some_and(|rest| {
        rest.len() == SHAPE.len()
            && rest.bytes().zip(SHAPE.iter()).all(|(c, &s)| {
                if s == b'd' {
                    c.is_ascii_digit()
                } else {
                    c == s
                }
            })
    })
}

/// Makes `files` the content of `dir` atomically. Returns `false`, touching nothing, when the
/// content is already exactly that, so an unchanged secret never disturbs a watcher.
pub fn write(dir: &Path, files: &Files, access: Access) -> io::Result<bool> {
    for name in files.0.keys() {
        // The SSI was validated, but this is the last line of defence of the privileged writer.
        if !is_file_name(name) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("refusing file name {name:?}"),
            ));
        }
    }
    let (default_mode, gid) = match access {
        Access::World => (0o644, None),
        Access::Group(gid) => (0o640, Some(gid)),
    };
    // Every file's mode: the one asked for, else the default. A changed mode is a change.
    let modes: BTreeMap<String, u32> = files
        .0
        .keys()
        .map(|name| {
            let mode = files.1.get(name).copied().unwrap_or(default_mode) & 0o777;
            (name.clone(), mode)
        })
        .collect();
    if unchanged(dir, &files.0, &modes)? {
        return Ok(false);
    }
    // Validated by current(): a name of our shape, directly below `dir`.
    let old_generation = current_generation(&open_dir(dir)?)?;

    let generation = new_generation_name();
    let generation_dir = dir.join(&generation);
    fs::create_dir(&generation_dir)?;
    let written = (|| {
        fs::set_permissions(&generation_dir, fs::Permissions::from_mode(0o755))?;
        for (name, bytes) in &files.0 {
            let mode = modes[name];
            let path = generation_dir.join(name);
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&path)?;
            file.write_all(bytes)?;
            // The mode given to open is filtered by the umask; set it exactly.
            file.set_permissions(fs::Permissions::from_mode(mode))?;
            if gid.is_some() {
                std::os::unix::fs::fchown(&file, Some(0), gid)?;
            }
        }
        let tmp_link = dir.join(DATA_LINK_TMP);
        let _ = fs::remove_file(&tmp_link);
        symlink(&generation, &tmp_link)?;
        fs::rename(&tmp_link, dir.join(DATA_LINK))
    })();
    if let Err(error) = written {
        // Nothing of a failed write stays: the volume keeps its current generation, and the
        // space of the half-written one is free for the next attempt.
        let _ = fs::remove_dir_all(&generation_dir);
        let _ = fs::remove_file(dir.join(DATA_LINK_TMP));
        if error.raw_os_error() == Some(nix::libc::ENOSPC) {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "the new files and the current ones do not fit the volume's tmpfs together (a \
                 rotation writes the new generation beside the current one): raise the driver's \
                 tmpfs size (csi.tmpfsSize)",
            ));
        }
        return Err(error);
    }

    for name in files.0.keys() {
        let link = dir.join(name);
        if fs::symlink_metadata(&link).is_err() {
            symlink(Path::new(DATA_LINK).join(name), &link)?;
        }
    }
    // The links of files the new generation no longer has (the layout's own names start
    // with `..`).
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("..")
            && !files.0.contains_key(&name)
            && entry.file_type()?.is_symlink()
        {
            fs::remove_file(entry.path())?;
        }
    }
    if let Some(old) = old_generation.filter(|old| *old != generation) {
        // NB: remove_dir_all does not follow links, so a pod that swapped the old generation
        // for a link loses only that link.
        fs::remove_dir_all(dir.join(old))?;
    }
    Ok(true)
}

/// `..<UTC date and time>.<nanoseconds>`, like kubelet's, so that people recognise the layout.
fn new_generation_name() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "..{year:04}_{month:02}_{day:02}_{:02}_{:02}_{:02}.{:09}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_nanos()
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(entries: &[(&str, &str)]) -> Files {
        Files(
            entries
                .iter()
                .map(|(n, v)| ((*n).to_owned(), v.as_bytes().to_vec()))
                .collect(),
            BTreeMap::new(),
        )
    }

    #[test]
    fn a_mode_asked_for_is_set_and_a_changed_mode_is_a_change() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mode_of = |name: &str| {
            fs::metadata(dir.path().join(name))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        let mut asked = files(&[("key.pem", "k"), ("ca.crt", "c")]);
        asked.1.insert("key.pem".into(), 0o400);
        assert!(write(dir.path(), &asked, Access::World).unwrap());
        assert_eq!(mode_of("key.pem"), 0o400);
        assert_eq!(mode_of("ca.crt"), 0o644, "the default for the others");
        assert!(
            !write(dir.path(), &asked, Access::World).unwrap(),
            "unchanged"
        );
        asked.1.insert("key.pem".into(), 0o440);
        assert!(
            write(dir.path(), &asked, Access::World).unwrap(),
            "the mode changed"
        );
        assert_eq!(mode_of("key.pem"), 0o440);
    }

    #[test]
    fn a_failed_write_leaves_no_half_written_generation_and_keeps_the_current_one() {
        let dir = tempfile::tempdir().unwrap();
        let first = files(&[("db-password", "one")]);
        assert!(write(dir.path(), &first, Access::World).unwrap());
        let before = entries(dir.path());
        // A name longer than the filesystem takes: written after the first file of the new
        // generation, so the failure comes midway.
        let failing = files(&[("a", "new"), (&"x".repeat(300), "too long a name")]);
        assert!(write(dir.path(), &failing, Access::World).is_err());
        assert_eq!(
            entries(dir.path()),
            before,
            "nothing of the failed write stays"
        );
        assert_eq!(current(dir.path()).unwrap().unwrap().0, first.0);
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn first_write_creates_the_kubelet_layout() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            write(
                dir.path(),
                &files(&[("db-password", "s1"), ("user", "u")]),
                Access::World
            )
            .unwrap()
        );
        let names = entries(dir.path());
        assert_eq!(names.len(), 4, "{names:?}");
        assert!(names.contains(&"..data".to_owned()));
        assert!(names.iter().any(|n| n.starts_with("..20")), "{names:?}");
        assert_eq!(
            fs::read_link(dir.path().join("db-password")).unwrap(),
            Path::new("..data/db-password")
        );
        assert_eq!(fs::read(dir.path().join("db-password")).unwrap(), b"s1");
        let mode = fs::metadata(dir.path().join("db-password"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o644);
    }

    #[test]
    fn written_sees_a_generation_without_reading_it() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!written(dir.path()).unwrap(), "nothing written yet");
        write(dir.path(), &files(&[("a", "1")]), Access::World).unwrap();
        assert!(written(dir.path()).unwrap());
        let generation = fs::read_link(dir.path().join("..data")).unwrap();
        fs::remove_dir_all(dir.path().join(&generation)).unwrap();
        assert!(!written(dir.path()).unwrap(), "its generation is gone");
        // A generation's name, but a link to a directory elsewhere: not followed.
        let elsewhere = tempfile::tempdir().unwrap();
        symlink(elsewhere.path(), dir.path().join(&generation)).unwrap();
        assert!(
            !written(dir.path()).unwrap(),
            "a linked generation is not ours"
        );
        fs::remove_file(dir.path().join(&generation)).unwrap();
        fs::remove_file(dir.path().join("..data")).unwrap();
        symlink("/etc", dir.path().join("..data")).unwrap();
        assert!(written(dir.path()).is_err(), "a link that is not ours");
    }

    #[test]
    fn identical_content_is_not_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &files(&[("a", "1")]), Access::World).unwrap();
        let generation = fs::read_link(dir.path().join("..data")).unwrap();
        assert!(!write(dir.path(), &files(&[("a", "1")]), Access::World).unwrap());
        assert_eq!(
            fs::read_link(dir.path().join("..data")).unwrap(),
            generation
        );
    }

    #[test]
    fn changes_swap_generations_and_add_and_remove_links() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &files(&[("a", "1"), ("b", "2")]), Access::World).unwrap();
        let first = fs::read_link(dir.path().join("..data")).unwrap();
        assert!(
            write(
                dir.path(),
                &files(&[("a", "10"), ("c", "3")]),
                Access::World
            )
            .unwrap()
        );
        let second = fs::read_link(dir.path().join("..data")).unwrap();
        assert_ne!(first, second);
        assert!(!dir.path().join(&first).exists(), "old generation removed");
        assert_eq!(fs::read(dir.path().join("a")).unwrap(), b"10");
        assert_eq!(fs::read(dir.path().join("c")).unwrap(), b"3");
        assert!(
            fs::symlink_metadata(dir.path().join("b")).is_err(),
            "b removed"
        );
        assert_eq!(
            current(dir.path()).unwrap().map(|current| current.0),
            Some(files(&[("a", "10"), ("c", "3")]).0)
        );
        assert_eq!(entries(dir.path()).len(), 4);
    }

    #[test]
    fn group_access_is_root_owned_0640() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &files(&[("a", "1")]), Access::Group(2000)).unwrap();
        let meta = fs::metadata(dir.path().join("a")).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o640);
        assert_eq!((meta.uid(), meta.gid()), (0, 2000));
    }

    #[test]
    fn refuses_reserved_names_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["..data", "..", ".", "a/b", ""] {
            assert!(
                write(dir.path(), &files(&[(name, "x")]), Access::World).is_err(),
                "{name}"
            );
        }
        assert!(entries(dir.path()).is_empty());
    }

    #[test]
    fn generation_names_sort_by_time() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_785), (2026, 11, 28));
        let a = new_generation_name();
        let b = new_generation_name();
        assert!(
            a.starts_with("..") && a.len() == "..2026_11_28_03_22_43.123456789".len(),
            "{a}"
        );
        assert!(a <= b);
    }

    #[test]
    fn debug_of_files_shows_names_only() {
        let debug = format!("{:?}", files(&[("db-password", "hunter2")]));
        assert!(
            debug.contains("db-password") && !debug.contains("hunter2"),
            "{debug}"
        );
    }

    /// The current generation's directory, where a pod with a writable volume would plant things.
    fn generation_dir(dir: &Path) -> std::path::PathBuf {
        dir.join(fs::read_link(dir.join("..data")).unwrap())
    }

    #[test]
    fn generation_names_have_one_shape() {
        assert!(is_generation_name(&new_generation_name()));
        for name in [
            "..data",
            "..",
            "../etc",
            "/etc",
            "..2026_11_28_03_22_43.12345678",
            "..2026_11_28_03_22_43.1234567890",
            "..2026_11_28_03_22_43/123456789",
            "x.2026_11_28_03_22_43.123456789",
        ] {
            assert!(!is_generation_name(name), "{name}");
        }
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &files(&[("a", "1")]), Access::World).unwrap();
        let planted = generation_dir(dir.path()).join("a");
        fs::remove_file(&planted).unwrap();
        nix::unistd::mkfifo(&planted, Mode::from_bits_truncate(0o644)).unwrap();
        // Opening a FIFO for reading blocks until a writer comes, unless O_NONBLOCK.
        let error = current(dir.path()).expect_err("a FIFO is not ours");
        assert!(
            error.to_string().contains("\"a\" is not a regular file"),
            "{error}"
        );
        let error = write(dir.path(), &files(&[("a", "2")]), Access::World).expect_err("refused");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn links_are_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &files(&[("a", "1")]), Access::World).unwrap();
        let planted = generation_dir(dir.path()).join("a");
        fs::remove_file(&planted).unwrap();
        // An endless source behind a link: followed, it would fill the driver's memory.
        symlink("/dev/zero", &planted).unwrap();
        let error = current(dir.path()).expect_err("a link is not ours");
        assert!(error.to_string().contains("cannot open \"a\""), "{error}");
    }

    #[test]
    fn oversized_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &files(&[("a", "1")]), Access::World).unwrap();
        let planted = generation_dir(dir.path()).join("a");
        fs::OpenOptions::new()
            .write(true)
            .open(&planted)
            .unwrap()
            .set_len(MAX_FILE_SIZE + 1)
            .unwrap();
        let error = current(dir.path()).expect_err("too large");
        assert!(error.to_string().contains("larger than"), "{error}");
    }

    #[test]
    fn data_pointing_elsewhere_deletes_nothing_there() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("precious"), "keep me").unwrap();
        write(dir.path(), &files(&[("a", "1")]), Access::World).unwrap();
        for target in [
            outside.path().to_str().unwrap().to_owned(),
            format!(
                "../{}",
                outside.path().file_name().unwrap().to_str().unwrap()
            ),
        ] {
            let data = dir.path().join("..data");
            fs::remove_file(&data).unwrap();
            symlink(&target, &data).unwrap();
            let error =
                write(dir.path(), &files(&[("a", "2")]), Access::World).expect_err("refused");
            assert!(
                error
                    .to_string()
                    .contains("not at a generation of the driver"),
                "{error}"
            );
            assert_eq!(
                fs::read_to_string(outside.path().join("precious")).unwrap(),
                "keep me"
            );
        }
    }

    #[test]
    fn a_swapped_old_generation_loses_only_the_link() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("precious"), "keep me").unwrap();
        write(dir.path(), &files(&[("a", "1")]), Access::World).unwrap();
        let old = generation_dir(dir.path());
        let content = fs::read(old.join("a")).unwrap();
        fs::remove_dir_all(&old).unwrap();
        // The generation's name now leads to a directory outside: replaced by a link, which
        // the driver refuses to open, so the next write fails before it deletes anything.
        symlink(outside.path(), &old).unwrap();
        let error = write(dir.path(), &files(&[("a", "2")]), Access::World).expect_err("refused");
        assert!(
            error.to_string().contains("is not a directory of ours"),
            "{error}"
        );
        assert_eq!(content, b"1");
        assert_eq!(
            fs::read_to_string(outside.path().join("precious")).unwrap(),
            "keep me"
        );
    }
}
