//! Rules for the names and paths that travel from users into URLs and file systems.

/// A relative store path: `/`-separated non-empty segments, none of them `.` or `..`, and nothing
/// that would change the meaning of a URL (`?`, `#`, `%`, whitespace, control characters).
pub fn is_safe_path(path: &str) -> bool {
    !path.is_empty()
        && path.split('/').all(|segment| {
            !segment.is_empty()
                && segment != "."
                && segment != ".."
                && segment.chars().all(|c| {
                    !c.is_control() && !c.is_whitespace() && !matches!(c, '?' | '#' | '%' | '\\')
                })
        })
}

/// Where a write may not go, whoever asks (an injector write reference, an SSI's `POST`
/// source): the store's own management API, never a secret engine.
pub const FORBIDDEN_WRITE_PREFIXES: [&str; 4] = ["sys/", "auth/", "identity/", "cubbyhole/"];

/// The part of the store's management API `path` reaches (`"sys/"` ...), if any. Every
/// segment counts, not only the first: below a Vault namespace the same API is at
/// `<namespace>/sys/...`.
pub fn management_prefix(path: &str) -> Option<&'static str> {
    path.split('/').find_map(|segment| {
        FORBIDDEN_WRITE_PREFIXES
            .iter()
            .find(|prefix| prefix.strip_suffix('/') == Some(segment))
            .copied()
    })
}

/// A Kubernetes namespace name, a DNS-1123 label: at most 63 characters of lowercase letters,
/// digits and `-`, starting and ending with a letter or digit. Checked before a namespace from
/// a review reaches an API URL.
pub fn is_namespace_name(name: &str) -> bool {
    name.len() <= 63 && !name.contains('.') && is_object_name(name)
}

/// A Kubernetes object name of the DNS-1123 subdomain kind, as SecretsStoreImports have: at
/// most 253 characters, dot-separated labels of lowercase letters, digits and `-`, each starting
/// and ending with a letter or digit. Checked before a name from a pod reaches an API URL.
pub fn is_object_name(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            let bytes = label.as_bytes();
            match (bytes.first(), bytes.last()) {
                (Some(first), Some(last)) => {
                    first.is_ascii_alphanumeric()
                        && last.is_ascii_alphanumeric()
                        && bytes
                            .iter()
                            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                }
                _ => false,
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_names_are_dns_labels() {
        for good in ["my-namespace1", "a", &"n".repeat(63)] {
            assert!(is_namespace_name(good), "{good}");
        }
        for bad in [
            "",
            "a.b",
            "../kube-system",
            "ns/x",
            "ns?watch=1",
            "-ns",
            "NS",
            &"n".repeat(64),
        ] {
            assert!(!is_namespace_name(bad), "{bad}");
        }
    }
}
