//! Durations as the contract writes them: `"120s"`, `"1m30s"`, `"500ms"`, `"2h"`: the KumikoApp
//! spec's lifecycle fields and the `KUMIKO_*` duration variables the operator sets.
//!
//! The same strings the CRD's CEL rules parse with `duration()`; the app runtime reads every value
//! [`format_duration`] writes. Only whole numbers of `h`, `m`, `s` and `ms` are
//! accepted, each at most once and in that order, so every value means one thing.

use std::time::Duration;

/// The regular expression the CRD schema checks duration fields against.
pub const DURATION_PATTERN: &str = "^([0-9]+h)?([0-9]+m)?([0-9]+s)?([0-9]+ms)?$";

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{value:?} is not a duration: write whole numbers of h, m, s and ms in that order, like \"40s\" or \"1m30s\""
)]
pub struct DurationError {
    /// The refused input.
    pub value: String,
}

/// Parses a spec duration such as `"1m30s"`.
pub fn parse_duration(value: &str) -> Result<Duration, DurationError> {
    let error = || DurationError {
        value: value.to_owned(),
    };
    if value.is_empty() {
        return Err(error());
    }
    let units: [(&str, u64); 4] = [("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)];
    let mut rest = value;
    let mut millis: u64 = 0;
    let mut next_unit = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(error());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| error())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let position = units[next_unit..]
            .iter()
            .position(|(name, _)| *name == unit)
            .ok_or_else(error)?;
        let (_, factor) = units[next_unit + position];
        next_unit += position + 1;
        millis = number
            .checked_mul(factor)
            .and_then(|part| millis.checked_add(part))
            .ok_or_else(error)?;
    }
    Ok(Duration::from_millis(millis))
}

/// Formats a duration the way the spec writes it, in whole seconds when it has no milliseconds.
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis.is_multiple_of(1000) {
        format!("{}s", millis / 1000)
    } else {
        format!("{millis}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_unit_and_combinations() {
        assert_eq!(parse_duration("40s"), Ok(Duration::from_secs(40)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1s500ms"), Ok(Duration::from_millis(1500)));
    }

    #[test]
    fn refuses_what_the_pattern_refuses() {
        for bad in [
            "", "40", "s", "1.5s", "30s1m", "1s1s", "-1s", "1d", " 1s", "1S",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn formats_round_trip() {
        for value in ["40s", "500ms", "90s"] {
            let parsed = parse_duration(value).expect("valid");
            assert_eq!(parse_duration(&format_duration(parsed)), Ok(parsed));
        }
    }
}
