//! Durations in Flink's notation and timestamps (ISO-8601 and StateFun's `date` form).

use std::fmt;
use std::time::Duration;

/// Parses a duration the way Flink's `TimeUtils.parseDuration` does: a number,
/// optional white space and a unit (`d`, `day(s)`, `h`, `hour(s)`, `min`, `m`,
/// `minute(s)`, `s`, `sec(s)`, `second(s)`, `ms`, `milli(s)`, `millisecond(s)`,
/// `µs`/`us`, `micro(s)`, `microsecond(s)`, `ns`, `nano(s)`, `nanosecond(s)`);
/// a bare number is milliseconds. Units are case-insensitive.
///
/// ```
/// use std::time::Duration;
/// use statefun_module::parse_duration;
/// assert_eq!(parse_duration("15min"), Ok(Duration::from_secs(900)));
/// assert_eq!(parse_duration("1 min"), Ok(Duration::from_secs(60)));
/// assert_eq!(parse_duration("30seconds"), Ok(Duration::from_secs(30)));
/// assert_eq!(parse_duration("100"), Ok(Duration::from_millis(100)));
/// assert!(parse_duration("ten seconds").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("empty duration; write e.g. `30s`, `1 min` or `60000` (milliseconds)".into());
    }
    let digits_end = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, rest) = trimmed.split_at(digits_end);
    if number.is_empty() {
        return Err(format!(
            "`{text}` is not a duration: it must start with a whole number, e.g. `30s`, `1 min` or `60000` (milliseconds)"
        ));
    }
    let value: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration: the number is too large"))?;
    let unit = rest.trim_start().to_lowercase();
    let nanos_per: u128 = match unit.as_str() {
        "" | "ms" | "milli" | "millis" | "millisecond" | "milliseconds" => 1_000_000,
        "d" | "day" | "days" => 86_400_000_000_000,
        "h" | "hour" | "hours" => 3_600_000_000_000,
        "min" | "mins" | "m" | "minute" | "minutes" => 60_000_000_000,
        "s" | "sec" | "secs" | "second" | "seconds" => 1_000_000_000,
        "µs" | "us" | "micro" | "micros" | "microsecond" | "microseconds" => 1_000,
        "ns" | "nano" | "nanos" | "nanosecond" | "nanoseconds" => 1,
        other => {
            return Err(format!(
                "`{text}` is not a duration: unknown unit `{other}`; use d, h, min, s, ms, µs or ns (or their long forms)"
            ))
        }
    };
    let nanos = u128::from(value) * nanos_per;
    let secs = u64::try_from(nanos / 1_000_000_000)
        .map_err(|_| format!("`{text}` is not a duration: it is too large"))?;
    Ok(Duration::new(secs, (nanos % 1_000_000_000) as u32))
}

/// Formats a duration compactly for summaries (`60s`, `15min`, `1500ms`).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return format!("{}ns", d.as_nanos());
    }
    if ms.is_multiple_of(86_400_000) {
        format!("{}d", ms / 86_400_000)
    } else if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}min", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// A point in time given in a module file: milliseconds since the Unix epoch (UTC) and the text as written.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Timestamp {
    /// Milliseconds since 1970-01-01T00:00:00Z (sub-millisecond digits are dropped).
    pub epoch_millis: i64,
    /// The text as written in the file.
    pub text: String,
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Parses ISO-8601 (`2026-04-23T00:00:00.000Z`, `2026-04-23T02:00:00+02:00`) and
/// StateFun's `date` form (`2020-02-01 04:15:00.000 +0000`, `… Z`). A zone offset is required.
///
/// ```
/// use statefun_module::parse_timestamp;
/// assert_eq!(parse_timestamp("1970-01-01T00:00:01.5Z").unwrap().epoch_millis, 1500);
/// assert_eq!(parse_timestamp("2020-02-01 04:15:00.00 Z").unwrap().epoch_millis, 1580530500000);
/// assert!(parse_timestamp("1700000000").is_err());
/// ```
pub fn parse_timestamp(text: &str) -> Result<Timestamp, String> {
    let expected = "write an ISO-8601 time such as `2026-04-23T00:00:00.000Z`, or `2026-04-23 00:00:00.000 +0000`";
    let bad = |why: &str| format!("`{text}` is not a timestamp: {why}; {expected}");
    let t = text.trim();
    if !t.is_empty()
        && t.bytes()
            .all(|b| b.is_ascii_digit() || b == b'-' || b == b'.')
    {
        return Err(format!(
            "`{text}` looks like a numeric epoch, but a timestamp is required: {expected}"
        ));
    }
    let b = t.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<u32> {
        let s = t.get(range)?;
        if s.bytes().all(|c| c.is_ascii_digit()) {
            s.parse().ok()
        } else {
            None
        }
    };
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return Err(bad("expected `yyyy-MM-dd` and `HH:mm:ss`"));
    }
    if b[10] != b'T' && b[10] != b't' && b[10] != b' ' {
        return Err(bad("expected `T` or a space between date and time"));
    }
    let (Some(year), Some(month), Some(day), Some(hour), Some(minute), Some(second)) = (
        num(0..4),
        num(5..7),
        num(8..10),
        num(11..13),
        num(14..16),
        num(17..19),
    ) else {
        return Err(bad("expected digits in `yyyy-MM-dd HH:mm:ss`"));
    };
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return Err(bad("a date or time field is out of range"));
    }
    let mut i = 19;
    let mut millis = 0u32;
    if i < b.len() && (b[i] == b'.' || b[i] == b',') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start || i - start > 9 {
            return Err(bad("expected 1 to 9 digits of fractional seconds"));
        }
        let frac = &t[start..i];
        let mut padded = String::from(frac);
        while padded.len() < 3 {
            padded.push('0');
        }
        millis = padded[..3].parse().map_err(|_| bad("bad fraction"))?;
    }
    let zone = t[i..].trim_start();
    let offset_minutes: i64 = if zone.eq_ignore_ascii_case("z") || zone == "UTC" {
        0
    } else if let Some(sign) = zone.chars().next().filter(|c| *c == '+' || *c == '-') {
        let digits: String = zone[1..].chars().filter(|c| *c != ':').collect();
        if !(digits.len() == 2 || digits.len() == 4) || !digits.bytes().all(|c| c.is_ascii_digit())
        {
            return Err(bad(
                "the zone offset must look like `Z`, `+02:00` or `+0200`",
            ));
        }
        let h: i64 = digits[..2].parse().map_err(|_| bad("bad zone offset"))?;
        let m: i64 = if digits.len() == 4 {
            digits[2..].parse().map_err(|_| bad("bad zone offset"))?
        } else {
            0
        };
        if h > 18 || m > 59 {
            return Err(bad("the zone offset is out of range"));
        }
        let total = h * 60 + m;
        if sign == '-' {
            -total
        } else {
            total
        }
    } else if zone.is_empty() {
        return Err(bad("it has no zone offset (add `Z` for UTC)"));
    } else {
        return Err(bad(
            "the zone offset must look like `Z`, `+02:00` or `+0200`",
        ));
    };
    let days = days_from_civil(i64::from(year), month, day);
    let secs = days * 86_400 + i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second)
        - offset_minutes * 60;
    Ok(Timestamp {
        epoch_millis: secs * 1000 + i64::from(millis),
        text: text.to_string(),
    })
}

fn is_leap(y: u32) -> bool {
    (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400)
}

fn days_in_month(y: u32, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flink_duration_forms() {
        let cases = [
            ("15min", 900_000),
            ("1 min", 60_000),
            ("1minute", 60_000),
            ("2 minutes", 120_000),
            ("30seconds", 30_000),
            ("10 sec", 10_000),
            ("100ms", 100),
            ("2h", 7_200_000),
            ("1d", 86_400_000),
            ("5s", 5_000),
            ("2m", 120_000),
            ("60000", 60_000),
            ("1 MIN", 60_000),
        ];
        for (text, ms) in cases {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_millis(ms)),
                "{text}"
            );
        }
        assert_eq!(parse_duration("1500us"), Ok(Duration::from_micros(1500)));
        for bad in [
            "",
            "min",
            "1.5s",
            "-1s",
            "10 parsecs",
            "99999999999999999999999",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn timestamps() {
        let t = parse_timestamp("2026-04-23T00:00:00.000Z").unwrap();
        assert_eq!(t.epoch_millis, 1_776_902_400_000);
        let same = parse_timestamp("2026-04-23T02:00:00+02:00").unwrap();
        assert_eq!(same.epoch_millis, t.epoch_millis);
        let same = parse_timestamp("2026-04-22 19:00:00.000 -0500").unwrap();
        assert_eq!(same.epoch_millis, t.epoch_millis);
        assert_eq!(
            parse_timestamp("2020-02-01 04:15:00.00 Z")
                .unwrap()
                .epoch_millis,
            1_580_530_500_000
        );
        for bad in [
            "1776902400000",
            "2026-04-23",
            "2026-04-23T00:00:00",
            "2026-13-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "2026-04-23T00:00:00.Z",
            "2026-04-23T00:00:00+2",
            "2026-04-23x00:00:00Z",
        ] {
            assert!(parse_timestamp(bad).is_err(), "{bad}");
        }
    }
}
