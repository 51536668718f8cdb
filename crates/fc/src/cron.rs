//! Cron expressions for timer triggers, in UTC: the five standard fields (minute, hour,
//! day of month, month, day of week) or six with seconds first. Each field takes `*`,
//! numbers, ranges `a-b`, steps `*/n` and `a-b/n`, and lists `x,y`; months and weekdays also
//! by name (`jan`, `mon`); weekday 7 is Sunday. As in Vixie cron, when both day of month and
//! day of week are restricted, a day matching either fires; a field that starts with `*`
//! (`*`, `*/2`) counts as unrestricted there, so `0 0 */2 * mon` fires on Mondays that are
//! also odd days of the month.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronError(pub String);

impl fmt::Display for CronError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid cron expression: {}", self.0)
    }
}

impl std::error::Error for CronError {}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    seconds: u64,
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    days_restricted: bool,
    weekdays_restricted: bool,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// A field's allowed values as bits; `names` map to `lo + index`.
fn field(text: &str, what: &str, lo: u32, hi: u32, names: &[&str]) -> Result<u64, CronError> {
    let bad = |why: &str| CronError(format!("{what} field {text:?}: {why}"));
    let value = |s: &str| -> Result<u32, CronError> {
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
            return Ok(lo + i as u32);
        }
        let v: u32 = s
            .parse()
            .map_err(|_| bad(&format!("{s:?} is not a number")))?;
        if v < lo || v > hi {
            return Err(bad(&format!("{v} is outside {lo}-{hi}")));
        }
        Ok(v)
    };
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s.parse().map_err(|_| bad("the step is not a number"))?;
                if step == 0 {
                    return Err(bad("a step of 0"));
                }
                (r, step)
            }
            None => (part, 1),
        };
        let (a, b) = if range == "*" {
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a)?, value(b)?)
        } else {
            let v = value(range)?;
            // `5/15` means from 5 to the end in steps of 15.
            (v, if step > 1 { hi } else { v })
        };
        if a > b {
            return Err(bad("a range runs backwards"));
        }
        let mut v = a;
        while v <= b {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

impl Schedule {
    pub fn parse(expr: &str) -> Result<Self, CronError> {
        let parts: Vec<&str> = expr.split_whitespace().collect();
        let (sec, rest) = match parts.len() {
            5 => ("0", &parts[..]),
            6 => (parts[0], &parts[1..]),
            n => {
                return Err(CronError(format!(
                    "{expr:?} has {n} fields; cron takes 5 (minute hour day month weekday) or 6 (seconds first)"
                )));
            }
        };
        let mut weekdays = field(rest[4], "weekday", 0, 7, &WEEKDAYS)?;
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays | 1) & !(1 << 7);
        }
        let s = Self {
            seconds: field(sec, "seconds", 0, 59, &[])?,
            minutes: field(rest[0], "minute", 0, 59, &[])?,
            hours: field(rest[1], "hour", 0, 23, &[])?,
            days: field(rest[2], "day-of-month", 1, 31, &[])?,
            months: field(rest[3], "month", 1, 12, &MONTHS)?,
            weekdays,
            // Vixie cron's DOM_STAR / DOW_STAR: the field's first character decides.
            days_restricted: !rest[2].starts_with('*'),
            weekdays_restricted: !rest[4].starts_with('*'),
        };
        // A schedule that can never fire (31 February) is a mistake, not a quiet no-op.
        if s.next_after(0).is_none() {
            return Err(CronError(format!("{expr:?} never fires")));
        }
        Ok(s)
    }

    fn day_matches(&self, day: u32, weekday: u32) -> bool {
        let d = self.days & (1 << day) != 0;
        let w = self.weekdays & (1 << weekday) != 0;
        // Vixie cron: either field "starred" (first character `*`) makes it an AND of the
        // two bit sets (a plain `*` sets every bit); both restricted makes it an OR.
        if self.days_restricted && self.weekdays_restricted {
            d || w
        } else {
            d && w
        }
    }

    /// The first firing strictly after `unix` (seconds), within the next eight years.
    pub fn next_after(&self, unix: i64) -> Option<i64> {
        use time::OffsetDateTime;
        let mut t = OffsetDateTime::from_unix_timestamp(unix.checked_add(1)?).ok()?;
        let limit = unix + 8 * 366 * 86_400;
        while t.unix_timestamp() <= limit {
            let month = u8::from(t.month()) as u32;
            if self.months & (1 << month) == 0 {
                // First second of the next month.
                let (y, m) = if month == 12 {
                    (t.year() + 1, time::Month::January)
                } else {
                    (t.year(), t.month().next())
                };
                t = time::Date::from_calendar_date(y, m, 1)
                    .ok()?
                    .midnight()
                    .assume_utc();
                continue;
            }
            let weekday = t.weekday().number_days_from_sunday() as u32;
            if !self.day_matches(t.day() as u32, weekday) {
                t = (t.date().next_day()?).midnight().assume_utc();
                continue;
            }
            if self.hours & (1 << t.hour()) == 0 {
                t = t.replace_minute(0).ok()?.replace_second(0).ok()? + time::Duration::hours(1);
                continue;
            }
            if self.minutes & (1 << t.minute()) == 0 {
                t = t.replace_second(0).ok()? + time::Duration::minutes(1);
                continue;
            }
            if self.seconds & (1 << t.second()) == 0 {
                t += time::Duration::seconds(1);
                continue;
            }
            return Some(t.unix_timestamp());
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> i64 {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .expect("time")
            .unix_timestamp()
    }

    #[test]
    fn next_firings() {
        let s = Schedule::parse("*/15 * * * *").expect("valid");
        assert_eq!(
            s.next_after(at("2026-11-29T10:07:30Z")),
            Some(at("2026-11-29T10:15:00Z"))
        );
        assert_eq!(
            s.next_after(at("2026-11-29T10:45:00Z")),
            Some(at("2026-11-29T11:00:00Z"))
        );
        let s = Schedule::parse("0 9 * * mon-fri").expect("valid");
        // 2026-11-28 is a Saturday: next is Monday 09:00.
        assert_eq!(
            s.next_after(at("2026-11-28T12:00:00Z")),
            Some(at("2026-11-30T09:00:00Z"))
        );
        let s = Schedule::parse("*/2 * * * * *").expect("valid");
        assert_eq!(
            s.next_after(at("2026-11-29T10:00:01Z")),
            Some(at("2026-11-29T10:00:02Z"))
        );
        let s = Schedule::parse("30 4 1 jan *").expect("valid");
        assert_eq!(
            s.next_after(at("2026-11-29T00:00:00Z")),
            Some(at("2027-01-01T04:30:00Z"))
        );
        let s = Schedule::parse("0 0 29 feb *").expect("valid");
        assert_eq!(
            s.next_after(at("2026-03-01T00:00:00Z")),
            Some(at("2028-02-29T00:00:00Z"))
        );
        // Day of month or weekday, as Vixie cron: the 1st, or any Sunday (7 = 0).
        let s = Schedule::parse("0 0 1 * 7").expect("valid");
        assert_eq!(
            s.next_after(at("2026-11-27T00:00:00Z")),
            Some(at("2026-11-29T00:00:00Z"))
        );
        assert_eq!(
            s.next_after(at("2026-11-29T00:00:00Z")),
            Some(at("2026-12-01T00:00:00Z"))
        );
        // A day field starting with `*` leaves the weekday alone in charge of the OR:
        // Mondays that are odd days of the month (Vixie cron), not every odd day.
        let s = Schedule::parse("0 0 */2 * mon").expect("valid");
        // 2026-11-30 is a Monday, but the 30th is even; 2026-12-07 is a Monday and odd.
        assert_eq!(
            s.next_after(at("2026-11-28T00:00:00Z")),
            Some(at("2026-12-07T00:00:00Z"))
        );
        let s = Schedule::parse("0 0 1 * */2").expect("valid");
        // The 1st, whatever its weekday (the weekday field starts with `*`).
        assert_eq!(
            s.next_after(at("2026-11-28T00:00:00Z")),
            Some(at("2026-12-01T00:00:00Z"))
        );
    }

    #[test]
    fn malformed_expressions_say_why() {
        for bad in [
            "",
            "* * * *",
            "61 * * * *",
            "* * * * * * *",
            "*/0 * * * *",
            "5-1 * * * *",
            "0 0 31 feb *",
            "x * * * *",
            "* * * smarch *",
        ] {
            assert!(Schedule::parse(bad).is_err(), "{bad:?} was accepted");
        }
        let e = Schedule::parse("0 0 31 feb *").expect_err("never");
        assert!(e.to_string().contains("never fires"));
    }

    /// Whether a second fires, straight from the fields (what `next_after` must agree with).
    fn matches(s: &Schedule, unix: i64) -> bool {
        let t = time::OffsetDateTime::from_unix_timestamp(unix).expect("time");
        s.seconds & (1 << t.second()) != 0
            && s.minutes & (1 << t.minute()) != 0
            && s.hours & (1 << t.hour()) != 0
            && s.months & (1 << u8::from(t.month())) != 0
            && s.day_matches(t.day() as u32, t.weekday().number_days_from_sunday() as u32)
    }

    #[test]
    fn next_after_finds_every_firing_and_only_firings() {
        for expr in [
            "*/7 */5 * * * *",
            "0 */3 * * sun",
            "15 10-12 1,15 * *",
            "0 0 * * 1-5",
        ] {
            let s = Schedule::parse(expr).expect("valid");
            let start = at("2026-11-28T00:00:00Z");
            let end = start + 4 * 86_400;
            let expected: Vec<i64> = (start + 1..end).filter(|&t| matches(&s, t)).collect();
            let mut got = Vec::new();
            let mut t = start;
            while let Some(n) = s.next_after(t).filter(|&n| n < end) {
                got.push(n);
                t = n;
            }
            assert!(!expected.is_empty(), "{expr}");
            assert_eq!(got, expected, "{expr}");
        }
    }
}
