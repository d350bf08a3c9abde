//! Load generation for the benchmarks: `wrk` (Debian's package, installed by provisioning) with
//! keep-alive over HTTPS, and percentiles of timed runs.

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// What one wrk run measured.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// Requests answered per second.
    pub per_second: f64,
    /// Median latency, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency, milliseconds.
    pub p99_ms: f64,
}

/// Writes `body` and a wrk script that POSTs it as JSON into `dir`; returns the script.
pub fn post_script(dir: &Path, name: &str, body: &str) -> anyhow::Result<PathBuf> {
    let body_file = dir.join(format!("{name}.json"));
    std::fs::write(&body_file, body)?;
    let script = dir.join(format!("{name}.lua"));
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\n\
             wrk.body = io.open(\"{}\"):read(\"*a\")\n",
            body_file.display()
        ),
    )?;
    Ok(script)
}

/// `wrk -t2 -c32` for `seconds` against `url` with `script`; any non-2xx answer or socket error
/// fails the run, so that an error path is never measured as throughput.
pub fn wrk(script: &Path, url: &str, seconds: u64) -> anyhow::Result<Load> {
    let output = Command::new("wrk")
        .args(["-t2", "-c32", &format!("-d{seconds}s"), "--latency", "-s"])
        .arg(script)
        .arg(url)
        .output()
        .context("wrk runs (tests/bed/provision.sh installs it)")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() || text.contains("Non-2xx") || text.contains("Socket errors") {
        bail!(
            "wrk reported failures:\n{text}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let field = |prefix: &str| {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .map(str::trim)
            .with_context(|| format!("no {prefix:?} in wrk's output:\n{text}"))
    };
    Ok(Load {
        per_second: field("Requests/sec:")?.parse()?,
        p50_ms: millis(field("50%")?)?,
        p99_ms: millis(field("99%")?)?,
    })
}

/// wrk's latency figures: `812.00us`, `1.23ms`, `1.01s`.
fn millis(text: &str) -> anyhow::Result<f64> {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .context("latency without a unit")?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse()?;
    Ok(match unit {
        "us" => number / 1000.0,
        "ms" => number,
        "s" => number * 1000.0,
        _ => bail!("unknown latency unit in {text}"),
    })
}

/// The `p` quantile (0.0 to 1.0) of `samples`, which it sorts.
pub fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let index = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples.get(index).copied().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_latencies_are_read_in_milliseconds() {
        assert_eq!(millis("812.00us").unwrap(), 0.812);
        assert_eq!(millis("1.23ms").unwrap(), 1.23);
        assert_eq!(millis("1.01s").unwrap(), 1010.0);
        assert!(millis("12").is_err() && millis("3.0h").is_err());
    }

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        let mut samples: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        assert_eq!(percentile(&mut samples, 0.5), Duration::from_millis(51));
        assert_eq!(percentile(&mut samples, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&mut [], 0.5), Duration::ZERO);
    }
}
