//! A real OCI registry for the webhook's ENTRYPOINT lookups: Debian's `docker-registry` on
//! loopback with TLS (its own CA) and optionally htpasswd basic auth, holding images made with
//! `umoci` and pushed with `skopeo`, as DESIGN.md section 5 describes.

use crate::pki::Pki;
use crate::process::{Process, free_port};
use crate::run;
use anyhow::Context;
use sha2::Digest;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A running `docker-registry`; dropping it stops the process.
#[derive(Debug)]
pub struct Registry {
    process: Process,
    /// `127.0.0.1:<port>`, as image references name it.
    pub host: String,
    /// CA of the registry's serving certificate (PEM file).
    pub ca_cert: PathBuf,
    credentials: Option<(String, String)>,
    layout: PathBuf,
}

/// What an image starts: its ENTRYPOINT and CMD.
#[derive(Debug, Clone, Copy)]
pub struct ImageCommand<'a> {
    /// `ENTRYPOINT`.
    pub entrypoint: &'a [&'a str],
    /// `CMD`: default arguments.
    pub cmd: &'a [&'a str],
}

impl Registry {
    /// Starts a registry in `dir`; with `credentials`, every request needs them (basic auth).
    pub async fn start(dir: &Path, credentials: Option<(&str, &str)>) -> crate::Result<Registry> {
        std::fs::create_dir_all(dir)?;
        let pki = Pki::create(&dir.join("pki"))?;
        let port = free_port()?;
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {data}\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: ssi-test-bed\n  tls:\n    certificate: {cert}\n    key: {key}\n",
            data = dir.join("data").display(),
            cert = pki.server_cert.display(),
            key = pki.server_key.display(),
        );
        if let Some((user, password)) = credentials {
            let htpasswd = dir.join("htpasswd");
            let line = run(Command::new("htpasswd").args(["-Bbn", user, password])).context(
                "htpasswd comes with apache2-utils (tests/bed/provision.sh installs it)",
            )?;
            std::fs::write(&htpasswd, line)?;
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: ssi-test-bed\n    path: {}\n",
                htpasswd.display()
            ));
        }
        let config_path = dir.join("config.yml");
        std::fs::write(&config_path, config)?;
        let mut command = Command::new("docker-registry");
        command.arg("serve").arg(&config_path);
        let mut process = Process::spawn("docker-registry", command, &dir.join("registry.log"))
            .context("docker-registry comes with the Debian package (tests/bed/provision.sh installs it)")?;
        let host = format!("127.0.0.1:{port}");
        crate::wait::process_ready(&mut process, Duration::from_secs(10), || async {
            std::net::TcpStream::connect(&host).is_ok()
        })
        .await?;
        let layout = dir.join("oci");
        run(Command::new("umoci")
            .args(["init", "--layout"])
            .arg(&layout))?;
        Ok(Registry {
            process,
            host,
            ca_cert: pki.ca_cert,
            credentials: credentials.map(|(u, p)| (u.to_owned(), p.to_owned())),
            layout,
        })
    }

    /// The server's process id, for tests that freeze it (SIGSTOP) to make it hang.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Makes a linux image for `architecture` in the local OCI layout under `tag`.
    fn make_image(
        &self,
        tag: &str,
        architecture: &str,
        command: ImageCommand,
    ) -> crate::Result<()> {
        let image = format!("{}:{tag}", self.layout.display());
        run(Command::new("umoci").args(["new", "--image", &image]))?;
        let mut config = Command::new("umoci");
        config.args([
            "config",
            "--image",
            &image,
            "--os",
            "linux",
            "--architecture",
            architecture,
        ]);
        for part in command.entrypoint {
            config.args(["--config.entrypoint", part]);
        }
        for part in command.cmd {
            config.args(["--config.cmd", part]);
        }
        run(&mut config)?;
        Ok(())
    }

    fn push_tag(&self, tag: &str, repository: &str, all: bool) -> crate::Result<String> {
        let reference = format!("{}/{repository}", self.host);
        let mut copy = Command::new("skopeo");
        copy.args(["copy", "--quiet", "--dest-tls-verify=false"]);
        if all {
            copy.arg("--all");
        }
        if let Some((user, password)) = &self.credentials {
            copy.arg(format!("--dest-creds={user}:{password}"));
        }
        copy.arg(format!("oci:{}:{tag}", self.layout.display()))
            .arg(format!("docker://{reference}"));
        run(&mut copy)?;
        Ok(reference)
    }

    /// Pushes a linux/amd64 image as `repository` (`name:tag`); returns its full reference.
    pub fn push(&self, repository: &str, command: ImageCommand) -> crate::Result<String> {
        let tag = local_tag(repository);
        self.make_image(&tag, "amd64", command)?;
        self.push_tag(&tag, repository, false)
    }

    /// Pushes a multi-arch image index as `repository`, one linux image per architecture.
    pub fn push_index(
        &self,
        repository: &str,
        images: &[(&str, ImageCommand)],
    ) -> crate::Result<String> {
        let tag = local_tag(repository);
        let index_path = self.layout.join("index.json");
        let mut manifests = Vec::new();
        for (architecture, command) in images {
            let arch_tag = format!("{tag}-{architecture}");
            self.make_image(&arch_tag, architecture, *command)?;
            let index: serde_json::Value = serde_json::from_slice(&std::fs::read(&index_path)?)?;
            let mut descriptor = index["manifests"]
                .as_array()
                .and_then(|all| {
                    all.iter().find(|d| {
                        d["annotations"]["org.opencontainers.image.ref.name"] == arch_tag.as_str()
                    })
                })
                .cloned()
                .context("umoci did not record the image in index.json")?;
            descriptor["annotations"].take();
            descriptor["platform"] =
                serde_json::json!({"architecture": architecture, "os": "linux"});
            manifests.push(descriptor);
        }
        // umoci makes images, not indexes: write the index blob into the layout and tag it.
        let image_index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        }))?;
        let digest: String = sha2::Sha256::digest(&image_index)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        std::fs::write(self.layout.join("blobs/sha256").join(&digest), &image_index)?;
        let mut index: serde_json::Value = serde_json::from_slice(&std::fs::read(&index_path)?)?;
        index["manifests"]
            .as_array_mut()
            .context("index.json has no manifests")?
            .push(serde_json::json!({
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "digest": format!("sha256:{digest}"),
                "size": image_index.len(),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }));
        std::fs::write(&index_path, serde_json::to_vec(&index)?)?;
        self.push_tag(&tag, repository, true)
    }
}

/// A tag for the local layout from `name:tag` (OCI layout tags allow no '/').
fn local_tag(repository: &str) -> String {
    repository.replace(['/', ':'], "-")
}
