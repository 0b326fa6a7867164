//! Whether one call is sampled.
//!
//! With `sampling.seed` the choice is a function of the seed and the
//! request id: FNV-1a (64-bit) over the seed's bytes, a `0xff` separator
//! and the id's bytes, then the SplitMix64 finalizer to spread the bits;
//! the call is sampled when that draw falls below the rate's threshold
//! ([`Rate::picks`]). The same seed and id always give the same answer, on
//! any worker or replica. Without a seed the draw is random.

use crate::config::SamplingConfig;
use crate::rate::Rate;

/// What picked a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Picked {
    /// An `@sample` annotation on a permit that allowed it.
    Policy,
    /// A `sampling.rules` entry.
    Rule,
}

impl Picked {
    pub fn as_str(self) -> &'static str {
        match self {
            Picked::Policy => "policy",
            Picked::Rule => "rule",
        }
    }
}

/// Whether the allowed call `request_id` of `agent` on `route` (an MCP
/// `tool`, if any) is sampled, given the highest `@sample` rate of its
/// permits. Allocates nothing.
pub fn choose(
    cfg: &SamplingConfig,
    policy_rate: Option<Rate>,
    agent: &str,
    route: &str,
    tool: Option<&str>,
    request_id: &str,
) -> Option<Picked> {
    let rule_rate = cfg
        .rules
        .iter()
        .filter(|r| r.matches(agent, route, tool))
        .map(|r| r.rate)
        .max();
    let (rate, picked) = match (policy_rate, rule_rate) {
        (None, None) => return None,
        (Some(p), Some(r)) if r > p => (r, Picked::Rule),
        (Some(p), _) => (p, Picked::Policy),
        (None, Some(r)) => (r, Picked::Rule),
    };
    if rate.is_none() {
        return None;
    }
    let draw = match &cfg.seed {
        Some(seed) => seeded_draw(seed, request_id),
        None => rand::random::<u64>(),
    };
    rate.picks(draw).then_some(picked)
}

/// The reproducible draw for `request_id` under `seed` (see the module
/// docs).
pub fn seeded_draw(seed: &str, request_id: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    let bytes = seed.bytes().chain([0xff]).chain(request_id.bytes());
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(PRIME);
    }
    // SplitMix64's finalizer.
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SampleRule;

    fn rule(agent: Option<&str>, rate: f64) -> SampleRule {
        SampleRule {
            agent: agent.map(Into::into),
            route: None,
            tool: None,
            rate: Rate::from_share(rate),
        }
    }

    #[test]
    fn the_highest_matching_rate_wins() {
        let cfg = SamplingConfig {
            rules: vec![rule(None, 0.0), rule(Some("bot"), 1.0)],
            ..SamplingConfig::default()
        };
        assert_eq!(
            choose(&cfg, None, "bot", "r", None, "id"),
            Some(Picked::Rule)
        );
        assert_eq!(choose(&cfg, None, "other", "r", None, "id"), None);
        let all = Some(Rate::ALL);
        assert_eq!(
            choose(&cfg, all, "other", "r", None, "id"),
            Some(Picked::Policy)
        );
        assert_eq!(
            choose(&SamplingConfig::default(), None, "a", "r", None, "id"),
            None
        );
    }

    #[test]
    fn a_seeded_draw_is_fixed_and_spread() {
        assert_eq!(seeded_draw("s", "id-1"), seeded_draw("s", "id-1"));
        assert_ne!(seeded_draw("s", "id-1"), seeded_draw("t", "id-1"));
        let cfg = SamplingConfig {
            rules: vec![rule(None, 0.25)],
            seed: Some("42".into()),
            ..SamplingConfig::default()
        };
        let picked = (0..4000)
            .filter(|n| choose(&cfg, None, "a", "r", None, &format!("req-{n}")).is_some())
            .count();
        assert!((800..1200).contains(&picked), "{picked}");
    }
}
