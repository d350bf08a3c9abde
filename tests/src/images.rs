//! Container images without Docker, root or any tool but this crate: files packed into one
//! gzip layer per platform, written as an OCI image layout in a tar archive whose `index.json`
//! names one image index (one manifest per platform), as `docker save` writes them. Such an
//! archive loads with `ctr images import`, `kind load image-archive` and `docker load`, and is
//! pushed whole with `skopeo copy --all oci-archive:<file> docker://<registry>/<name>:<tag>`.
//! Everything in it is reproducible: no dates, owner root, entries sorted.

use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
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

/// The files of an image for one platform.
#[derive(Debug, Clone)]
pub struct PlatformImage<'a> {
    /// GOARCH spelling: `amd64`, `arm64`.
    pub architecture: &'a str,
    /// The files.
    pub files: Vec<ImageFile<'a>>,
    /// Symbolic links: (target, link name).
    pub links: Vec<(&'a str, String)>,
}

/// A written archive and the digest of its image index, which a registry reports for it.
#[derive(Debug, Clone)]
pub struct Archive {
    /// The tar file.
    pub path: PathBuf,
    /// `sha256:...` of the image index.
    pub digest: String,
}

/// Builds `reference` (`name:tag`) for this machine's platform (amd64), holding `files` and
/// `links` (target, link name), starting `entrypoint`; returns the archive's path in `dir`.
pub fn build_image(
    dir: &Path,
    reference: &str,
    files: &[ImageFile],
    links: &[(&str, &str)],
    entrypoint: &[&str],
) -> crate::Result<PathBuf> {
    let platform = PlatformImage {
        architecture: "amd64",
        files: files.to_vec(),
        links: links.iter().map(|(t, l)| (*t, (*l).to_owned())).collect(),
    };
    Ok(build_index(dir, reference, &[platform], entrypoint)?.path)
}

/// Builds `reference` for every platform in `platforms` as one image index, written as an OCI
/// archive `<reference with / and : as ->.tar` in `dir`.
pub fn build_index(
    dir: &Path,
    reference: &str,
    platforms: &[PlatformImage],
    entrypoint: &[&str],
) -> crate::Result<Archive> {
    anyhow::ensure!(!platforms.is_empty(), "an image needs a platform");
    let (_, tag) = reference
        .rsplit_once(':')
        .filter(|(_, tag)| !tag.contains('/'))
        .ok_or_else(|| anyhow::anyhow!("{reference} has no tag"))?;
    let mut blobs: Vec<(String, Vec<u8>)> = Vec::new();
    let mut manifests = Vec::new();
    // docker load (without containerd's image store) reads manifest.json, one image only: the
    // first platform's.
    let mut docker_manifest = None;
    for platform in platforms {
        let layer = layer_tar(platform)?;
        let diff_id = sha256(&layer);
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gzip.write_all(&layer)?;
        let layer = blob(&mut blobs, gzip.finish()?);
        let config = blob(
            &mut blobs,
            serde_json::to_vec(&serde_json::json!({
                "architecture": platform.architecture,
                "os": "linux",
                "config": {
                    "Entrypoint": entrypoint,
                    "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                },
                "rootfs": {"type": "layers", "diff_ids": [diff_id]},
                "history": [{"created_by": "secrets-store-integration scripts/build-images"}],
            }))?,
        );
        docker_manifest.get_or_insert_with(|| {
            serde_json::json!([{
                "Config": format!("blobs/sha256/{}", hex_of(&config.0)),
                "RepoTags": [reference],
                "Layers": [format!("blobs/sha256/{}", hex_of(&layer.0))],
            }])
        });
        let manifest = blob(
            &mut blobs,
            serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2,
                "mediaType": MANIFEST,
                "config": {"mediaType": CONFIG, "digest": config.0, "size": config.1},
                "layers": [{"mediaType": LAYER, "digest": layer.0, "size": layer.1}],
            }))?,
        );
        manifests.push(serde_json::json!({
            "mediaType": MANIFEST,
            "digest": manifest.0,
            "size": manifest.1,
            "platform": {"architecture": platform.architecture, "os": "linux"},
        }));
    }
    let index = blob(
        &mut blobs,
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": INDEX,
            "manifests": manifests,
        }))?,
    );
    let top = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": [{
            "mediaType": INDEX,
            "digest": index.0,
            "size": index.1,
            "annotations": {
                // NB: containerd names the image by this, as it is; the tag alone is what
                // skopeo's `oci-archive:<file>:<tag>` selects.
                "io.containerd.image.name": normalized(reference),
                "org.opencontainers.image.ref.name": tag,
            },
        }],
    });

    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{}.tar", reference.replace(['/', ':'], "-")));
    let partial = path.with_extension("tar.partial");
    let mut archive = tar::Builder::new(std::fs::File::create(&partial)?);
    append(
        &mut archive,
        "oci-layout",
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    append(&mut archive, "index.json", &serde_json::to_vec(&top)?)?;
    if let Some(manifest) = docker_manifest {
        append(
            &mut archive,
            "manifest.json",
            &serde_json::to_vec(&manifest)?,
        )?;
    }
    append_dir(&mut archive, "blobs/")?;
    append_dir(&mut archive, "blobs/sha256/")?;
    blobs.sort();
    blobs.dedup_by(|a, b| a.0 == b.0);
    for (digest, content) in &blobs {
        append(
            &mut archive,
            &format!("blobs/sha256/{}", hex_of(digest)),
            content,
        )?;
    }
    archive.into_inner()?.sync_all()?;
    std::fs::rename(&partial, &path)?;
    Ok(Archive {
        path,
        digest: index.0,
    })
}

const INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// The reference as containerd and kubelet spell it: `some/app:1` is `docker.io/some/app:1`.
pub fn normalized(reference: &str) -> String {
    let first = reference.split('/').next().unwrap_or_default();
    let has_registry = reference.contains('/')
        && (first.contains('.') || first.contains(':') || first == "localhost");
    match (has_registry, reference.contains('/')) {
        (true, _) => reference.to_owned(),
        (false, true) => format!("docker.io/{reference}"),
        (false, false) => format!("docker.io/library/{reference}"),
    }
}

fn sha256(content: &[u8]) -> String {
    let digest = Sha256::digest(content);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

fn hex_of(digest: &str) -> &str {
    digest.trim_start_matches("sha256:")
}

/// Keeps `content` as a blob; returns its digest and size.
fn blob(blobs: &mut Vec<(String, Vec<u8>)>, content: Vec<u8>) -> (String, usize) {
    let digest = sha256(&content);
    let size = content.len();
    blobs.push((digest.clone(), content));
    (digest, size)
}

/// One entry of a layer: a file (its source and mode) or a symbolic link (its target).
enum Entry<'a> {
    File(&'a Path, u32),
    Link(&'a str),
}

/// The platform's files as one layer: their directories first, every entry root's, undated.
fn layer_tar(platform: &PlatformImage) -> crate::Result<Vec<u8>> {
    let mut entries: Vec<(String, Entry)> =
        platform
            .files
            .iter()
            .map(|file| {
                let path = file.target.trim_start_matches('/').to_owned();
                (path, Entry::File(file.source, file.mode))
            })
            .chain(platform.links.iter().map(|(target, link)| {
                (link.trim_start_matches('/').to_owned(), Entry::Link(target))
            }))
            .collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut directories: Vec<String> = entries
        .iter()
        .flat_map(|(path, _)| {
            path.match_indices('/')
                .map(|(end, _)| path[..=end].to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    directories.sort();
    directories.dedup();
    let mut layer = tar::Builder::new(Vec::new());
    for directory in &directories {
        append_dir(&mut layer, directory)?;
    }
    for (path, entry) in entries {
        match entry {
            Entry::File(source, mode) => {
                let content = std::fs::read(source)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", source.display()))?;
                let mut header = header(tar::EntryType::Regular, mode, content.len());
                layer.append_data(&mut header, &path, content.as_slice())?;
            }
            Entry::Link(target) => {
                let mut header = header(tar::EntryType::Symlink, 0o777, 0);
                layer.append_link(&mut header, &path, target)?;
            }
        }
    }
    Ok(layer.into_inner()?)
}

/// A tar header of root's, undated: what makes the archives reproducible.
fn header(kind: tar::EntryType, mode: u32, size: usize) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_size(size as u64);
    header
}

fn append<W: Write>(
    archive: &mut tar::Builder<W>,
    path: &str,
    content: &[u8],
) -> crate::Result<()> {
    let mut header = header(tar::EntryType::Regular, 0o644, content.len());
    archive.append_data(&mut header, path, content)?;
    Ok(())
}

fn append_dir<W: Write>(archive: &mut tar::Builder<W>, path: &str) -> crate::Result<()> {
    let mut header = header(tar::EntryType::Directory, 0o755, 0);
    archive.append_data(&mut header, path, std::io::empty())?;
    Ok(())
}

/// The archive of a shipped image (`ssi-csi`, `ssi-webhook`, `ssi-injector`) as
/// `scripts/build-images` leaves it.
pub fn shipped_image(name: &str) -> crate::Result<PathBuf> {
    let archive = crate::workspace_path(&format!(
        "target/images/secrets-store-integration-{name}-{}.tar",
        env!("CARGO_PKG_VERSION")
    ));
    anyhow::ensure!(
        archive.is_file(),
        "{} is missing; build the images with scripts/build-images (scripts/test and scripts/demo do)",
        archive.display()
    );
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

/// The architectures the shipped images are built for, and where `scripts/build-images` leaves
/// each one's static binaries.
pub const ARCHITECTURES: [(&str, &str); 2] = [
    ("amd64", "target/images/bin"),
    ("arm64", "target/images/bin/arm64"),
];

/// A shipped image, `secrets-store-integration/<name>:<version>`, for both architectures: the
/// static binary as `/<name>` and, for those that talk to stores and registries, the system's
/// CA bundle (there is no other file in the image to trust public certificates by).
pub fn product_image(dir: &Path, name: &str) -> crate::Result<Archive> {
    let target = format!("/{name}");
    // host path: only read, copied into the image.
    let ca_bundle = Path::new("/etc/ssl/certs/ca-certificates.crt");
    anyhow::ensure!(
        ca_bundle.is_file(),
        "{} is missing; apt-get install ca-certificates",
        ca_bundle.display()
    );
    let binaries: Vec<(&str, PathBuf)> = ARCHITECTURES
        .iter()
        .map(|(architecture, bin)| (*architecture, crate::workspace_path(bin).join(name)))
        .collect();
    let mut platforms = Vec::new();
    for (architecture, binary) in &binaries {
        anyhow::ensure!(
            binary.is_file(),
            "{} is missing; build it with scripts/build-images (scripts/test does)",
            binary.display()
        );
        let mut files = vec![ImageFile::executable(binary, &target)];
        // NB: the injector reads the CA its reference names or the pod's own bundle.
        if name != "ssi-injector" {
            files.push(ImageFile {
                source: ca_bundle,
                target: "/etc/ssl/certs/ca-certificates.crt",
                mode: 0o644,
            });
        }
        platforms.push(PlatformImage {
            architecture,
            files,
            links: Vec::new(),
        });
    }
    build_index(
        dir,
        &format!(
            "secrets-store-integration/{name}:{}",
            env!("CARGO_PKG_VERSION")
        ),
        &platforms,
        &[&target],
    )
}

/// The injector's image (what the webhook's init container runs).
pub fn injector_image(dir: &Path) -> crate::Result<PathBuf> {
    Ok(product_image(dir, "ssi-injector")?.path)
}
