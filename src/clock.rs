//! The one clock: milliseconds since the epoch for the store and its
//! deadlines, and RFC 3339 text for records, payloads and views.

use std::time::SystemTime;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `ms` since the epoch as RFC 3339 UTC with milliseconds.
pub fn ms_to_rfc3339(ms: i64) -> String {
    let t =
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    rfc3339(t)
}

thread_local! {
    // The last second each thread formatted, and its text up to the `.`
    // (`2021-02-25T15:02:10.`): records come many per second, and the
    // calendar arithmetic cost more than the rest of the time stamp. Per
    // thread, so that no lock is shared.
    static LAST_SECOND: std::cell::Cell<(u64, [u8; 20])> =
        const { std::cell::Cell::new((u64::MAX, [0; 20])) };
}

/// RFC 3339 UTC time with milliseconds, without pulling in a date crate.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let text = match LAST_SECOND.get() {
        (last, text) if last == secs => text,
        _ => {
            let text = to_second(secs);
            LAST_SECOND.set((secs, text));
            text
        }
    };
    let millis = d.subsec_millis();
    let mut out = String::with_capacity(24);
    out.extend(text.iter().map(|&b| char::from(b)));
    for digit in [millis / 100, millis / 10 % 10, millis % 10] {
        out.push(char::from(b'0' + digit as u8));
    }
    out.push('Z');
    out
}

/// `secs` as RFC 3339 UTC up to the `.` (`2021-02-25T15:02:10.`): the
/// calendar arithmetic.
fn to_second(secs: u64) -> [u8; 20] {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = if month <= 2 { y + 1 } else { y };
    // Digit by digit into a fixed array: `format!` with padding cost more
    // than the rest of the record.
    let mut out = [0u8; 20];
    let mut at = out.iter_mut();
    let mut digits = |n: i64, width: u32, then: u8| {
        for p in (0..width).rev() {
            if let Some(slot) = at.next() {
                *slot = b'0' + (n / 10_i64.pow(p)).rem_euclid(10) as u8;
            }
        }
        if let Some(slot) = at.next() {
            *slot = then;
        }
    };
    let rem = rem as i64;
    digits(year, 4, b'-');
    digits(month, 2, b'-');
    digits(day, 2, b'T');
    digits(rem / 3600, 2, b':');
    digits((rem % 3600) / 60, 2, b':');
    digits(rem % 60, 2, b'.');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_matches_known_instants() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_614_265_330_123);
        assert_eq!(rfc3339(t), "2021-02-25T15:02:10.123Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(253_402_300_799_999);
        assert_eq!(rfc3339(t), "9999-12-31T23:59:59.999Z");
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(951_782_400_007);
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00.007Z");
    }

    #[test]
    fn rfc3339_of_the_same_second_again_and_of_the_next() {
        let base = SystemTime::UNIX_EPOCH + Duration::from_millis(1_614_265_330_000);
        for (ms, want) in [
            (5, "2021-02-25T15:02:10.005Z"),
            (999, "2021-02-25T15:02:10.999Z"),
            (1_040, "2021-02-25T15:02:11.040Z"),
            (1_040 + 86_400_000, "2021-02-26T15:02:11.040Z"),
            (120, "2021-02-25T15:02:10.120Z"),
        ] {
            assert_eq!(rfc3339(base + Duration::from_millis(ms)), want);
        }
    }
}
