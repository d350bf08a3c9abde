//! The tmpfs under each volume, and where target paths may be.

use nix::mount::{MntFlags, MsFlags};
use std::io;
use std::path::{Component, Path, PathBuf};

/// Mounts a fresh tmpfs of at most `size` at `target`: no devices, no setuid, no executables.
pub fn mount_tmpfs(target: &Path, size: &str) -> io::Result<()> {
    let options = format!("size={size},mode=0755");
    nix::mount::mount(
        Some("tmpfs"),
        target,
        Some("tmpfs"),
        MsFlags::MS_NODEV | MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some(options.as_str()),
    )
    .map_err(io::Error::from)
}

/// Unmounts everything stacked on `target` (a crash may have left two mounts).
pub fn unmount_all(target: &Path) -> io::Result<()> {
    while is_mount_point(target)? {
        if let Err(e) = nix::mount::umount(target) {
            // NB: a busy mount (a process still has a file open) is detached instead; its memory
            // is freed when the last user lets go, and the path is free again now.
            if e != nix::errno::Errno::EBUSY {
                return Err(io::Error::from(e));
            }
            nix::mount::umount2(target, MntFlags::MNT_DETACH).map_err(io::Error::from)?;
        }
    }
    Ok(())
}

/// Whether a filesystem is mounted at `path`: its device differs from its parent's. O(1), where
/// scanning /proc/self/mountinfo costs O(mounts) and made a rotation cycle quadratic. (The one
/// case it misses, a bind mount from the same filesystem, is not one this driver creates.)
pub fn is_mount_point(path: &Path) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let Some(parent) = path.parent() else {
        return Ok(true);
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) => Ok(meta.dev() != std::fs::metadata(parent)?.dev()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Checks that `target` is an absolute path strictly below `kubelet_root`, with no `..` and no
/// symlink in its existing ancestors leading elsewhere. Returns the path to use.
pub fn confine(target: &Path, kubelet_root: &Path) -> Result<PathBuf, String> {
    if !target.is_absolute() {
        return Err(format!("target path {} is not absolute", target.display()));
    }
    if target
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(format!("target path {} contains . or ..", target.display()));
    }
    let root = kubelet_root
        .canonicalize()
        .map_err(|e| format!("kubelet root {} is not usable: {e}", kubelet_root.display()))?;
    // The deepest existing ancestor, resolved, must still be below the root: a symlink planted
    // in the pod's directory cannot redirect the privileged mount.
    let mut existing = target;
    while !existing.exists() {
        existing = existing
            .parent()
            .ok_or_else(|| format!("target path {} has no parent", target.display()))?;
    }
    let resolved = existing
        .canonicalize()
        .map_err(|e| format!("cannot resolve {}: {e}", existing.display()))?;
    let rest = target.strip_prefix(existing).unwrap_or(Path::new(""));
    let full = resolved.join(rest);
    if !full.starts_with(&root) || full == root {
        return Err(format!(
            "target path {} is outside the kubelet root {}",
            target.display(),
            root.display()
        ));
    }
    Ok(full)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_mount_points_from_plain_directories() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_mount_point(&dir.path().join("missing")).unwrap());
        let target = dir.path().join("mnt");
        std::fs::create_dir(&target).unwrap();
        assert!(!is_mount_point(&target).unwrap());
        mount_tmpfs(&target, "1m").unwrap();
        assert!(is_mount_point(&target).unwrap());
        unmount_all(&target).unwrap();
        assert!(!is_mount_point(&target).unwrap());
    }

    #[test]
    fn confines_targets_to_the_kubelet_root() {
        let root = tempfile::tempdir().unwrap();
        let pod = root.path().join("pods/uid/volumes/kubernetes.io~csi/vol");
        std::fs::create_dir_all(&pod).unwrap();
        let target = pod.join("mount");
        assert_eq!(
            confine(&target, root.path()).unwrap(),
            root.path()
                .canonicalize()
                .unwrap()
                .join("pods/uid/volumes/kubernetes.io~csi/vol/mount")
        );

        assert!(
            // host path: only resolved, as the target an attacker names, and refused.
            confine(Path::new("/etc/mount"), root.path())
                .unwrap_err()
                .contains("outside the kubelet root")
        );
        assert!(
            confine(&root.path().join("pods/../../etc"), root.path())
                .unwrap_err()
                .contains("..")
        );
        assert!(
            confine(Path::new("relative/mount"), root.path())
                .unwrap_err()
                .contains("not absolute")
        );
        assert!(
            confine(root.path(), root.path()).is_err(),
            "the root itself is not a target"
        );

        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("pods/uid/escape")).unwrap();
        let err = confine(&root.path().join("pods/uid/escape/mount"), root.path()).unwrap_err();
        assert!(err.contains("outside the kubelet root"), "{err}");
    }
}
