//! Durations as operators write them in flags and annotations: `500ms`, `30s`, `2m`, `1h`.

use std::time::Duration;

/// What an error quotes of the text: whoever wrote it chose its length.
fn quoted(text: &str) -> std::borrow::Cow<'_, str> {
    crate::names::shown(text, 64)
}

/// A duration longer than zero: for intervals and timeouts, where zero would spin or fail at once.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = parse_duration_or_zero(text)?;
    if duration.is_zero() {
        return Err(format!("{:?} must be longer than zero", quoted(text)));
    }
    Ok(duration)
}

/// A duration that may be zero: for delays that an operator may switch off with `0s`.
/// Written as Go's `time.ParseDuration` takes it (what the Deckhouse webhook reads): one or more
/// `<number><unit>` with units `ns`, `us`/`µs`, `ms`, `s`, `m`, `h` and an optional fraction,
/// like `30s`, `1m30s` or `1.5s`.
pub fn parse_duration_or_zero(text: &str) -> Result<Duration, String> {
    let invalid = || {
        format!(
            "{:?} is not a duration like 30s, 1m30s, 2m or 500ms",
            quoted(text)
        )
    };
    if text.is_empty() {
        return Err(invalid());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("{:?} needs a unit: ns, us, ms, s, m or h", quoted(text)))?;
        let (number, after) = rest.split_at(number_end);
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        let nanos_per_unit: u128 = match unit {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => {
                return Err(format!(
                    "{:?} needs a unit: ns, us, ms, s, m or h",
                    quoted(text)
                ));
            }
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
            return Err(invalid());
        }
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| invalid())?
        };
        let fraction_nanos: u128 = if fraction.is_empty() {
            0
        } else {
            let digits = &fraction[..fraction.len().min(18)];
            let value: u128 = digits.parse().map_err(|_| invalid())?;
            value * nanos_per_unit / 10u128.pow(digits.len() as u32)
        };
        let nanos = whole
            .checked_mul(nanos_per_unit)
            .and_then(|n| n.checked_add(fraction_nanos))
            .ok_or_else(|| format!("{:?} is too long", quoted(text)))?;
        let part = u64::try_from(nanos / 1_000_000_000)
            .map(|secs| Duration::new(secs, (nanos % 1_000_000_000) as u32))
            .map_err(|_| format!("{:?} is too long", quoted(text)))?;
        total = total
            .checked_add(part)
            .ok_or_else(|| format!("{:?} is too long", quoted(text)))?;
        rest = next;
    }
    if total > MAX_DURATION {
        return Err(format!(
            "{:?} is longer than {}h (ten years); write a shorter duration",
            quoted(text),
            MAX_DURATION.as_secs() / 3600
        ));
    }
    Ok(total)
}

/// The longest duration accepted: far beyond any interval or timeout, and short enough that
/// adding it to the clock can never overflow (which would panic, in the injector as PID 1).
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_capped_so_that_no_clock_overflows() {
        assert_eq!(parse_duration("87600h"), Ok(MAX_DURATION));
        for long in ["87601h", "18446744073709551615s", "5124095576030431h"] {
            let error = parse_duration(long).unwrap_err();
            assert!(
                error.contains("is longer than 87600h") || error.contains("is too long"),
                "{long}: {error}"
            );
        }
        let _ = std::time::Instant::now() + MAX_DURATION;
    }

    #[test]
    fn parses_each_unit_and_refuses_what_is_not_a_duration() {
        let cases = [
            ("500ms", Some(Duration::from_millis(500))),
            ("30s", Some(Duration::from_secs(30))),
            ("2m", Some(Duration::from_secs(120))),
            ("1h", Some(Duration::from_secs(3600))),
            ("1m30s", Some(Duration::from_secs(90))),
            ("1.5s", Some(Duration::from_millis(1500))),
            ("1h2m3s", Some(Duration::from_secs(3723))),
            ("250us", Some(Duration::from_micros(250))),
            ("1.s", Some(Duration::from_secs(1))),
            ("s", None),
            ("1.2.3s", None),
            ("", None),
            ("0s", None),
            ("2", None),
            ("m", None),
            ("2d", None),
            ("-1s", None),
            ("99999999999999999999h", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration(text).ok(), want, "{text}");
        }
    }

    #[test]
    fn zero_is_allowed_only_where_asked_for() {
        assert_eq!(parse_duration_or_zero("0s"), Ok(Duration::ZERO));
        assert!(
            parse_duration("0s")
                .unwrap_err()
                .contains("longer than zero")
        );
    }
}
