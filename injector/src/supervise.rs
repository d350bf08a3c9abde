//! Watch modes: the injector stays the container's PID 1 with the app as its child, and
//! restarts the container (by exiting 2) when the app's secrets changed or a lease ends.
//!
//! PID 1 duties, as an init would: every catchable signal is forwarded to the app, every child
//! (orphans included: the injector is a subreaper) is reaped, and the injector leaves with the
//! app's exit code, or 128+n when the app died of signal n.
//!
//! Signals are blocked before any thread exists and taken with `sigwait` by a thread of their
//! own, so none is lost between two polls and no handler runs asynchronously. Real-time signals
//! stay blocked and are never taken: they cannot be forwarded by name, and are ignored rather
//! than allowed to kill the supervisor. The app starts as a shell would start it: an empty mask
//! and default dispositions (std's `Command` alone keeps the caller's mask, which would leave the
//! app deaf to the very SIGTERM forwarded to it).

use crate::config::{Config, FileReaction, LogLevel, Mode};
use crate::{LeaseInfo, Resolved, Store, files, log, resolve};
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use std::collections::hash_map::DefaultHasher;
use std::ffi::OsString;
use std::hash::{Hash, Hasher};
use std::process::ExitCode;
use std::time::Duration;
use tokio::time::{Instant, sleep_until};

/// Exit code of a restart the injector asked for, so that it stands out from the app's own.
pub const RESTART_EXIT_CODE: u8 = 2;

/// Signals the injector leaves alone: faults of its own (which must kill it, not be forwarded),
/// SIGPIPE (ignored by the Rust runtime) and terminal job control it never gets as PID 1.
const NOT_FORWARDED: [Signal; 10] = [
    Signal::SIGFPE,
    Signal::SIGILL,
    Signal::SIGSEGV,
    Signal::SIGBUS,
    Signal::SIGABRT,
    Signal::SIGTRAP,
    Signal::SIGSYS,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
    Signal::SIGPIPE,
];

/// Blocks the signals the supervisor handles, real-time ones included, and returns the ones it
/// forwards (the standard signals). Must run before any other thread starts, so that every
/// thread inherits the mask and no signal is delivered to a default handler instead.
pub fn block_signals() -> Result<SigSet, String> {
    let mut blocked = SigSet::all();
    let mut forwarded = SigSet::empty();
    for signal in Signal::iterator() {
        forwarded.add(signal);
    }
    for signal in NOT_FORWARDED {
        blocked.remove(signal);
        forwarded.remove(signal);
    }
    blocked
        .thread_block()
        .map_err(|e| format!("failed to block signals: {e}"))?;
    Ok(forwarded)
}

/// Starts the app with an empty signal mask, in `env` only. Its dispositions are the defaults:
/// the injector installs no handler, and std restores SIGPIPE in the child.
///
/// NB: not posix_spawn: glibc's sets its two internal signals (32 and 33) to SIG_IGN in the
/// child whenever the parent blocks them, and no public API can put them into the set to reset.
#[allow(unsafe_code)]
fn spawn_app(
    program: &OsString,
    args: &[OsString],
    env: Vec<(OsString, OsString)>,
) -> Result<Pid, String> {
    use std::os::unix::process::CommandExt;
    let mut command = std::process::Command::new(program);
    command.args(args).env_clear().envs(env);
    // SAFETY: the closure runs in the forked child before exec and only calls sigprocmask(2),
    // which is async-signal-safe, on a set built on the stack; it allocates nothing and touches
    // no lock.
    unsafe {
        command.pre_exec(|| {
            nix::sys::signal::sigprocmask(
                nix::sys::signal::SigmaskHow::SIG_SETMASK,
                Some(&SigSet::empty()),
                None,
            )
            .map_err(std::io::Error::from)
        });
    }
    let child = command
        .spawn()
        .map_err(|e| format!("failed to start {}: {e}", program.to_string_lossy()))?;
    Ok(Pid::from_raw(child.id() as i32))
}

/// Why the injector is stopping the app.
struct Stop {
    reason: String,
    kill_at: Instant,
    /// Start it again once it is gone (`on-file-change: restart`), rather than end the
    /// container.
    again: bool,
}

/// Runs `program` under supervision in `config.mode` (a watch mode) and returns the container's
/// exit code. `mask` comes from [`block_signals`].
pub fn run(
    config: &Config,
    mask: &SigSet,
    program: &OsString,
    args: &[OsString],
    env: Vec<(OsString, OsString)>,
) -> Result<ExitCode, String> {
    // As PID 1 orphans are ours anyway; elsewhere (a shared process namespace) this makes them
    // ours, so that the app's own children are reaped too.
    let _ = nix::sys::prctl::set_child_subreaper(true);
    let (sender, mut signals) = tokio::sync::mpsc::unbounded_channel();
    let waited = *mask;
    std::thread::Builder::new()
        .name("signals".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            while let Ok(signal) = waited.wait() {
                if sender.send(signal).is_err() {
                    break;
                }
            }
        })
        .map_err(|e| format!("failed to start the signal thread: {e}"))?;
    // Rotations of the container's secrets-store volumes, when the pod asked for a reaction.
    let (swapped, mut swaps) = tokio::sync::mpsc::unbounded_channel();
    if config.on_file_change.is_some()
        && let Err(e) = files::watch(&config.watch_dirs, swapped)
    {
        // NB: inotify's limits are per user on the whole node; the app must not go down
        // because another container of the same user took them all.
        log(
            config.log_level,
            config.json_log,
            LogLevel::Warn,
            &format!("{e}; the application runs on without reacting to rotated files"),
        );
    }
    crate::runtime()?.block_on(async {
        let store = Store::connect(config)?;
        let first = resolve(config, &store, env.clone()).await?;
        let mut watch = Watch::new(config, &first);
        let mut child = spawn_app(program, args, first.env.clone())?;
        let say = |level, message: &str| log(config.log_level, config.json_log, level, message);
        say(
            LogLevel::Debug,
            &format!("started {} as process {child}", program.to_string_lossy()),
        );
        let mut stop: Option<Stop> = None;
        let mut pacing = files::Pacing::default();
        // Set once kubelet asked the container to end: no restart or reaction after that.
        let mut terminating = false;
        let far = || Instant::now() + Duration::from_secs(24 * 3600);
        loop {
            let check_at = watch.next_check();
            tokio::select! {
                Some(signal) = signals.recv() => {
                    if signal == Signal::SIGCHLD {
                        if let Some(status) = reap(child) {
                            let code = match stop.take() {
                                Some(Stop { again: true, .. }) if !terminating => {
                                    child = spawn_app(program, args, first.env.clone())?;
                                    say(LogLevel::Info, &format!("started {} again as process {child}", program.to_string_lossy()));
                                    // Swaps seen while it stopped are in what it reads now; the
                                    // next reaction is at least the gap after this start.
                                    pacing.reacted(Instant::now());
                                    continue;
                                }
                                Some(Stop { again: true, .. }) => exit_code(status),
                                Some(_) => ExitCode::from(RESTART_EXIT_CODE),
                                None => exit_code(status),
                            };
                            // The app is gone, and with it the use of its credentials: a Job's
                            // database user ends with the Job, not at its lease's TTL.
                            revoke_all(config, &store, &first.leases).await;
                            return Ok(code);
                        }
                    } else {
                        terminating |= matches!(signal, Signal::SIGTERM | Signal::SIGINT);
                        // The app may be gone already; reaping will tell.
                        let _ = kill(child, signal);
                    }
                }
                Some(index) = swaps.recv() => {
                    let dir = config.watch_dirs.get(index).map(|d| d.display().to_string()).unwrap_or_default();
                    say(LogLevel::Debug, &format!("the files of {dir} were rotated"));
                    pacing.swapped(Instant::now());
                }
                () = sleep_until(pacing.due().unwrap_or_else(far)), if pacing.due().is_some() && stop.is_none() && !terminating => {
                    pacing.reacted(Instant::now());
                    match &config.on_file_change {
                        Some(FileReaction::Signal(name)) => {
                            let signal = format!("SIG{name}").parse::<Signal>().unwrap_or(Signal::SIGHUP);
                            say(LogLevel::Info, &format!("secrets-store files rotated: sending {signal} to the application"));
                            let _ = kill(child, signal);
                        }
                        Some(FileReaction::Restart) => {
                            let reason = "secrets-store files rotated".to_owned();
                            say(LogLevel::Info, &format!("{reason}: restarting the application in its container"));
                            let _ = kill(child, Signal::SIGTERM);
                            stop = Some(Stop { reason, kill_at: Instant::now() + config.grace_period, again: true });
                        }
                        None => {}
                    }
                }
                () = sleep_until(check_at), if stop.is_none() => {
                    if let Some(reason) = watch.check(config, &store, &env).await {
                        say(LogLevel::Info, &format!("{reason}: stopping the application so that the container restarts"));
                        write_termination_message(&format!("{reason}: restarted by ssi-injector"));
                        let _ = kill(child, Signal::SIGTERM);
                        stop = Some(Stop { reason, kill_at: Instant::now() + config.grace_period, again: false });
                    }
                }
                () = sleep_until(stop.as_ref().map_or(check_at, |s| s.kill_at)), if stop.is_some() => {
                    if let Some(stop) = stop.as_mut() {
                        say(LogLevel::Warn, &format!("{}: the application did not stop within {:?}; killing it", stop.reason, config.grace_period));
                        let _ = kill(child, Signal::SIGKILL);
                        // Once: the SIGCHLD that follows ends the loop.
                        stop.kill_at = Instant::now() + Duration::from_secs(24 * 3600);
                    }
                }
            }
        }
    })
}

/// How long the injector spends giving leases back once the app is gone: the pod is ending.
const REVOKE_DEADLINE: Duration = Duration::from_secs(5);

/// Revokes the leases the app was given, one after the other (an app has few), within
/// [`REVOKE_DEADLINE`]; a failure is logged, and the lease then ends at its TTL.
async fn revoke_all(config: &Config, store: &Store, leases: &[LeaseInfo]) {
    let say = |level, message: &str| log(config.log_level, config.json_log, level, message);
    let revoke = async {
        for lease in leases {
            let Some(id) = &lease.id else { continue };
            match store.revoke(lease, id).await {
                Ok(()) => say(
                    LogLevel::Debug,
                    &format!("revoked the lease of secret {}", lease.path),
                ),
                Err(e) => say(
                    LogLevel::Warn,
                    &format!(
                        "the lease of secret {} was not revoked and ends at its TTL: {e}",
                        lease.path
                    ),
                ),
            }
        }
    };
    if tokio::time::timeout(REVOKE_DEADLINE, revoke).await.is_err() {
        say(
            LogLevel::Warn,
            &format!(
                "gave up revoking leases after {REVOKE_DEADLINE:?}; the rest end at their TTL"
            ),
        );
    }
}

/// Reaps every exited child; returns the app's status once it is among them.
fn reap(app: Pid) -> Option<WaitStatus> {
    let mut app_status = None;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return app_status,
            Ok(status @ (WaitStatus::Exited(pid, _) | WaitStatus::Signaled(pid, _, _)))
                if pid == app =>
            {
                app_status = Some(status);
            }
            Ok(_) => {}
        }
    }
}

/// The container's exit code for the app's: its own, or 128+n after signal n, as a shell says.
fn exit_code(status: WaitStatus) -> ExitCode {
    match status {
        WaitStatus::Exited(_, code) => ExitCode::from(code as u8),
        WaitStatus::Signaled(_, signal, _) => ExitCode::from(128 + signal as u8),
        _ => ExitCode::FAILURE,
    }
}

fn write_termination_message(message: &str) {
    let path = std::path::Path::new(crate::TERMINATION_LOG);
    if path.exists() {
        let _ = std::fs::write(path, message);
    }
}

/// What a watch mode looks at, and when next.
enum Watch {
    Data {
        interval: Duration,
        fingerprint: u64,
        next: Instant,
    },
    Lease {
        leases: Vec<Tracked>,
    },
    /// Nothing to watch: supervise only.
    Idle,
}

/// A lease and what to do about it when `at` comes.
struct Tracked {
    lease: LeaseInfo,
    expires: Instant,
    at: Instant,
    renew: bool,
}

impl Tracked {
    fn new(lease: LeaseInfo, grace: Duration, now: Instant) -> Tracked {
        let expires = now + lease.duration;
        let renew = lease.renewable && lease.id.is_some();
        let at = if renew {
            // Two thirds in, as Vault's own agents do: room for a failed renewal to be seen.
            now + lease.duration.mul_f64(2.0 / 3.0)
        } else {
            stop_time(expires, grace, now)
        };
        Tracked {
            lease,
            expires,
            at,
            renew,
        }
    }
}

/// When to stop the app so that it is gone before `expires`: one grace period earlier.
fn stop_time(expires: Instant, grace: Duration, now: Instant) -> Instant {
    expires.checked_sub(grace).unwrap_or(now).max(now)
}

/// A hash of the app's environment: a change of anything the app was given, and only that,
/// restarts it; the values themselves are not kept.
fn fingerprint(env: &[(OsString, OsString)]) -> u64 {
    let mut sorted: Vec<_> = env.iter().collect();
    sorted.sort();
    let mut hasher = DefaultHasher::new();
    sorted.hash(&mut hasher);
    hasher.finish()
}

/// An interval spread by +-30%, so that the replicas of a Deployment do not poll in step.
fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(0.7 + 0.6 * fastrand::f64())
}

impl Watch {
    fn new(config: &Config, first: &Resolved) -> Watch {
        let now = Instant::now();
        match config.mode {
            Mode::WatchForData { interval } => Watch::Data {
                interval,
                fingerprint: fingerprint(&first.env),
                next: now + jittered(interval),
            },
            Mode::WatchForLease if !first.leases.is_empty() => Watch::Lease {
                leases: first
                    .leases
                    .iter()
                    .map(|lease| Tracked::new(lease.clone(), config.grace_period, now))
                    .collect(),
            },
            Mode::WatchForLease | Mode::Exec => {
                if config.mode == Mode::WatchForLease {
                    log(
                        config.log_level,
                        config.json_log,
                        LogLevel::Warn,
                        "watch-for-lease: no secret the application was given has a lease; nothing to renew",
                    );
                }
                Watch::Idle
            }
        }
    }

    fn next_check(&self) -> Instant {
        let far = Instant::now() + Duration::from_secs(24 * 3600);
        match self {
            Watch::Data { next, .. } => *next,
            Watch::Lease { leases } => leases.iter().map(|t| t.at).min().unwrap_or(far),
            Watch::Idle => far,
        }
    }

    /// Does what is due; returns why the app must stop, if it must.
    async fn check(
        &mut self,
        config: &Config,
        store: &Store,
        env: &[(OsString, OsString)],
    ) -> Option<String> {
        let say = |level, message: &str| log(config.log_level, config.json_log, level, message);
        match self {
            Watch::Data {
                interval,
                fingerprint: known,
                next,
            } => {
                *next = Instant::now() + jittered(*interval);
                match resolve(config, store, env.to_vec()).await {
                    Ok(resolved) if fingerprint(&resolved.env) != *known => {
                        Some("secret data changed".to_owned())
                    }
                    Ok(_) => {
                        say(LogLevel::Debug, "secrets unchanged");
                        None
                    }
                    Err(e) => {
                        // The app keeps what it has: a store outage must not take it down.
                        say(
                            LogLevel::Warn,
                            &format!("could not check the secrets for changes, will retry: {e}"),
                        );
                        None
                    }
                }
            }
            Watch::Lease { leases } => {
                let now = Instant::now();
                for tracked in leases.iter_mut().filter(|t| t.at <= now) {
                    if !tracked.renew {
                        return Some(format!("the lease of secret {} ends", tracked.lease.path));
                    }
                    let id = tracked.lease.id.clone().unwrap_or_default();
                    match store.renew(&tracked.lease, &id).await {
                        Ok(granted) if granted.duration >= tracked.lease.duration => {
                            tracked.expires = now + granted.duration;
                            tracked.at = now + granted.duration.mul_f64(2.0 / 3.0);
                            say(
                                LogLevel::Debug,
                                &format!("renewed the lease of secret {}", tracked.lease.path),
                            );
                        }
                        Ok(granted) => {
                            // Near its maximum TTL: the store grants less than asked, and the
                            // lease will end; stop the app before it does.
                            tracked.expires = now + granted.duration;
                            tracked.renew = false;
                            tracked.at = stop_time(tracked.expires, config.grace_period, now);
                        }
                        Err(e) => {
                            say(
                                LogLevel::Warn,
                                &format!("the app will be restarted before the lease ends: {e}"),
                            );
                            tracked.renew = false;
                            tracked.at = stop_time(tracked.expires, config.grace_period, now);
                        }
                    }
                }
                None
            }
            Watch::Idle => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    #[test]
    fn fingerprint_sees_values_not_order() {
        let a = fingerprint(&env(&[("A", "1"), ("B", "2")]));
        assert_eq!(a, fingerprint(&env(&[("B", "2"), ("A", "1")])));
        assert_ne!(a, fingerprint(&env(&[("A", "1"), ("B", "3")])));
        assert_ne!(a, fingerprint(&env(&[("A", "1")])));
    }

    #[test]
    fn jitter_stays_within_thirty_percent() {
        let interval = Duration::from_secs(100);
        for _ in 0..1000 {
            let d = jittered(interval);
            assert!(
                d >= Duration::from_secs(70) && d <= Duration::from_secs(130),
                "{d:?}"
            );
        }
    }

    #[test]
    fn leases_renew_two_thirds_in_or_stop_a_grace_period_before_the_end() {
        let now = Instant::now();
        let grace = Duration::from_secs(10);
        let lease = |id: Option<&str>, renewable| LeaseInfo {
            path: "database/creds/app".into(),
            id: id.map(str::to_owned),
            duration: Duration::from_secs(60),
            renewable,
        };
        let renewable = Tracked::new(lease(Some("database/creds/app/x"), true), grace, now);
        assert!(renewable.renew);
        assert_eq!(renewable.at, now + Duration::from_secs(40));
        let fixed = Tracked::new(lease(Some("database/creds/app/x"), false), grace, now);
        assert!(!fixed.renew);
        assert_eq!(fixed.at, now + Duration::from_secs(50));
        let no_id = Tracked::new(lease(None, true), grace, now);
        assert!(!no_id.renew);
        assert_eq!(
            stop_time(now + Duration::from_secs(5), grace, now),
            now,
            "a lease shorter than the grace period stops at once"
        );
    }

    #[test]
    fn exit_codes_follow_the_shell_convention() {
        let pid = Pid::from_raw(42);
        assert_eq!(exit_code(WaitStatus::Exited(pid, 3)), ExitCode::from(3));
        assert_eq!(
            exit_code(WaitStatus::Signaled(pid, Signal::SIGTERM, false)),
            ExitCode::from(143)
        );
    }
}
