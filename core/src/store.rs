//! Where a store is and how its certificate is checked, every default applied: one type for the
//! driver (from an SSI's fields and its flags), the injector (from its variables) and the store
//! client, beside [`crate::login`] for how a pod logs in there. The SecretsStoreImport keeps its
//! flat, optional fields (`address`, `namespace`, `caCert`, `skipTLSVerify`), which every
//! `v1alpha1` object already has.

/// A store connection.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "json", derive(serde::Serialize, serde::Deserialize))]
pub struct Connection {
    /// The store's URL, `http://` or `https://`, without a trailing `/`.
    pub address: String,
    /// Vault Enterprise / OpenBao namespace, sent as `X-Vault-Namespace`.
    // NB: the driver saves connections in its mount records under this name.
    #[cfg_attr(feature = "json", serde(rename = "vault_namespace"))]
    pub namespace: Option<String>,
    /// PEM bundle of the CAs to trust instead of the system's.
    pub ca_pem: Option<String>,
    /// Accept any certificate of the store.
    pub skip_tls_verify: bool,
}

impl Connection {
    /// A connection to `address` (a trailing `/` removed), with the system's CAs, no namespace.
    pub fn to(address: &str) -> Connection {
        Connection {
            address: address.trim_end_matches('/').to_owned(),
            namespace: None,
            ca_pem: None,
            skip_tls_verify: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_kept_without_its_trailing_slash() {
        let connection = Connection::to("https://vault.example.com:8200/");
        assert_eq!(connection.address, "https://vault.example.com:8200");
        assert_eq!(connection.namespace, None);
        assert!(!connection.skip_tls_verify);
    }

    #[cfg(feature = "json")]
    #[test]
    fn it_is_saved_under_the_names_the_driver_saved_before() {
        let saved = serde_json::to_value(Connection::to("https://v:8200")).unwrap();
        assert_eq!(
            saved,
            serde_json::json!({"address": "https://v:8200", "vault_namespace": null,
                               "ca_pem": null, "skip_tls_verify": false})
        );
    }
}
