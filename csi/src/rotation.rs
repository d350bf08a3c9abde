//! The rotation scheduler: a cycle over every volume each interval (jittered by ±10 % so that
//! the nodes of a cluster do not ask the store at the same moment), and in between the retries
//! of failed volumes at the time their backoff says and the renewals of held secrets when due.

use crate::driver::Driver;
use std::sync::Arc;

/// Runs for as long as the driver does.
pub async fn run(driver: Arc<Driver>) {
    let jittered = |interval: std::time::Duration| interval.mul_f64(0.9 + 0.2 * fastrand::f64());
    let mut next_cycle = tokio::time::Instant::now() + jittered(driver.rotation_interval);
    loop {
        let wake = match driver.next_retry() {
            Some(retry) => next_cycle.min(tokio::time::Instant::from_std(retry)),
            None => next_cycle,
        };
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {}
            // A publish changed what is due: plan again.
            _ = driver.schedule_changed.notified() => continue,
        }
        if tokio::time::Instant::now() >= next_cycle {
            driver.rotate(true).await;
            next_cycle = tokio::time::Instant::now() + jittered(driver.rotation_interval);
        } else {
            driver.rotate(false).await;
        }
    }
}
