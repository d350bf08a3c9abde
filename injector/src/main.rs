//! `ssi-injector copy <dir>`: the init container copies the binary into a shared emptyDir.
//! `ssi-injector --version` (without `SSI_INJECTOR_ROLE`): prints its version.
//! `ssi-injector <argv...>` (with `SSI_INJECTOR_*` set): resolves the references in the
//! environment and execs `argv` in place of itself.

use ssi_injector::config::{Config, ENV_ON_FILE_CHANGE, ENV_ROLE, LogLevel, Mode};
use ssi_injector::{TERMINATION_LOG, log, resolve_environment, supervise};
use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let started = std::time::Instant::now();
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    let utf8: HashMap<String, String> = env
        .iter()
        .filter_map(|(k, v)| Some((k.to_str()?.to_owned(), v.to_str()?.to_owned())))
        .collect();
    // NB: an app container always carries the role or a reaction to its files; the init
    // container never does. So an app whose own command is `copy <x>` is still run, not
    // mistaken for the init step.
    let app = utf8.contains_key(ENV_ROLE) || utf8.contains_key(ENV_ON_FILE_CHANGE);
    if !app && args.len() == 1 && args[0] == "--version" {
        println!("ssi-injector {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    if !app
        && let [mode, dir] = args.as_slice()
        && mode == ssi_core::injector::COPY_COMMAND
    {
        return match copy_self(Path::new(dir)) {
            Ok(target) => {
                eprintln!("ssi-injector info: copied to {}", target.display());
                ExitCode::SUCCESS
            }
            Err(e) => fail(LogLevel::Info, false, &e),
        };
    }
    let config = match Config::from_env(&utf8) {
        Ok(config) => config,
        Err(e) => return fail(LogLevel::Info, false, &format!("configuration: {e}")),
    };
    let Some((program, program_args)) = args.split_first() else {
        return fail(
            config.log_level,
            config.json_log,
            "no command to run: give the container a command, or let the webhook find the image's entrypoint",
        );
    };
    if config.mode != Mode::Exec || config.on_file_change.is_some() {
        let result = supervise::block_signals()
            .and_then(|mask| supervise::run(&config, &mask, program, program_args, env));
        return result.unwrap_or_else(|e| fail(config.log_level, config.json_log, &e));
    }
    let resolved = match resolve_environment(&config, env) {
        Ok(resolved) => resolved,
        Err(e) => return fail(config.log_level, config.json_log, &e),
    };
    log(
        config.log_level,
        config.json_log,
        LogLevel::Debug,
        &format!(
            "environment resolved in {} us, {} us of it waiting for the store; starting {}",
            started.elapsed().as_micros(),
            resolved.store_time.as_micros(),
            program.to_string_lossy()
        ),
    );
    let app_env = resolved.env;
    let error = std::process::Command::new(program)
        .args(program_args)
        .env_clear()
        .envs(app_env)
        .exec();
    let code = if error.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    };
    fail(
        config.log_level,
        config.json_log,
        &format!("failed to start {}: {error}", program.to_string_lossy()),
    );
    ExitCode::from(code)
}

/// Logs the reason, leaves it as the termination message, and exits 1.
fn fail(level: LogLevel, json: bool, message: &str) -> ExitCode {
    log(level, json, LogLevel::Error, message);
    // Best effort: outside a container the file does not exist.
    if Path::new(TERMINATION_LOG).exists() {
        let _ = std::fs::write(TERMINATION_LOG, message);
    }
    ExitCode::FAILURE
}

/// Copies this executable to `<dir>/ssi-injector` (mode 0755) through a rename, so that an app
/// container never sees a half-written binary.
fn copy_self(dir: &Path) -> Result<std::path::PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let me = std::env::current_exe().map_err(|e| format!("cannot find my own executable: {e}"))?;
    let target = dir.join(ssi_core::injector::BINARY_NAME);
    let temporary = dir.join(format!(".{}.tmp", ssi_core::injector::BINARY_NAME));
    std::fs::copy(&me, &temporary)
        .and_then(|_| std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o755)))
        .and_then(|()| std::fs::rename(&temporary, &target))
        .map_err(|e| {
            format!(
                "failed to copy {} to {}: {e}",
                me.display(),
                target.display()
            )
        })?;
    Ok(target)
}
