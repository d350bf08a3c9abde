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

/// Where a read may not go, whoever asks: the token store (`auth/token/...`, below any Vault
/// namespace), whose `lookup-self` returns the caller's own token (the driver shares one between
/// the volumes of an identity, and it holds their leases), and the root namespace's `sys/` and
/// `auth/` APIs. A KV secret named `auth` or `sys` (`secret/data/auth`) stays readable, and so do
/// identity tokens (`identity/oidc/token/<role>`) and the caller's cubbyhole.
pub fn forbidden_read_prefix(path: &str) -> Option<&'static str> {
    let segments: Vec<&str> = path.split('/').collect();
    if segments.windows(2).any(|pair| pair == ["auth", "token"]) {
        return Some("auth/");
    }
    match segments.first() {
        Some(&"auth") => Some("auth/"),
        Some(&"sys") => Some("sys/"),
        _ => None,
    }
}

/// Why a read of `path` is refused, for a person: `None` when it is not.
pub fn refused_read(path: &str) -> Option<&'static str> {
    match forbidden_read_prefix(path)? {
        "auth/" => Some(
            "is under auth/, where the store hands out tokens (auth/token/lookup-self returns the \
             caller's own); read secrets from a secret engine",
        ),
        _ => Some("is under sys/, the store's management API; read secrets from a secret engine"),
    }
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

/// What a message may quote of `text`, which someone else wrote (a pod's names and paths, a
/// review's fields): its first `max_chars` characters, and `…` when more were cut, so that an
/// answer's size never follows the input's.
pub fn shown(text: &str, max_chars: usize) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(max_chars) {
        None => text.into(),
        Some((cut, _)) => format!("{}…", &text[..cut]).into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_of_tokens_and_the_management_api_are_refused_wherever_they_hide() {
        for refused in [
            "auth/token/lookup-self",
            "team-a/auth/token/lookup-self",
            "auth/kubernetes/role/app",
            "sys/config/state/sanitized",
        ] {
            assert!(refused_read(refused).is_some(), "{refused}");
        }
        for allowed in [
            "secret/data/auth",
            "secret/data/sys",
            "secret/data/auth/team",
            "secret/data/app",
            "identity/oidc/token/app",
            "cubbyhole/app",
            "database/creds/app",
            "authority/data/x",
        ] {
            assert_eq!(refused_read(allowed), None, "{allowed}");
        }
    }

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

    #[test]
    fn shown_quotes_at_most_the_given_characters_and_marks_the_cut() {
        assert_eq!(shown("short", 8), "short");
        assert_eq!(shown("exactly8", 8), "exactly8");
        assert_eq!(shown("ninechars", 8), "ninechar…");
        // Cut at a character, never inside one.
        assert_eq!(shown("ééééé", 2), "éé…");
        assert_eq!(shown(&"x".repeat(1 << 20), 64).chars().count(), 65);
    }
}
