//! The serving certificate, reloaded without a restart.
//!
//! NB: kubelet updates a mounted Secret by writing a new timestamped directory and swapping the
//! `..data` symlink; the files' own paths never see a write, so a watch on them misses the
//! change. Reading the paths again (through the symlinks) and comparing contents catches every
//! kind of update. A new pair is parsed and checked (key matches certificate) before it replaces
//! the old one; a bad update keeps the old pair serving.

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Why the serving pair or the client CA file cannot be used; a failed reload keeps the old pair.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("failed to read {}", .path.display())]
    Read {
        /// The file that could not be read.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The certificate file holds no certificate.
    #[error("{} holds no PEM certificate", .0.display())]
    NoCertificate(PathBuf),
    /// The key file holds no private key that can be read.
    #[error("{} holds no usable PEM private key", .0.display())]
    NoKey(PathBuf),
    /// The key is not the certificate's.
    #[error("the key in {} does not match the certificate in {}", .key.display(), .cert.display())]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The key is of a type rustls cannot sign with.
    #[error("the key in {} is not supported", .0.display())]
    Unsupported(PathBuf),
    /// The client CA file holds no usable certificate.
    #[error("{} holds no CA certificate usable to check clients", .0.display())]
    NoClientCa(PathBuf),
}

/// The CAs whose client certificates the server requires (the apiserver's, set up with an
/// AdmissionConfiguration): every certificate of the PEM file at `path`.
pub fn client_roots(path: &Path) -> Result<Arc<rustls::RootCertStore>, TlsError> {
    let pem = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok) {
        roots
            .add(cert)
            .map_err(|_| TlsError::NoClientCa(path.to_owned()))?;
    }
    if roots.is_empty() {
        return Err(TlsError::NoClientCa(path.to_owned()));
    }
    Ok(Arc::new(roots))
}

/// The current certificate and key, swapped atomically on reload.
pub struct CertStore {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<CertifiedKey>,
    /// The PEM bytes the current pair was built from, to notice changes.
    loaded: Mutex<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore")
            .field("cert", &self.cert_path)
            .field("key", &self.key_path)
            .finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

impl CertStore {
    /// Reads and checks the pair at these paths; the paths are kept for [`CertStore::reload`].
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<CertStore>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let (cert_pem, key_pem) = (read(cert_path)?, read(key_path)?);
        let certified = parse(&provider, cert_path, &cert_pem, key_path, &key_pem)?;
        Ok(Arc::new(CertStore {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            provider,
            current: ArcSwap::from_pointee(certified),
            loaded: Mutex::new((cert_pem, key_pem)),
        }))
    }

    /// Re-reads the files; swaps in the new pair if it changed and is valid. `Ok(true)` when
    /// swapped; an error leaves the old pair serving.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let (cert_pem, key_pem) = (read(&self.cert_path)?, read(&self.key_path)?);
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if loaded.0 == cert_pem && loaded.1 == key_pem {
            return Ok(false);
        }
        let certified = parse(
            &self.provider,
            &self.cert_path,
            &cert_pem,
            &self.key_path,
            &key_pem,
        )?;
        self.current.store(Arc::new(certified));
        *loaded = (cert_pem, key_pem);
        Ok(true)
    }

    /// The leaf certificate now served (DER), for tests and logs.
    pub fn leaf(&self) -> Option<CertificateDer<'static>> {
        self.current.load().cert.first().cloned()
    }

    /// A server configuration (TLS 1.2 and 1.3, ALPN h2 and http/1.1) that always serves the
    /// current pair and, with `client_roots`, accepts only clients with a certificate of theirs.
    pub fn server_config(
        self: &Arc<Self>,
        client_roots: Option<Arc<rustls::RootCertStore>>,
    ) -> Result<rustls::ServerConfig, rustls::Error> {
        let builder = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
        let builder = match client_roots {
            None => builder.with_no_client_auth(),
            Some(roots) => builder.with_client_cert_verifier(
                rustls::server::WebPkiClientVerifier::builder_with_provider(
                    roots,
                    self.provider.clone(),
                )
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?,
            ),
        };
        let mut config = builder.with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn parse(
    provider: &CryptoProvider,
    cert_path: &Path,
    cert_pem: &[u8],
    key_path: &Path,
    key_pem: &[u8],
) -> Result<CertifiedKey, TlsError> {
    // The whole chain, leaf first, as cert-manager and our generator write it.
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(cert_path.to_owned()));
    }
    let key =
        PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| TlsError::NoKey(key_path.to_owned()))?;
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|_| TlsError::Unsupported(key_path.to_owned()))?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified.keys_match().map_err(|_| TlsError::Mismatch {
        cert: cert_path.to_owned(),
        key: key_path.to_owned(),
    })?;
    Ok(certified)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// A self-signed pair made with the openssl CLI into `dir/<name>.{crt,key}`.
    fn make_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let (cert, key) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        let status = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "1",
            ])
            .args(["-subj", &format!("/CN={name}"), "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl runs (tests/bed/provision.sh installs it)");
        assert!(
            status.status.success(),
            "{}",
            String::from_utf8_lossy(&status.stderr)
        );
        (cert, key)
    }

    /// Lays out a Secret volume the way kubelet does: `..data` -> generation dir, files as links.
    fn kubelet_volume(volume: &Path, generation: &str, cert: &Path, key: &Path) {
        let dir = volume.join(generation);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(cert, dir.join("tls.crt")).unwrap();
        std::fs::copy(key, dir.join("tls.key")).unwrap();
        let tmp = volume.join("..data_tmp");
        std::os::unix::fs::symlink(generation, &tmp).unwrap();
        std::fs::rename(&tmp, volume.join("..data")).unwrap();
        for file in ["tls.crt", "tls.key"] {
            let link = volume.join(file);
            if std::fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(format!("..data/{file}"), link).unwrap();
            }
        }
    }

    #[test]
    fn reloads_on_a_kubelet_symlink_swap_and_keeps_the_old_pair_on_bad_input() {
        let dir = tempfile::tempdir().unwrap();
        let (cert_a, key_a) = make_pair(dir.path(), "a");
        let (cert_b, key_b) = make_pair(dir.path(), "b");
        let volume = dir.path().join("volume");
        kubelet_volume(&volume, "..gen1", &cert_a, &key_a);
        let store = CertStore::load(&volume.join("tls.crt"), &volume.join("tls.key")).unwrap();
        store.server_config(None).unwrap();
        let first = store.leaf().unwrap();
        assert!(!store.reload().unwrap(), "nothing changed");

        kubelet_volume(&volume, "..gen2", &cert_b, &key_b);
        assert!(store.reload().unwrap(), "the swap is noticed");
        let second = store.leaf().unwrap();
        assert_ne!(first, second);

        // A half-written update (new cert, old key) is refused; the serving pair stays.
        std::fs::create_dir_all(volume.join("..gen3")).unwrap();
        std::fs::copy(&cert_a, volume.join("..gen3/tls.crt")).unwrap();
        std::fs::copy(&key_b, volume.join("..gen3/tls.key")).unwrap();
        std::fs::remove_file(volume.join("..data")).unwrap();
        std::os::unix::fs::symlink("..gen3", volume.join("..data")).unwrap();
        assert!(matches!(store.reload(), Err(TlsError::Mismatch { .. })));
        assert_eq!(store.leaf().unwrap(), second);

        std::fs::write(volume.join("..gen3/tls.crt"), "garbage").unwrap();
        assert!(matches!(store.reload(), Err(TlsError::NoCertificate(_))));
        assert_eq!(store.leaf().unwrap(), second);
    }

    #[test]
    fn a_missing_or_bad_pair_fails_at_start_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let err =
            CertStore::load(&dir.path().join("tls.crt"), &dir.path().join("tls.key")).unwrap_err();
        assert!(err.to_string().contains("tls.crt"), "{err}");
        let (cert, _) = make_pair(dir.path(), "a");
        std::fs::write(dir.path().join("bad.key"), "not a key").unwrap();
        let err = CertStore::load(&cert, &dir.path().join("bad.key")).unwrap_err();
        assert!(matches!(err, TlsError::NoKey(_)), "{err}");
    }
}
