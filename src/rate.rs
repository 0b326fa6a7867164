//! A sampling rate: the share of calls picked for review, written `5%` or
//! `0.05`, from 0 to 1. Policies (`@sample("5%")`) and the configuration
//! (`sampling.rules`) write it the same way, so both read it here.

/// A share from 0 to 1, kept as the threshold a uniform 64-bit draw is
/// compared against, so that picking costs one comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Rate {
    // INVARIANT: `u64::MAX` means every call; 0 means none.
    threshold: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a rate; write a share from 0 to 1 as `5%` or `0.05`")]
pub struct RateError(pub String);

impl Rate {
    pub const NONE: Rate = Rate { threshold: 0 };
    pub const ALL: Rate = Rate {
        threshold: u64::MAX,
    };

    /// Reads `5%`, `0.5 %`, `0.05`, `1` or `0`.
    pub fn parse(text: &str) -> Result<Rate, RateError> {
        let bad = || RateError(text.chars().take(64).collect());
        let t = text.trim();
        let (number, scale) = match t.strip_suffix('%') {
            Some(n) => (n.trim_end(), 100.0),
            None => (t, 1.0),
        };
        // Plain decimal digits only: `inf`, `NaN` and exponents are typos.
        let plain = !number.is_empty()
            && number.bytes().all(|b| b.is_ascii_digit() || b == b'.')
            && number.bytes().filter(|b| *b == b'.').count() <= 1;
        if !plain {
            return Err(bad());
        }
        let share = number.parse::<f64>().map_err(|_| bad())? / scale;
        if !(0.0..=1.0).contains(&share) {
            return Err(bad());
        }
        Ok(Rate::from_share(share))
    }

    /// `share` clamped to [0, 1].
    pub fn from_share(share: f64) -> Rate {
        let share = share.clamp(0.0, 1.0);
        if share >= 1.0 {
            return Rate::ALL;
        }
        // Below 1 the product is below 2^64, and the cast rounds down.
        Rate {
            threshold: (share * 18_446_744_073_709_551_616.0) as u64,
        }
    }

    /// The share, for display.
    pub fn share(self) -> f64 {
        if self == Rate::ALL {
            return 1.0;
        }
        self.threshold as f64 / 18_446_744_073_709_551_616.0
    }

    pub fn is_none(self) -> bool {
        self.threshold == 0
    }

    /// Whether a uniform 64-bit `draw` falls within the share.
    pub fn picks(self, draw: u64) -> bool {
        self == Rate::ALL || draw < self.threshold
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_and_fractions_read_alike() {
        assert_eq!(Rate::parse("5%"), Ok(Rate::from_share(0.05)));
        assert_eq!(Rate::parse(" 0.05 "), Ok(Rate::from_share(0.05)));
        assert_eq!(Rate::parse("100%"), Ok(Rate::ALL));
        assert_eq!(Rate::parse("1"), Ok(Rate::ALL));
        assert_eq!(Rate::parse("0%"), Ok(Rate::NONE));
        assert!((Rate::parse("12.5%").unwrap().share() - 0.125).abs() < 1e-12);
        for bad in [
            "", "%", "5", "101%", "-1%", "1.5", "1e-2", "NaN", "inf", "5%%", "0.0.1",
        ] {
            assert!(Rate::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_rate_picks_draws_below_its_share() {
        let half = Rate::from_share(0.5);
        assert!(half.picks(0));
        assert!(half.picks(u64::MAX / 2 - 1));
        assert!(!half.picks(u64::MAX / 2 + 1));
        assert!(Rate::ALL.picks(u64::MAX));
        assert!(!Rate::NONE.picks(0));
    }
}
