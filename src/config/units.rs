//! How sizes, durations and counts are written: parsed from a flag or a
//! file value, and shown in help and error messages the same way.

use std::time::Duration;

/// Parses a size: `512`, `64KiB`, `1MiB` (also `KB`/`MB`/`GB` as powers of
/// 1000, `K`/`M`/`G` and `KiB`/`MiB`/`GiB` as powers of 1024).
pub fn parse_size(text: &str) -> Result<usize, String> {
    let wrong = || format!("expected a size such as 512, 64KiB or 1MiB, got `{text}`");
    let (number, unit) = split_number(text).ok_or_else(wrong)?;
    let scale: usize = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => return Err(wrong()),
    };
    number
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| format!("`{}` is too large for a size", text.trim()))
}

/// Parses a duration: `500ms`, `10s`, `2m`, `1h` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let wrong = || format!("expected a duration such as 500ms, 10s or 2m, got `{text}`");
    let (number, unit) = split_number(text).ok_or_else(wrong)?;
    let millis_per: u64 = match unit.to_ascii_lowercase().as_str() {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(wrong()),
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(millis_per))
        .map(Duration::from_millis)
        .ok_or_else(|| format!("`{}` is too long for a duration", text.trim()))
}

/// Renders a byte count the way `--buffer` takes it: `64KiB`, `1MiB`, or
/// plain bytes when no binary unit divides it.
pub fn format_size(bytes: usize) -> String {
    const UNITS: [(usize, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (scale, unit) in UNITS {
        if bytes >= scale && bytes % scale == 0 {
            return format!("{}{unit}", bytes / scale);
        }
    }
    bytes.to_string()
}

/// Renders a duration the way the timeout flags take it: `24h`, `2m`,
/// `10s`, `500ms` (finer durations in Rust's debug form).
pub fn format_duration(duration: Duration) -> String {
    if duration.subsec_nanos() % 1_000_000 != 0 {
        return format!("{duration:?}");
    }
    let millis = duration.as_millis();
    const UNITS: [(u128, &str); 3] = [(3_600_000, "h"), (60_000, "m"), (1_000, "s")];
    for (scale, unit) in UNITS {
        if millis >= scale && millis % scale == 0 {
            return format!("{}{unit}", millis / scale);
        }
    }
    format!("{millis}ms")
}

/// Splits `64 KiB` into `("64", "KiB")`; `None` unless it starts with a
/// digit and the number is all digits.
fn split_number(text: &str) -> Option<(&str, &str)> {
    let text = text.trim();
    let end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(end);
    if number.is_empty() {
        return None;
    }
    Some((number, unit.trim_start()))
}

/// Parses a whole number: `0`, `100`.
pub fn parse_count(text: &str) -> Result<u64, String> {
    match split_number(text) {
        Some((number, "")) => number.parse().map_err(|_| format!("`{text}` is too large")),
        _ => Err(format!(
            "expected a whole number such as 0 or 100, got `{text}`"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: usize = 1024;
    const MIB: usize = 1024 * 1024;

    #[test]
    fn sizes_with_every_unit() {
        let cases = [
            ("512", 512),
            ("0", 0),
            ("64KiB", 64 * KIB),
            ("1MiB", MIB),
            ("1GiB", 1 << 30),
            ("64K", 64 * KIB),
            ("1M", MIB),
            ("2G", 2 << 30),
            ("64KB", 64_000),
            ("1MB", 1_000_000),
            ("1GB", 1_000_000_000),
            ("64kib", 64 * KIB),
            ("64 KiB", 64 * KIB),
            ("1 mb", 1_000_000),
            ("  16k ", 16 * KIB),
            ("100B", 100),
        ];
        for (text, bytes) in cases {
            assert_eq!(parse_size(text), Ok(bytes), "{text}");
        }
    }

    #[test]
    fn bad_sizes_say_what_was_expected() {
        assert_eq!(
            parse_size("12x").unwrap_err(),
            "expected a size such as 512, 64KiB or 1MiB, got `12x`"
        );
        for text in ["", "KiB", "-1", "1.5MiB", "64 K iB", "64KiBs", "0x40"] {
            let error = parse_size(text).unwrap_err();
            assert!(error.starts_with("expected a size"), "{text}: {error}");
        }
    }

    #[test]
    fn oversized_size_is_an_error_not_a_wrap() {
        for text in ["99999999999999999999999", "17179869184GiB"] {
            let error = parse_size(text).unwrap_err();
            assert!(error.contains("too large"), "{text}: {error}");
        }
    }

    #[test]
    fn durations_with_every_unit() {
        let cases = [
            ("500ms", Duration::from_millis(500)),
            ("10s", Duration::from_secs(10)),
            ("2m", Duration::from_secs(120)),
            ("1h", Duration::from_secs(3600)),
            ("7", Duration::from_secs(7)),
            ("0", Duration::ZERO),
            ("10 S", Duration::from_secs(10)),
            ("250MS", Duration::from_millis(250)),
        ];
        for (text, duration) in cases {
            assert_eq!(parse_duration(text), Ok(duration), "{text}");
        }
    }

    #[test]
    fn bad_durations_say_what_was_expected() {
        assert_eq!(
            parse_duration("10 days").unwrap_err(),
            "expected a duration such as 500ms, 10s or 2m, got `10 days`"
        );
        for text in ["", "s", "-1s", "1.5s", "10us", "1d"] {
            let error = parse_duration(text).unwrap_err();
            assert!(error.starts_with("expected a duration"), "{text}: {error}");
        }
        let error = parse_duration("99999999999999999999h").unwrap_err();
        assert!(error.contains("too long"), "{error}");
        let error = parse_duration("18446744073709551615h").unwrap_err();
        assert!(error.contains("too long"), "{error}");
    }

    #[test]
    fn formatting_round_trips_through_parsing() {
        for bytes in [0, 1, 64, 1000, 64 * KIB, 3 * MIB, 5 << 30, 65_532] {
            assert_eq!(parse_size(&format_size(bytes)), Ok(bytes));
        }
        for millis in [0, 5, 1500, 10_000, 120_000, 86_400_000] {
            let duration = Duration::from_millis(millis);
            assert_eq!(parse_duration(&format_duration(duration)), Ok(duration));
        }
        assert_eq!(format_size(64 * KIB), "64KiB");
        assert_eq!(format_duration(Duration::from_secs(24 * 3600)), "24h");
    }
}
