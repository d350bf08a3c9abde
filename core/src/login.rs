//! How a pod logs in to the store: one type for the SecretsStoreImport, the driver, the webhook's
//! injector defaults and the injector, and one rule for the defaults, so that the four cannot
//! resolve the same settings differently.
//!
//! Both methods take the same request, `POST auth/<mount>/login` with `{role, jwt}` and the pod's
//! ServiceAccount token; they differ in how the store checks that token:
//! - `kubernetes`: the store asks the cluster's API server (TokenReview), so it must reach it
//!   and hold a reviewer's credentials (or use the caller's token as the reviewer);
//! - `jwt`: the store checks the token's signature against the cluster's keys
//!   (`/openid/v1/jwks`, given to it or discovered) and its claims against the role, with no
//!   call to the cluster: for a store outside the cluster, several clusters, or a private
//!   control plane.

#[cfg(feature = "crd")]
use schemars::JsonSchema;
#[cfg(feature = "crd")]
use serde::{Deserialize, Serialize};

/// How the store checks the pod's ServiceAccount token: `Kubernetes` (the store asks the
/// cluster's API server) or `JWT` (the store checks it against the cluster's public keys, for a
/// store that cannot reach the API server). Default: the component's setting, itself
/// `Kubernetes` unless configured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "crd", derive(Serialize, Deserialize, JsonSchema))]
pub enum AuthMethod {
    /// The `kubernetes` auth method: the store reviews the token with the cluster's API server.
    #[default]
    Kubernetes,
    /// The `jwt` auth method: the store checks the token against the cluster's public keys.
    #[cfg_attr(feature = "crd", serde(rename = "JWT"))]
    Jwt,
}

impl AuthMethod {
    /// Every method, in the order messages list them.
    pub const ALL: [AuthMethod; 2] = [AuthMethod::Kubernetes, AuthMethod::Jwt];

    /// The annotation's, the flag's and the variable's spelling, also the store's type name.
    pub fn name(self) -> &'static str {
        match self {
            AuthMethod::Kubernetes => "kubernetes",
            AuthMethod::Jwt => "jwt",
        }
    }

    /// The method spelled `text` (case aside: the SSI writes `JWT`); `None` for anything else.
    pub fn parse(text: &str) -> Option<AuthMethod> {
        AuthMethod::ALL
            .into_iter()
            .find(|method| method.name().eq_ignore_ascii_case(text))
    }

    /// Where the store mounts it unless told otherwise: its own name.
    pub fn default_mount(self) -> &'static str {
        self.name()
    }

    /// "kubernetes or jwt", for messages that say what to write.
    pub fn choices() -> &'static str {
        "kubernetes or jwt"
    }
}

/// For flags: the error names the choices.
impl std::str::FromStr for AuthMethod {
    type Err = String;

    fn from_str(text: &str) -> Result<AuthMethod, String> {
        AuthMethod::parse(text).ok_or_else(|| {
            format!(
                "{text:?} is not an auth method; write {}",
                AuthMethod::choices()
            )
        })
    }
}

impl std::fmt::Display for AuthMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a component was started with, for pods and SSIs that do not say.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoginDefaults {
    /// The method when none is named.
    pub method: AuthMethod,
    /// Where that method is mounted, when not at its own name.
    pub mount: Option<String>,
}

/// Where and as what a pod logs in, every default applied.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Login {
    /// How the store checks the pod's token.
    pub method: AuthMethod,
    /// The method's mount path in the store, without surrounding `/` (`kubernetes`, `jwt`,
    /// `cluster-a/kubernetes`).
    pub mount: String,
    /// The role in that method, which maps the ServiceAccount to store policies.
    pub role: String,
}

impl Login {
    /// The login of `role` with what the pod or SSI named (`method`, `mount`) and the
    /// component's `defaults` for the rest. A default mount belongs to the default method: a
    /// pod that names another method without a mount gets that method's own name, never the
    /// mount of a method it did not ask for.
    pub fn resolve<'a>(
        role: &str,
        method: Option<AuthMethod>,
        mount: Option<&'a str>,
        defaults: &'a LoginDefaults,
    ) -> Login {
        let method = method.unwrap_or(defaults.method);
        let default_mount = (method == defaults.method)
            .then_some(defaults.mount.as_deref())
            .flatten();
        let named = |m: Option<&'a str>| m.map(|m| m.trim_matches('/')).filter(|m| !m.is_empty());
        let mount = named(mount)
            .or(named(default_mount))
            .unwrap_or(method.default_mount());
        Login {
            method,
            mount: mount.to_owned(),
            role: role.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::nothing_named(None, None, AuthMethod::Kubernetes, None, "kubernetes", "kubernetes")]
    #[case::operators_mount(
        None,
        None,
        AuthMethod::Kubernetes,
        Some("main-kube"),
        "kubernetes",
        "main-kube"
    )]
    #[case::jwt_named_gets_its_own_mount_not_the_kubernetes_one(
        Some(AuthMethod::Jwt),
        None,
        AuthMethod::Kubernetes,
        Some("main-kube"),
        "jwt",
        "jwt"
    )]
    #[case::operator_defaults_to_jwt(None, None, AuthMethod::Jwt, Some("oidc/"), "jwt", "oidc")]
    #[case::named_mount_wins(
        Some(AuthMethod::Jwt),
        Some("/cluster-b/jwt/"),
        AuthMethod::Kubernetes,
        Some("main-kube"),
        "jwt",
        "cluster-b/jwt"
    )]
    #[case::empty_mount_is_the_default_mount(
        None,
        Some("/"),
        AuthMethod::Kubernetes,
        Some("main-kube"),
        "kubernetes",
        "main-kube"
    )]
    #[case::empty_mount_is_none(
        None,
        Some("/"),
        AuthMethod::Kubernetes,
        None,
        "kubernetes",
        "kubernetes"
    )]
    fn a_login_takes_what_is_named_then_the_defaults_of_its_method(
        #[case] method: Option<AuthMethod>,
        #[case] mount: Option<&str>,
        #[case] default_method: AuthMethod,
        #[case] default_mount: Option<&str>,
        #[case] want_method: &str,
        #[case] want_mount: &str,
    ) {
        let defaults = LoginDefaults {
            method: default_method,
            mount: default_mount.map(str::to_owned),
        };
        let login = Login::resolve("app", method, mount, &defaults);
        assert_eq!(login.method.name(), want_method);
        assert_eq!(login.mount, want_mount);
        assert_eq!(login.role, "app");
    }

    #[test]
    fn methods_parse_in_either_case_and_nothing_else() {
        for method in AuthMethod::ALL {
            assert_eq!(AuthMethod::parse(method.name()), Some(method));
            assert_eq!(
                AuthMethod::parse(&method.name().to_uppercase()),
                Some(method)
            );
        }
        assert_eq!(AuthMethod::parse("oidc"), None);
        assert_eq!(AuthMethod::parse(""), None);
    }
}
