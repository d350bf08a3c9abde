//! What a ServiceAccount token says about itself: the audiences it was issued for (named when a
//! login is refused) and whose it is (compared with the pod a request is for). The claims are
//! decoded, never trusted: the store verifies the token; we only name or compare what it carries.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

/// Tokens larger than this are not decoded (kubelet's are about 1 KiB).
const MAX_TOKEN_LEN: usize = 16 * 1024;
/// At most this many audiences, each at most this long, are named in a message.
const MAX_AUDIENCES: usize = 8;
const MAX_AUDIENCE_LEN: usize = 256;

/// The claims of `jwt`, unverified; `None` when it is no JWT of a sane size.
fn claims(jwt: &str) -> Option<Value> {
    if jwt.len() > MAX_TOKEN_LEN {
        return None;
    }
    let payload = jwt.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    serde_json::from_slice::<Value>(&bytes).ok()
}

/// Whose a Kubernetes ServiceAccount token is, by its `kubernetes.io` claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenIdentity {
    /// Namespace of the ServiceAccount.
    pub namespace: String,
    /// Name of the ServiceAccount.
    pub service_account: String,
    /// The pod the token is bound to, for tokens kubelet requested for a pod.
    pub pod_uid: Option<String>,
}

/// The identity `jwt` claims, `None` when it is not a ServiceAccount token.
pub fn token_identity(jwt: &str) -> Option<TokenIdentity> {
    let claims = claims(jwt)?;
    let kubernetes = claims.get("kubernetes.io")?;
    let text = |value: Option<&Value>| value.and_then(Value::as_str).map(str::to_owned);
    Some(TokenIdentity {
        namespace: text(kubernetes.get("namespace"))?,
        service_account: text(kubernetes.pointer("/serviceaccount/name"))?,
        pod_uid: text(kubernetes.pointer("/pod/uid")),
    })
}

/// The `aud` claim of `jwt` (a string or a list of strings), empty when it cannot be read.
pub fn token_audiences(jwt: &str) -> Vec<String> {
    let Some(claims) = claims(jwt) else {
        return Vec::new();
    };
    let audiences = match claims.get("aud") {
        Some(Value::String(one)) => vec![one.clone()],
        Some(Value::Array(many)) => many
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    audiences
        .into_iter()
        .take(MAX_AUDIENCES)
        .map(|mut audience| {
            crate::error::shorten(&mut audience, MAX_AUDIENCE_LEN);
            audience
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &str) -> String {
        format!(
            "{}.{}.signature",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256"}"#),
            URL_SAFE_NO_PAD.encode(claims)
        )
    }

    #[test]
    fn reads_a_list_of_audiences() {
        let token = jwt(
            r#"{"aud":["https://kubernetes.default.svc.cluster.local","k3s"],"sub":"system:serviceaccount:a:b"}"#,
        );
        assert_eq!(
            token_audiences(&token),
            ["https://kubernetes.default.svc.cluster.local", "k3s"]
        );
    }

    #[test]
    fn reads_whose_token_it_is() {
        let token = jwt(
            r#"{"aud":["x"],"kubernetes.io":{"namespace":"my-namespace1","pod":{"name":"p","uid":"u-1"},
                "serviceaccount":{"name":"backend-sa","uid":"s-1"}}}"#,
        );
        assert_eq!(
            token_identity(&token),
            Some(TokenIdentity {
                namespace: "my-namespace1".into(),
                service_account: "backend-sa".into(),
                pod_uid: Some("u-1".into()),
            })
        );
        let unbound = jwt(r#"{"kubernetes.io":{"namespace":"n","serviceaccount":{"name":"s"}}}"#);
        assert_eq!(token_identity(&unbound).unwrap().pod_uid, None);
        for other in [
            jwt(r#"{"sub":"x"}"#),
            jwt(r#"{"kubernetes.io":{"namespace":"n"}}"#),
            "x".into(),
        ] {
            assert_eq!(token_identity(&other), None, "{other}");
        }
    }

    #[test]
    fn reads_a_single_audience() {
        assert_eq!(token_audiences(&jwt(r#"{"aud":"vault"}"#)), ["vault"]);
    }

    #[test]
    fn anything_else_names_no_audience() {
        for token in [
            String::new(),
            "not-a-jwt".to_owned(),
            "a.%%%.c".to_owned(),
            jwt("not json"),
            jwt(r#"{"sub":"x"}"#),
            jwt(r#"{"aud":42}"#),
            format!("a.{}.c", "A".repeat(MAX_TOKEN_LEN)),
        ] {
            assert!(token_audiences(&token).is_empty(), "{token:.40}");
        }
    }

    #[test]
    fn long_and_many_audiences_are_bounded() {
        let many: Vec<String> = (0..20).map(|i| format!("\"a{i}\"")).collect();
        let token = jwt(&format!(r#"{{"aud":[{}]}}"#, many.join(",")));
        assert_eq!(token_audiences(&token).len(), MAX_AUDIENCES);
        let long = jwt(&format!(r#"{{"aud":"{}"}}"#, "x".repeat(1000)));
        assert_eq!(token_audiences(&long)[0].len(), MAX_AUDIENCE_LEN + 3);
    }
}
