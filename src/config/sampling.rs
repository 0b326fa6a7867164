//! The `sampling` section: which allowed calls are kept for review after the
//! fact, how much of each is kept, and who reviews them.

use std::time::Duration;

use serde::{Deserialize, Deserializer};
use serde_saphyr::Spanned;

use super::raw::Env;
use super::validate::Validator;
use crate::rate::Rate;

/// The `sampling` section as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSampling {
    #[serde(default)]
    pub rules: Vec<RawSampleRule>,
    pub seed: Option<Scalar>,
    pub max_bytes: Option<Spanned<Env>>,
    #[serde(default)]
    pub redact: Vec<Spanned<Env>>,
    pub retain: Option<Spanned<Env>>,
    pub reviewers: Option<Env>,
    pub queue: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSampleRule {
    pub agent: Option<Env>,
    pub route: Option<Env>,
    pub tool: Option<Env>,
    pub rate: Spanned<Scalar>,
}

/// A value written as text or as a number (`5%`, `0.05`, `42`).
#[derive(Debug, Clone)]
pub struct Scalar(pub String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = Scalar;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number or a string")
            }
            fn visit_str<E>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        d.deserialize_any(Visit)
    }
}

/// Which allowed calls are sampled, and what is kept of them.
#[derive(Debug, Clone)]
pub struct SamplingConfig {
    pub rules: Vec<SampleRule>,
    /// Makes the choice a function of the seed and the request id (see
    /// `sampling::choice`); `None` draws at random.
    pub seed: Option<String>,
    /// The most bytes of each body kept.
    pub max_bytes: usize,
    /// JSON pointers blanked in both bodies before storing.
    pub redact: Vec<String>,
    /// Items older than this are pruned.
    pub retain: Duration,
    /// The approvers' group that reviews sampled calls (the admin token
    /// always may).
    pub reviewers: Option<String>,
    /// Items waiting for the store; past it new ones are dropped and
    /// counted.
    pub queue: usize,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        SamplingConfig {
            rules: Vec::new(),
            seed: None,
            max_bytes: 64 * 1024,
            redact: Vec::new(),
            retain: Duration::from_secs(30 * 24 * 3600),
            reviewers: None,
            queue: 1024,
        }
    }
}

/// One `sampling.rules` entry: every field given must match.
#[derive(Debug, Clone)]
pub struct SampleRule {
    pub agent: Option<String>,
    pub route: Option<String>,
    pub tool: Option<String>,
    pub rate: Rate,
}

impl SampleRule {
    pub fn matches(&self, agent: &str, route: &str, tool: Option<&str>) -> bool {
        self.agent.as_deref().is_none_or(|a| a == agent)
            && self.route.as_deref().is_none_or(|r| r == route)
            && self.tool.as_deref().is_none_or(|t| Some(t) == tool)
    }
}

impl Validator {
    pub fn sampling(&mut self, raw: Option<&RawSampling>) -> SamplingConfig {
        let mut out = SamplingConfig::default();
        let Some(raw) = raw else { return out };
        for r in &raw.rules {
            match Rate::parse(&r.rate.value.0) {
                Ok(rate) => out.rules.push(SampleRule {
                    agent: r.agent.as_ref().map(|e| e.0.clone()),
                    route: r.route.as_ref().map(|e| e.0.clone()),
                    tool: r.tool.as_ref().map(|e| e.0.clone()),
                    rate,
                }),
                Err(e) => self.problem(&r.rate, format!("`sampling.rules`: {e}")),
            }
        }
        out.seed = raw.seed.as_ref().map(|s| s.0.clone());
        if let Some(m) = &raw.max_bytes {
            out.max_bytes = self.byte_size(m).unwrap_or(out.max_bytes);
        }
        for p in &raw.redact {
            let pointer = p.value.0.trim();
            if pointer.starts_with('/') {
                out.redact.push(pointer.to_string());
            } else {
                let msg = format!(
                    "`sampling.redact`: `{pointer}` is not a JSON pointer; write e.g. `/card_number`"
                );
                self.problem(p, msg);
            }
        }
        out.retain = self.duration_or(raw.retain.as_ref(), out.retain);
        out.reviewers = raw.reviewers.as_ref().map(|g| g.0.clone());
        match &raw.queue {
            Some(q) if q.value == 0 => {
                self.problem(q, "`sampling.queue` must be at least 1".into());
            }
            Some(q) => out.queue = usize::try_from(q.value).unwrap_or(out.queue),
            None => {}
        }
        out
    }
}
