//! Packs the static binaries into the shipped images (called by `scripts/build-images`, which
//! builds the binaries first): `build_images <out-dir>`. Prints each archive's path and the
//! digest of its image index.

use ssi_tests::images::product_image;
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "target/images".into()),
    );
    for name in ["ssi-csi", "ssi-webhook", "ssi-injector"] {
        let archive = product_image(&out, name)?;
        println!("{} {}", archive.path.display(), archive.digest);
    }
    Ok(())
}
