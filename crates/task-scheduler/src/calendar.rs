//! Calendar days in a time zone, for recurring tasks that work on "yesterday" (a daily digest,
//! a nightly export): the day a recurring schedule fires in is read in the schedule's time zone,
//! and such a day is 23 or 25 hours long when the clocks change.

use anyhow::Context as _;
use chrono::{DateTime, Days, NaiveDate, Utc};
use chrono_tz::Tz;
use platform::config::{ConfigError, Env};

/// The IANA time zone `variable` names (`default` when unset), checked at start: a recurring
/// schedule's zone, by name, as the scheduler stores it.
pub fn timezone_from_env(env: &Env, variable: &str, default: &str) -> Result<String, ConfigError> {
    let timezone = env.string_or(variable, default);
    match timezone.parse::<Tz>() {
        Ok(_) => Ok(timezone),
        Err(error) => Err(ConfigError::invalid(
            variable,
            &timezone,
            &format!("{error}; use an IANA name such as UTC or Europe/Berlin"),
        )),
    }
}

/// The calendar day before `now`'s, in `timezone`.
pub fn yesterday(now: DateTime<Utc>, timezone: Tz) -> NaiveDate {
    now.with_timezone(&timezone).date_naive() - Days::new(1)
}

/// The instants `day` starts and ends in `timezone`: `[start, end)`.
pub fn day_bounds(day: NaiveDate, timezone: Tz) -> anyhow::Result<(DateTime<Utc>, DateTime<Utc>)> {
    let start_of = |date: NaiveDate| {
        date.and_hms_opt(0, 0, 0)
            .and_then(|midnight| midnight.and_local_timezone(timezone).earliest())
            // Midnight may not exist where the clocks jump at 00:00; the day then starts at the
            // first instant after the gap, which one hour later always is.
            .or_else(|| {
                date.and_hms_opt(1, 0, 0)
                    .and_then(|one| one.and_local_timezone(timezone).earliest())
            })
            .map(|local| local.with_timezone(&Utc))
            .with_context(|| format!("{date} has no start in {timezone}"))
    };
    Ok((start_of(day)?, start_of(day + Days::new(1))?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yesterday_is_a_day_of_the_time_zone() {
        let now: DateTime<Utc> = "2026-11-26T06:00:00Z".parse().unwrap();
        assert_eq!(yesterday(now, Tz::UTC), "2026-11-25".parse().unwrap());
        // 23:30 UTC is already the next day in Tokyo.
        let late: DateTime<Utc> = "2026-11-26T23:30:00Z".parse().unwrap();
        assert_eq!(
            yesterday(late, Tz::Asia__Tokyo),
            "2026-11-26".parse().unwrap()
        );
    }

    #[test]
    fn a_day_spans_its_local_midnights() {
        let (from, to) = day_bounds("2026-03-29".parse().unwrap(), Tz::Europe__Berlin).unwrap();
        assert_eq!(
            from,
            "2026-03-28T23:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        // The day the clocks go forward has 23 hours.
        assert_eq!(to, "2026-03-29T22:00:00Z".parse::<DateTime<Utc>>().unwrap());
    }

    #[test]
    fn a_midnight_in_a_gap_starts_the_day_after_it() {
        // Havana moved its clocks forward at 00:00 on 2026-03-08.
        let (from, _) = day_bounds("2026-03-08".parse().unwrap(), Tz::America__Havana).unwrap();
        assert_eq!(
            from,
            "2026-03-08T05:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
    }
}
