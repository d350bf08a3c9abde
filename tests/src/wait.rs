//! The one way tests and the bed wait: ask again until the answer is there or the time is up.
//! A probe answers `Ok(value)` when done and `Err(seen)` when not yet; the last `seen` goes into
//! the time-out error, so that a failure shows what was there, not only what was awaited.

use crate::process::Process;
use anyhow::bail;
use std::future::Future;
use std::time::{Duration, Instant};

/// Pause between two tries.
const PAUSE: Duration = Duration::from_millis(100);

/// Asks `probe` until it answers `Ok`, for at most `within`; `what` names the awaited state.
pub async fn until<T>(
    within: Duration,
    what: &str,
    mut probe: impl FnMut() -> Result<T, String>,
) -> crate::Result<T> {
    until_async(within, what, || std::future::ready(probe())).await
}

/// [`until`] for probes that await (an HTTP call, a Kubernetes API read).
pub async fn until_async<T, F>(
    within: Duration,
    what: &str,
    mut probe: impl FnMut() -> F,
) -> crate::Result<T>
where
    F: Future<Output = Result<T, String>>,
{
    let waiting = Waiting::new(within, what);
    loop {
        match probe().await {
            Ok(value) => return Ok(value),
            Err(seen) => waiting.pause(&seen).await?,
        }
    }
}

/// The time a wait has, for loops that [`until`] does not fit (one that must also stop when a
/// process exits, or that borrows what it probes mutably).
#[derive(Debug)]
pub struct Waiting {
    deadline: Instant,
    within: Duration,
    what: String,
}

impl Waiting {
    /// A wait of `within` from now for `what` (named in the timeout error).
    pub fn new(within: Duration, what: &str) -> Waiting {
        Waiting {
            deadline: Instant::now() + within,
            within,
            what: what.to_owned(),
        }
    }

    /// Sleeps before the next try, or fails with what was `seen` last when the time is up.
    pub async fn pause(&self, seen: &str) -> crate::Result<()> {
        if Instant::now() > self.deadline {
            let (within, what) = (self.within, &self.what);
            if seen.is_empty() {
                bail!("timed out after {within:?} waiting for {what}");
            }
            bail!("timed out after {within:?} waiting for {what}; last seen:\n{seen}");
        }
        tokio::time::sleep(PAUSE).await;
        Ok(())
    }
}

/// Polls `ready` until it holds, failing at once when `process` exits (with its log) or when
/// `within` passes: how every server of the bed is waited for after its start.
pub async fn process_ready<F, Fut>(
    process: &mut Process,
    within: Duration,
    mut ready: F,
) -> crate::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let waiting = Waiting::new(within, &format!("{} to be ready", process.name));
    loop {
        if let Some(status) = process.exited() {
            bail!(
                "{} exited ({status}) before it was ready:\n{}",
                process.name,
                process.log_tail(30)
            );
        }
        if ready().await {
            return Ok(());
        }
        waiting.pause(&process.log_tail(30)).await?;
    }
}

/// `Ok(())` when `condition` holds, else `Err(seen())`: the common probe shape.
pub fn check(condition: bool, seen: impl FnOnce() -> String) -> Result<(), String> {
    if condition { Ok(()) } else { Err(seen()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_the_answer_or_says_what_it_saw_last() {
        let mut tries = 0;
        let value = until(Duration::from_secs(5), "the third try", || {
            tries += 1;
            if tries == 3 {
                Ok(tries)
            } else {
                Err(format!("try {tries}"))
            }
        })
        .await
        .unwrap();
        assert_eq!(value, 3);
        let error = until::<()>(
            Duration::from_millis(250),
            "never",
            || Err("still 0".into()),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("waiting for never") && error.contains("last seen:\nstill 0"),
            "{error}"
        );
    }
}
