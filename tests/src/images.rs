//! Container images without Docker: files packed into an OCI layout with `umoci`, converted to
//! a docker-archive with `skopeo`, ready for `ctr images import` on the real node.

use crate::run;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One file of an image: where it comes from on this machine, where it goes in the image, and
/// its mode there.
#[derive(Debug, Clone, Copy)]
pub struct ImageFile<'a> {
    /// The file on this machine.
    pub source: &'a Path,
    /// Absolute path in the image.
    pub target: &'a str,
    /// Permission bits in the image.
    pub mode: u32,
}

impl<'a> ImageFile<'a> {
    /// A file installed with mode 0755.
    pub fn executable(source: &'a Path, target: &'a str) -> ImageFile<'a> {
        ImageFile {
            source,
            target,
            mode: 0o755,
        }
    }
}

/// Builds `reference` (`name:tag`) holding `files` and `links` (target, link name),
/// starting `entrypoint`; returns the docker-archive's path in `dir`.
pub fn build_image(
    dir: &Path,
    reference: &str,
    files: &[ImageFile],
    links: &[(&str, &str)],
    entrypoint: &[&str],
) -> crate::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let tag = reference.replace(['/', ':'], "-");
    let layout = dir.join(format!("{tag}.oci"));
    let bundle = dir.join(format!("{tag}.bundle"));
    let _ = std::fs::remove_dir_all(&layout);
    let _ = std::fs::remove_dir_all(&bundle);
    let image = format!("{}:{tag}", layout.display());
    run(Command::new("umoci")
        .args(["init", "--layout"])
        .arg(&layout))?;
    run(Command::new("umoci").args(["new", "--image", &image]))?;
    run(Command::new("umoci")
        .args(["unpack", "--image", &image])
        .arg(&bundle))?;
    let rootfs = bundle.join("rootfs");
    for file in files {
        let target = rootfs.join(file.target.trim_start_matches('/'));
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(file.source, &target)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(file.mode))?;
    }
    for (target, link) in links {
        let link = rootfs.join(link.trim_start_matches('/'));
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::os::unix::fs::symlink(target, link)?;
    }
    run(Command::new("umoci")
        .args(["repack", "--image", &image])
        .arg(&bundle))?;
    let mut config = Command::new("umoci");
    config.args([
        "config",
        "--image",
        &image,
        "--os",
        "linux",
        "--architecture",
        "amd64",
    ]);
    for part in entrypoint {
        config.args(["--config.entrypoint", part]);
    }
    run(&mut config)?;
    let archive = dir.join(format!("{tag}.tar"));
    let _ = std::fs::remove_file(&archive);
    run(Command::new("skopeo")
        .args(["copy", "--quiet"])
        .arg(format!("oci:{image}"))
        .arg(format!("docker-archive:{}:{reference}", archive.display())))?;
    let _ = std::fs::remove_dir_all(&bundle);
    Ok(archive)
}

/// The pod sandbox image: the pause binary compiled from the bed's Kubernetes tree.
pub fn pause_image(dir: &Path) -> crate::Result<PathBuf> {
    let pause = crate::process::tool("pause")?;
    build_image(
        dir,
        "ssi-testbed/pause:1",
        &[ImageFile::executable(&pause, "/pause")],
        &[],
        &["/pause"],
    )
}

/// A workload image: Debian's static busybox with the applets the guide's pods use.
pub fn busybox_image(dir: &Path) -> crate::Result<PathBuf> {
    let busybox = Path::new("/bin/busybox");
    let applets = ["sh", "cat", "echo", "sleep", "env", "ls", "date", "true"];
    let links: Vec<(&str, String)> = applets
        .iter()
        .map(|a| ("busybox", format!("/bin/{a}")))
        .collect();
    let links: Vec<(&str, &str)> = links.iter().map(|(t, l)| (*t, l.as_str())).collect();
    build_image(
        dir,
        "ssi-testbed/busybox:1",
        &[ImageFile::executable(busybox, "/bin/busybox")],
        &links,
        &["/bin/sh"],
    )
}

/// The injector's image (what the webhook's init container runs): the static binary from
/// `scripts/build-injector` as `/ssi-injector`.
pub fn injector_image(dir: &Path) -> crate::Result<PathBuf> {
    let binary = crate::workspace_path("target/x86_64-unknown-linux-gnu/injector/ssi-injector");
    anyhow::ensure!(
        binary.is_file(),
        "{} is missing; build it with scripts/build-injector (scripts/test does)",
        binary.display()
    );
    build_image(
        dir,
        concat!(
            "secrets-store-integration/ssi-injector:",
            env!("CARGO_PKG_VERSION")
        ),
        &[ImageFile::executable(&binary, "/ssi-injector")],
        &[],
        &["/ssi-injector"],
    )
}
