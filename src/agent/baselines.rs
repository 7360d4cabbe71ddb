//! Baselines every run is compared with.

use rand::Rng;

use crate::config::{Checked, EnvConfig, PolicyKind};
use crate::env::Observation;
use crate::rng::SimRng;
use crate::world::ResponseModel;
use crate::Result;

use super::Policy;

/// A uniformly random candidate.
#[derive(Debug, Clone, Copy)]
pub struct RandomPolicy;

impl Policy for RandomPolicy {
    fn kind(&self) -> PolicyKind {
        PolicyKind::Random
    }
    fn act(&mut self, obs: &Observation, _explore: bool, rng: &mut SimRng) -> Result<usize> {
        Ok(rng.random_range(0..obs.candidates.len()))
    }
}

/// The best final (business) score: candidates come ordered by it, so slot 0.
#[derive(Debug, Clone, Copy)]
pub struct GreedyPolicy;

impl Policy for GreedyPolicy {
    fn kind(&self) -> PolicyKind {
        PolicyKind::Greedy
    }
    fn act(&mut self, _obs: &Observation, _explore: bool, _rng: &mut SimRng) -> Result<usize> {
        Ok(0)
    }
}

/// The candidate with the most views (ties: the better final score, i.e. lower slot).
#[derive(Debug, Clone, Copy)]
pub struct MostViewedPolicy;

impl Policy for MostViewedPolicy {
    fn kind(&self) -> PolicyKind {
        PolicyKind::MostViewed
    }
    fn act(&mut self, obs: &Observation, _explore: bool, _rng: &mut SimRng) -> Result<usize> {
        let mut best = 0;
        for (k, c) in obs.candidates.iter().enumerate() {
            if c.views > obs.candidates[best].views {
                best = k;
            }
        }
        Ok(best)
    }
}

/// Knows the response model: shows the candidate with the highest expected reward.
#[derive(Debug, Clone)]
pub struct OraclePolicy {
    model: ResponseModel,
    env: EnvConfig,
}

impl OraclePolicy {
    pub fn new(config: &Checked) -> OraclePolicy {
        OraclePolicy { model: ResponseModel::new(config), env: config.env.clone() }
    }

    /// E[reward] of a video with expected watch probability `ep`: the reward is linear in
    /// p, so E[r] = E[p] r_watched + (1 - E[p]) / 3 (r_skipped + r_liked + r_session_end).
    pub fn expected_reward(&self, ep: f64) -> f64 {
        let e = &self.env;
        ep * e.reward_watched + (1.0 - ep) / 3.0 * (e.reward_skipped + e.reward_liked + e.reward_session_end)
    }
}

impl Policy for OraclePolicy {
    fn kind(&self) -> PolicyKind {
        PolicyKind::Oracle
    }
    fn act(&mut self, obs: &Observation, _explore: bool, _rng: &mut SimRng) -> Result<usize> {
        let mut best = (f64::NEG_INFINITY, 0);
        for (k, c) in obs.candidates.iter().enumerate() {
            let value = self.expected_reward(self.model.expected_p(&obs.user, c.category));
            if value > best.0 {
                best = (value, k);
            }
        }
        Ok(best.1)
    }
}
