//! Packs the static binaries into the shipped images (called by `scripts/build-images`, which
//! builds the binaries first): `build_images <out-dir>`.

use ssi_tests::images::{ImageFile, build_image, injector_image};
use ssi_tests::workspace_path;
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "target/images".into()),
    );
    // Stripped copies of the static release binaries, made by scripts/build-images.
    let binaries = workspace_path("target/images/bin");
    let mut archives = Vec::new();
    for name in ["ssi-csi", "ssi-webhook"] {
        let binary = binaries.join(name);
        anyhow::ensure!(
            binary.is_file(),
            "{} is missing; run scripts/build-images",
            binary.display()
        );
        let target = format!("/{name}");
        // The system's CA bundle, for stores and registries with public certificates (there is
        // no other file in the image to trust them by).
        // host path: only read, copied into the image.
        let ca_bundle = std::path::Path::new("/etc/ssl/certs/ca-certificates.crt");
        anyhow::ensure!(
            ca_bundle.is_file(),
            "{} is missing; apt-get install ca-certificates",
            ca_bundle.display()
        );
        archives.push(build_image(
            &out,
            &format!(
                "secrets-store-integration/{name}:{}",
                env!("CARGO_PKG_VERSION")
            ),
            &[
                ImageFile::executable(&binary, &target),
                ImageFile {
                    source: ca_bundle,
                    target: "/etc/ssl/certs/ca-certificates.crt",
                    mode: 0o644,
                },
            ],
            &[],
            &[&target],
        )?);
    }
    archives.push(injector_image(&out)?);
    for archive in archives {
        println!("{}", archive.display());
    }
    Ok(())
}
