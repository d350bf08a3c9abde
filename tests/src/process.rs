//! Child processes of the bed: spawned with their output in a log file, tied to the test's life,
//! killed and reaped on drop.

use anyhow::{Context, bail};
use std::fs::File;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Default cache directory of `tests/bed/provision.sh`.
// host path: the bed's own, made by provisioning.
const DEFAULT_CACHE: &str = "/var/cache/ssi-testbed";

/// A bed tool from the provisioned cache (`$SSI_TESTBED_CACHE/bin`), or a clear error saying how
/// to install it.
pub fn tool(name: &str) -> crate::Result<PathBuf> {
    tool_in(&cache_dir(), name)
}

/// The provisioned cache (`$SSI_TESTBED_CACHE`, by default /var/cache/ssi-testbed).
pub fn cache_dir() -> PathBuf {
    std::env::var_os("SSI_TESTBED_CACHE")
        .map_or_else(|| PathBuf::from(DEFAULT_CACHE), PathBuf::from)
}

/// The CRDs of cert-manager that `tests/bed/provision.sh` took from its Go module.
pub fn cert_manager_crds() -> crate::Result<Vec<PathBuf>> {
    let dir = cache_dir().join("cert-manager-crds");
    let mut crds: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| {
            format!(
                "cert-manager's CRDs are missing from {}; run tests/bed/provision.sh",
                dir.display()
            )
        })?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    crds.sort();
    Ok(crds)
}

fn tool_in(cache: &Path, name: &str) -> crate::Result<PathBuf> {
    let path = cache.join("bin").join(name);
    if path.is_file() {
        return Ok(path);
    }
    bail!(
        "test-bed tool {name} is missing (looked for {}); install the test bed with `tests/bed/provision.sh` \
         (run as root; it builds Kubernetes once per machine and installs etcd and OpenBao)",
        path.display()
    )
}

/// A free TCP port on 127.0.0.1. Another process may take it before the server binds it; callers
/// retry with a fresh port when a server reports the address in use.
pub fn free_port() -> crate::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A child process of the bed; dropping it kills its whole process group and reaps it.
#[derive(Debug)]
pub struct Process {
    /// The name used in messages and log file names.
    pub name: String,
    child: Child,
    /// The file holding its stdout and stderr.
    pub log: PathBuf,
}

impl Process {
    /// Starts `command` with stdout and stderr in `log`, in a process group of its own, killed
    /// if the test process dies.
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> crate::Result<Process> {
        let out = File::create(log).with_context(|| format!("create {}", log.display()))?;
        command
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0);
        die_with_parent(&mut command);
        let child = command
            .spawn()
            .with_context(|| format!("failed to start {name}: {command:?}"))?;
        Ok(Process {
            name: name.to_owned(),
            child,
            log: log.to_owned(),
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Some(status text)` once the process has exited.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(format!("unknown state ({e})")),
        }
    }

    /// The last lines of the process's log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Whether the log so far contains `needle` (e.g. a port already in use).
    pub fn log_contains(&self, needle: &str) -> bool {
        std::fs::read_to_string(&self.log).is_ok_and(|text| text.contains(needle))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // The bed's data is throwaway, so there is nothing to shut down gracefully: kill the whole
        // process group (servers may have forked helpers) and reap the leader.
        let pgid = self.child.id() as i32;
        kill_group(pgid);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Kills process `pid` (SIGKILL) and starts it again as it was started: its command line,
/// environment and working directory read from /proc, its output in `log`. What a server's
/// crash and its supervisor's restart do. The new process is a [`Process`] of the caller's; the
/// old one's owner reaps it.
pub fn restart(pid: u32, name: &str, log: &Path) -> crate::Result<Process> {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let split = |bytes: Vec<u8>| -> Vec<String> {
        bytes
            .split(|b| *b == 0)
            .filter(|part| !part.is_empty())
            .map(|part| String::from_utf8_lossy(part).into_owned())
            .collect()
    };
    let args = split(std::fs::read(proc.join("cmdline"))?);
    let environment = split(std::fs::read(proc.join("environ"))?);
    let directory = std::fs::read_link(proc.join("cwd"))?;
    let (program, args) = args.split_first().context("an empty command line")?;
    let killed = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()?;
    anyhow::ensure!(killed.success(), "kill -KILL {pid} failed");
    // NB: until its parent reaps it, it is a zombie, which holds no port, once its other
    // threads are gone too: the leader shows as a zombie while they still hold its sockets
    // (seen: a restarted kube-apiserver found its port in use).
    let holds_something = || {
        let threads = std::fs::read_dir(proc.join("task")).map_or(0, Iterator::count);
        let files = std::fs::read_dir(proc.join("fd")).map_or(0, Iterator::count);
        let zombie =
            std::fs::read_to_string(proc.join("stat")).map_or(true, |stat| stat.contains(") Z "));
        !zombie || threads > 1 || files > 0
    };
    let gone = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while holds_something() {
        anyhow::ensure!(
            std::time::Instant::now() < gone,
            "process {pid} outlived SIGKILL"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .envs(environment.iter().filter_map(|pair| pair.split_once('=')))
        .current_dir(directory);
    Process::spawn(name, command, log)
}

#[allow(unsafe_code)]
fn kill_group(pgid: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions; a negative pid names the process group
    // the child leads (it was spawned with process_group(0)), which only holds our own children.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

#[allow(unsafe_code)]
fn die_with_parent(command: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec and only calls prctl(2) and
    // getppid(2), both async-signal-safe; it touches no memory shared with the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl; then nobody would ever kill us.
            if libc::getppid() == 1 {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

/// Freezes process `pid` (SIGSTOP), so that it hangs, and returns once every one of its threads
/// has stopped. When `kill` returns the signal is only queued: on a busy VM a thread that is
/// running may still answer a request (seen once: a frozen store answered a read).
pub fn freeze(pid: u32) -> crate::Result<()> {
    crate::run(Command::new("kill").args(["-STOP", &pid.to_string()]))?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !all_threads_stopped(pid)? {
        if std::time::Instant::now() > deadline {
            bail!("process {pid} did not stop within 5 s of SIGSTOP");
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    Ok(())
}

/// Lets a frozen process run again (SIGCONT).
pub fn thaw(pid: u32) -> crate::Result<()> {
    crate::run(Command::new("kill").args(["-CONT", &pid.to_string()]))?;
    Ok(())
}

fn all_threads_stopped(pid: u32) -> crate::Result<bool> {
    for thread in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        // A thread that ended meanwhile has no state left to check.
        let Ok(stat) = std::fs::read_to_string(thread?.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ...`; comm may hold spaces and parentheses.
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next());
        if state != Some('T') {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tool_names_the_install_command() {
        let cache = tempfile::tempdir().expect("tempdir");
        let err = tool_in(cache.path(), "kube-apiserver").expect_err("nothing installed");
        let text = err.to_string();
        assert!(text.contains("tests/bed/provision.sh"), "{text}");
        assert!(
            text.contains(
                &cache
                    .path()
                    .join("bin/kube-apiserver")
                    .display()
                    .to_string()
            ),
            "{text}"
        );

        std::fs::create_dir_all(cache.path().join("bin")).expect("mkdir");
        std::fs::write(cache.path().join("bin/kube-apiserver"), "").expect("touch");
        assert_eq!(
            tool_in(cache.path(), "kube-apiserver").expect("found"),
            cache.path().join("bin/kube-apiserver")
        );
    }
}
