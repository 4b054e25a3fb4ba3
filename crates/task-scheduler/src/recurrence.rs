//! When a recurring schedule fires next: its cron expression read in its time zone.

use std::str::FromStr as _;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;

/// A parsed cron expression and the time zone it is read in.
///
/// The expression is croner's syntax: five fields (minute precision) or six with a leading
/// seconds field (`*/10 * * * * *`), plus nicknames such as `@daily`. It is evaluated on the
/// wall clock of `timezone`, and each occurrence is turned into an instant (UTC) there, which is
/// what makes "every day at 02:30 in Berlin" mean 02:30 in Berlin in winter and in summer.
///
/// Around a change of daylight saving time croner follows the Open Cron Pattern Specification:
/// - a **fixed** time that does not exist that day (02:30 when clocks jump from 02:00 to 03:00)
///   fires at the first valid time after the gap, 03:00, on the same day: a nightly job is not
///   skipped once a year;
/// - a **fixed** time that exists twice (02:30 when clocks fall back from 03:00 to 02:00) fires
///   once, at its first instance: a nightly job does not run twice;
/// - **interval** expressions (`*/5 * * * *`) skip what falls into a gap and fire on both passes
///   through a repeated hour, because they are about elapsed time, not a time of day.
#[derive(Debug, Clone)]
pub(crate) struct Recurrence {
    cron: Cron,
    timezone: Tz,
}

impl Recurrence {
    /// Parses both, with an error that names what is wrong.
    pub(crate) fn parse(cron: &str, timezone: &str) -> anyhow::Result<Self> {
        let parsed =
            Cron::from_str(cron).with_context(|| format!("Invalid cron expression `{cron}`"))?;
        let timezone: Tz = timezone.parse().map_err(|error| {
            anyhow::anyhow!("Invalid time zone `{timezone}` (an IANA name such as `Europe/Berlin` is needed): {error}")
        })?;
        Ok(Self {
            cron: parsed,
            timezone,
        })
    }

    /// The first occurrence strictly after `after`, as an instant.
    ///
    /// `after` goes in as an instant in the schedule's zone, not as a wall-clock time: in a
    /// repeated hour the same wall-clock time means two instants, and only the instant says
    /// which pass through the hour the search starts on.
    pub(crate) fn next_after(&self, after: DateTime<Utc>) -> anyhow::Result<DateTime<Utc>> {
        let local = after.with_timezone(&self.timezone);
        let next = self
            .cron
            .find_next_occurrence(&local, false)
            .with_context(|| format!("No occurrence of `{}` after {after}", self.cron.pattern))?;
        Ok(next.with_timezone(&Utc))
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;

    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn occurrences(recurrence: &Recurrence, from: DateTime<Utc>, count: usize) -> Vec<String> {
        let mut at = from;
        (0..count)
            .map(|_| {
                at = recurrence.next_after(at).unwrap();
                at.to_rfc3339()
            })
            .collect()
    }

    #[test]
    fn a_daily_time_in_the_spring_gap_fires_right_after_the_gap_the_same_day() {
        // Berlin, 29 March 2026: at 02:00 CET (UTC+1) clocks jump to 03:00 CEST (UTC+2), so
        // 02:30 does not exist that day.
        let nightly = Recurrence::parse("30 2 * * *", "Europe/Berlin").unwrap();

        let next = occurrences(&nightly, utc("2026-03-27T12:00:00Z"), 4);

        assert_eq!(
            next,
            [
                "2026-03-28T01:30:00+00:00", // 02:30 CET
                "2026-03-29T01:00:00+00:00", // 03:00 CEST, the first valid time after the gap
                "2026-03-30T00:30:00+00:00", // 02:30 CEST
                "2026-03-31T00:30:00+00:00",
            ]
        );
        // Every one is a real instant that reads back as a valid Berlin time on its own day.
        for instant in &next {
            let local = utc(instant).with_timezone(&chrono_tz::Europe::Berlin);
            assert!(
                chrono_tz::Europe::Berlin
                    .from_local_datetime(&local.naive_local())
                    .single()
                    .is_some(),
                "{local}"
            );
        }
    }

    #[test]
    fn a_daily_time_in_the_repeated_autumn_hour_fires_once() {
        // Berlin, 25 October 2026: at 03:00 CEST clocks fall back to 02:00 CET, so 02:30 happens
        // twice (00:30 and 01:30 UTC).
        let nightly = Recurrence::parse("30 2 * * *", "Europe/Berlin").unwrap();

        let next = occurrences(&nightly, utc("2026-10-24T12:00:00Z"), 3);

        assert_eq!(
            next,
            [
                "2026-10-25T00:30:00+00:00", // the first 02:30 (CEST)
                "2026-10-26T01:30:00+00:00", // 02:30 CET the next day, not the second pass
                "2026-10-27T01:30:00+00:00",
            ]
        );
    }

    #[test]
    fn six_fields_mean_seconds() {
        let every_second = Recurrence::parse("* * * * * *", "UTC").unwrap();

        assert_eq!(
            occurrences(&every_second, utc("2026-01-01T00:00:00.400Z"), 2),
            ["2026-01-01T00:00:01+00:00", "2026-01-01T00:00:02+00:00"]
        );
    }

    #[test]
    fn bad_expressions_and_zones_are_refused_with_their_names() {
        let cron = Recurrence::parse("61 * * * *", "UTC").unwrap_err();
        assert!(format!("{cron:#}").contains("`61 * * * *`"), "{cron:#}");
        let zone = Recurrence::parse("* * * * *", "Mars/Olympus").unwrap_err();
        assert!(format!("{zone:#}").contains("`Mars/Olympus`"), "{zone:#}");
    }
}
