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
