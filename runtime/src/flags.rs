//! The one naming scheme of every component's settings: flag `--some-flag`, variable
//! `SSI_<COMPONENT>_SOME_FLAG`.

/// Checks that every flag of `A` can also be set by a variable starting with `prefix`; the
/// flags that break the scheme, named, otherwise. For each binary's unit tests.
pub fn check_env_scheme<A: clap::CommandFactory>(prefix: &str) -> Result<(), String> {
    let broken: Vec<String> = A::command()
        .get_arguments()
        .filter(|arg| !matches!(arg.get_id().as_str(), "help" | "version"))
        .filter_map(|arg| {
            let env = arg.get_env().map(|env| env.to_string_lossy().into_owned());
            match env {
                Some(env) if env.starts_with(prefix) => None,
                other => Some(format!("--{} has env var {other:?}", arg.get_id())),
            }
        })
        .collect();
    if broken.is_empty() {
        Ok(())
    } else {
        Err(format!("not {prefix}*: {}", broken.join(", ")))
    }
}

/// The `SSI_*` variables set in `environment` that do not start with `prefix` (this
/// component's) and belong to no other component: names this binary silently ignores, most
/// likely from before the variables were renamed (`SSI_STORE_ADDRESS` is now
/// `SSI_CSI_STORE_ADDRESS`). For a warning at start.
pub fn foreign_variables(
    prefix: &str,
    environment: impl IntoIterator<Item = (String, String)>,
) -> Vec<String> {
    const COMPONENTS: [&str; 3] = ["SSI_CSI_", "SSI_WEBHOOK_", "SSI_INJECTOR_"];
    let mut foreign: Vec<String> = environment
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| {
            name.starts_with("SSI_")
                && !name.starts_with(prefix)
                && !COMPONENTS
                    .iter()
                    .any(|component| name.starts_with(component))
        })
        .collect();
    foreign.sort();
    foreign
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Good {
        #[arg(long, env = "SSI_X_ONE")]
        _one: Option<String>,
    }

    #[derive(clap::Parser)]
    struct Bad {
        #[arg(long, env = "SSI_X_ONE")]
        _one: Option<String>,
        #[arg(long, env = "OTHER_TWO")]
        _two: Option<String>,
        #[arg(long)]
        _three: Option<String>,
    }

    #[test]
    fn stale_names_are_found_and_values_never_read() {
        let environment = [
            ("SSI_STORE_ADDRESS", "https://vault:8200"),
            ("SSI_CSI_NODE_ID", "n1"),
            ("SSI_WEBHOOK_LISTEN_ADDR", "x"),
            ("PATH", "/bin"),
            ("SSI_TOKEN_AUDIENCE", ""),
        ]
        .map(|(name, value)| (name.to_owned(), value.to_owned()));
        assert_eq!(
            foreign_variables("SSI_CSI_", environment),
            ["SSI_STORE_ADDRESS", "SSI_TOKEN_AUDIENCE"]
        );
    }

    #[test]
    fn names_the_flags_off_the_scheme() {
        assert_eq!(check_env_scheme::<Good>("SSI_X_"), Ok(()));
        let error = check_env_scheme::<Bad>("SSI_X_").unwrap_err();
        assert!(
            error.contains("--_two") && error.contains("--_three"),
            "{error}"
        );
        assert!(!error.contains("--_one"), "{error}");
    }
}
