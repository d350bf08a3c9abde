//! `ssi-core`: the vocabulary every secrets-store component shares, and nothing that does I/O.
//!
//! Design choices:
//! - The `SecretsStoreImport` type is the single source of the CRD: `manifests/crd/` is generated
//!   from it (see the `crd` test), so the schema the API server enforces and the type the driver
//!   deserialises cannot drift apart.
//! - The Kubernetes types (the SSI and its CRD: kube, k8s-openapi, schemars) sit behind the
//!   default feature `crd`; the store client and the injector build without it, so the static
//!   injector compiles none of them.
//! - The API server's schema is a first line of defence only. The node driver is privileged and
//!   must not trust that an object was ever validated (it may predate the CRD, or the CRD may have
//!   been edited), so [`SecretsStoreImportSpec::validate`] repeats every rule and adds the ones a
//!   schema cannot express (unique file names, no path tricks).

pub mod duration;
pub mod injector;
#[cfg(feature = "json")]
pub mod json;
pub mod login;
pub mod names;
#[cfg(feature = "crd")]
pub mod ssi;
pub mod store;

pub use login::{AuthMethod, Login, LoginDefaults};
pub use names::{is_object_name, is_safe_path};
#[cfg(feature = "crd")]
pub use ssi::{
    FileSource, FileTemplate, ImportType, InvalidSpec, NodeStatus, SecretFile, SecretsStoreImport,
    SecretsStoreImportSpec, SecretsStoreImportStatus, StatusError,
};
pub use store::Connection;

/// The CSI driver name pods put in `volumes[].csi.driver`.
pub const DRIVER_NAME: &str = "secrets-store.csi.deckhouse.io";

/// The volume attribute naming the `SecretsStoreImport` a CSI volume mounts.
pub const ATTR_SECRETS_STORE_IMPORT: &str = "secretsStoreImport";
