//! The part of Python's `strftime` that chat templates use (Llama 3's
//! `strftime_now("%d %b %Y")` and the like), over UTC. transformers formats local time;
//! UTC avoids a time-zone database, and the machines this runs on keep UTC anyway.

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// A UTC date and time broken into the fields strftime prints.
struct DateTime {
    year: i64,
    month: u32,
    day: u32,
    hour: i64,
    minute: i64,
    second: i64,
    /// 0 = Monday, as Python's `weekday()`.
    weekday: usize,
    /// 1-based day of the year.
    year_day: i64,
}

impl DateTime {
    fn from_unix(seconds: i64) -> DateTime {
        let days = seconds.div_euclid(86_400);
        let in_day = seconds.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        DateTime {
            year,
            month,
            day,
            hour: in_day / 3600,
            minute: in_day % 3600 / 60,
            second: in_day % 60,
            // 1970-01-01 was a Thursday.
            weekday: (days + 3).rem_euclid(7) as usize,
            year_day: days - days_from_civil(year, 1, 1) + 1,
        }
    }
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian calendar).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * shifted_month + 2) / 5 + 1) as u32;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The inverse of `civil_from_days`.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = year - i64::from(month <= 2);
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let shifted_month = i64::from((month + 9) % 12);
    let day_of_year = (153 * shifted_month + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Formats `unix_seconds` (UTC) with `format`, or says which directive is not supported.
pub(super) fn format_utc(format: &str, unix_seconds: i64) -> Result<String, String> {
    let t = DateTime::from_unix(unix_seconds);
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let directive = chars
            .next()
            .ok_or("strftime_now: the format ends with a lone '%'")?;
        out.push_str(&directive_value(&t, directive)?);
    }
    Ok(out)
}

fn directive_value(t: &DateTime, directive: char) -> Result<String, String> {
    let hour12 = if t.hour % 12 == 0 { 12 } else { t.hour % 12 };
    Ok(match directive {
        'Y' => t.year.to_string(),
        'y' => format!("{:02}", t.year.rem_euclid(100)),
        'm' => format!("{:02}", t.month),
        'B' => MONTHS[t.month as usize - 1].to_string(),
        'b' => MONTHS[t.month as usize - 1][..3].to_string(),
        'd' => format!("{:02}", t.day),
        'e' => format!("{:>2}", t.day),
        'j' => format!("{:03}", t.year_day),
        'A' => WEEKDAYS[t.weekday].to_string(),
        'a' => WEEKDAYS[t.weekday][..3].to_string(),
        'H' => format!("{:02}", t.hour),
        'I' => format!("{hour12:02}"),
        'p' => if t.hour < 12 { "AM" } else { "PM" }.to_string(),
        'M' => format!("{:02}", t.minute),
        'S' => format!("{:02}", t.second),
        '%' => "%".to_string(),
        other => {
            return Err(format!(
                "strftime_now: the directive %{other} is not supported"
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        // 2024-02-29 13:05:09 UTC, a Thursday, day 60 of a leap year.
        let t = 1_709_211_909;
        assert_eq!(format_utc("%d %b %Y", t).unwrap(), "29 Feb 2024");
        assert_eq!(
            format_utc("%A %B %e, %y %H:%M:%S %I%p day %j %%", t).unwrap(),
            "Thursday February 29, 24 13:05:09 01PM day 060 %"
        );
        assert_eq!(format_utc("%a %Y-%m-%d", 0).unwrap(), "Thu 1970-01-01");
        assert_eq!(format_utc("%Y-%m-%d %j", -1).unwrap(), "1969-12-31 365");
    }

    #[test]
    fn unsupported_directives_are_errors() {
        assert!(format_utc("%Q", 0).unwrap_err().contains("%Q"));
        assert!(format_utc("50%", 0).is_err());
    }
}
