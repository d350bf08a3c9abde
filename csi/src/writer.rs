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

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt, symlink};
use std::path::Path;

const DATA_LINK: &str = "..data";
const DATA_LINK_TMP: &str = "..data_tmp";

/// File name -> content. `Debug` lists names only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Files(pub BTreeMap<String, Vec<u8>>);

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

/// The files currently visible in `dir`, or `None` when nothing was written there yet.
pub fn current(dir: &Path) -> io::Result<Option<Files>> {
    let data = dir.join(DATA_LINK);
    if fs::symlink_metadata(&data).is_err() {
        return Ok(None);
    }
    let mut files = BTreeMap::new();
    for entry in fs::read_dir(&data)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        files.insert(name, fs::read(entry.path())?);
    }
    Ok(Some(Files(files)))
}

/// Makes `files` the content of `dir` atomically. Returns `false`, touching nothing, when the
/// content is already exactly that, so an unchanged secret never disturbs a watcher.
pub fn write(dir: &Path, files: &Files, access: Access) -> io::Result<bool> {
    for name in files.0.keys() {
        // The SSI was validated, but this is the last line of defence of the privileged writer.
        if name.is_empty() || name.contains('/') || name == "." || name.starts_with("..") {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("refusing file name {name:?}"),
            ));
        }
    }
    let previous = current(dir)?;
    if previous.as_ref() == Some(files) {
        return Ok(false);
    }
    let old_generation = fs::read_link(dir.join(DATA_LINK)).ok();

    let generation = new_generation_name();
    let generation_dir = dir.join(&generation);
    fs::create_dir(&generation_dir)?;
    fs::set_permissions(&generation_dir, fs::Permissions::from_mode(0o755))?;
    let (mode, gid) = match access {
        Access::World => (0o644, None),
        Access::Group(gid) => (0o640, Some(gid)),
    };
    for (name, bytes) in &files.0 {
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
    fs::rename(&tmp_link, dir.join(DATA_LINK))?;

    for name in files.0.keys() {
        let link = dir.join(name);
        if fs::symlink_metadata(&link).is_err() {
            symlink(Path::new(DATA_LINK).join(name), &link)?;
        }
    }
    if let Some(previous) = previous {
        for name in previous.0.keys().filter(|n| !files.0.contains_key(*n)) {
            fs::remove_file(dir.join(name))?;
        }
    }
    if let Some(old) = old_generation.filter(|old| old.as_os_str() != generation.as_str()) {
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
        )
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
            current(dir.path()).unwrap(),
            Some(files(&[("a", "10"), ("c", "3")]))
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
}
