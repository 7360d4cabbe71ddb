//! Baselines every run is compared with.

use rand::Rng;

use crate::config::{Checked, EnvConfig, PlannerConfig, PolicyKind};
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
    fn propensity(&self, obs: &Observation, _slot: usize, _index: usize) -> f64 {
        1.0 / obs.candidates.len().max(1) as f64
    }
    fn probabilities(&self, obs: &Observation, _explore: bool) -> Option<Vec<f64>> {
        Some(super::uniform(obs, obs.candidates.len()))
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
    fn probabilities(&self, obs: &Observation, _explore: bool) -> Option<Vec<f64>> {
        Some(super::one_hot(obs, 0))
    }
    /// The business score (candidates come ordered by it).
    fn scores(&self, obs: &Observation) -> Option<Vec<f64>> {
        Some(obs.candidates.iter().map(|c| c.final_score).collect())
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
        Ok(MostViewedPolicy::choose(obs))
    }
    fn probabilities(&self, obs: &Observation, _explore: bool) -> Option<Vec<f64>> {
        Some(super::one_hot(obs, MostViewedPolicy::choose(obs)))
    }
    fn scores(&self, obs: &Observation) -> Option<Vec<f64>> {
        Some(obs.candidates.iter().map(|c| c.views as f64).collect())
    }
}

impl MostViewedPolicy {
    /// The first candidate with the most views.
    pub fn choose(obs: &Observation) -> usize {
        let mut best = 0;
        for (k, c) in obs.candidates.iter().enumerate() {
            if c.views > obs.candidates[best].views {
                best = k;
            }
        }
        best
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
        Ok(argmax(&self.values(obs)))
    }
    fn probabilities(&self, obs: &Observation, _explore: bool) -> Option<Vec<f64>> {
        Some(super::one_hot(obs, argmax(&self.values(obs))))
    }
    /// The expected reward under the memoryless response model.
    fn scores(&self, obs: &Observation) -> Option<Vec<f64>> {
        Some(self.values(obs))
    }
}

impl OraclePolicy {
    fn values(&self, obs: &Observation) -> Vec<f64> {
        obs.candidates.iter().map(|c| self.expected_reward(self.model.expected_p(&obs.user, c.category))).collect()
    }
}

/// The first index of the largest value (0 for none).
fn argmax(values: &[f64]) -> usize {
    let mut best = (f64::NEG_INFINITY, 0);
    for (k, &v) in values.iter().enumerate() {
        if v > best.0 {
            best = (v, k);
        }
    }
    best.1
}

/// Knows the whole user model and the user's latent state (satiation, drifted interests,
/// follows, where the session stands): shows the candidate with the highest expected
/// immediate reward. With every dynamic off it chooses as [`OraclePolicy`] does.
#[derive(Debug, Clone, Copy)]
pub struct MyopicOraclePolicy;

impl MyopicOraclePolicy {
    /// The best candidate by expected immediate reward (ties: the lower slot).
    pub fn choose(obs: &Observation) -> usize {
        argmax(&Self::values(obs))
    }

    /// Each candidate's true expected reward now, from the latent state.
    fn values(obs: &Observation) -> Vec<f64> {
        let t = &obs.truth;
        obs.candidates.iter().map(|c| t.model.expected_reward(&obs.user, &t.latent, c.video, t.now)).collect()
    }
}

impl Policy for MyopicOraclePolicy {
    fn kind(&self) -> PolicyKind {
        PolicyKind::MyopicOracle
    }
    fn act(&mut self, obs: &Observation, _explore: bool, _rng: &mut SimRng) -> Result<usize> {
        Ok(Self::choose(obs))
    }
    fn probabilities(&self, obs: &Observation, _explore: bool) -> Option<Vec<f64>> {
        Some(super::one_hot(obs, Self::choose(obs)))
    }
    /// The true expected reward now, from the latent state.
    fn scores(&self, obs: &Observation) -> Option<Vec<f64>> {
        Some(Self::values(obs))
    }
}

/// Plans by Monte Carlo rollouts over the true user model (docs/model.md: Baselines).
/// For every candidate it simulates `rollouts` continuations of at most `depth` steps
/// from a copy of the user's latent state: the candidate first, then at each step the
/// myopic oracle's choice among videos like the current candidates (the feed's next
/// slates are assumed to look like this one). A rollout adds up the expected reward of
/// each step, weighted by the chance that the session is still going (the product of the
/// earlier steps' continue probabilities) and discounted by `gamma`; responses are drawn
/// only to move the latent state on. Every candidate is scored on the same rollout draws
/// (common random numbers), so the comparison between them is not noise.
///
/// The retention-aware planner (`retention_planner`) also prices churn: on a calendar it
/// knows the user's satisfaction S and the session's return so far R0, and each rollout
/// also draws the session's course (rewards and leaving, as the user model would) for a
/// sampled return R; a candidate's value loses `churn_weight` times the mean over its
/// rollouts of the return model's chance that the user churns after a session returning
/// R0 + R: exp(-churn_days x the day-average return rate at the satisfaction that leaves).
/// Outside a calendar S is the reference satisfaction and R0 is 0.
#[derive(Debug, Clone)]
pub struct PlannerPolicy {
    config: PlannerConfig,
    rules: crate::config::EnvConfig,
    /// The return model and the churn horizon in days (retention-aware only).
    retention: Option<(crate::model::returns::ReturnModel, f64)>,
    reference: f64,
}

impl PlannerPolicy {
    pub fn new(config: &Checked) -> PlannerPolicy {
        PlannerPolicy {
            config: config.planner.clone(),
            rules: config.env.clone(),
            retention: None,
            reference: config.calendar.reference,
        }
    }

    /// The retention-aware planner.
    pub fn retention_aware(config: &Checked) -> PlannerPolicy {
        let model = crate::model::returns::ReturnModel::new(&config.calendar);
        PlannerPolicy { retention: Some((model, config.calendar.churn_days as f64)), ..PlannerPolicy::new(config) }
    }

    /// The chance that a user of satisfaction `s` churns after a session returning `r`.
    fn churn_chance(&self, s: f64, r: f64) -> f64 {
        match &self.retention {
            Some((m, days)) => (-days * m.base_rate(m.satisfaction_after(s, r)) * crate::model::returns::DAY_S).exp(),
            None => 0.0,
        }
    }

    /// The mean discounted return of showing candidate `first` and then following the
    /// rollout policy, over the rollouts seeded from `seed`.
    pub fn value(&self, obs: &Observation, first: usize, seed: u64) -> f64 {
        let truth = &obs.truth;
        let m = &truth.model;
        let mut total = 0.0;
        let (satisfaction, so_far) = truth.calendar.map_or((self.reference, 0.0), |c| (c.satisfaction, c.session_return));
        for r in 0..self.config.rollouts as u64 {
            let mut rng = <SimRng as rand::SeedableRng>::seed_from_u64(seed ^ r.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let mut latent = truth.latent.clone();
            let (mut t, mut now, mut weight) = (truth.t, truth.now, 1.0);
            let mut video = obs.candidates[first].video;
            // The sampled course of the session (retention-aware only): its return, and
            // whether the user has left.
            let (mut sampled, mut gone) = (0.0, false);
            for _ in 0..self.config.depth {
                total += weight * m.expected_reward(&obs.user, &latent, video, now);
                weight *= self.config.gamma * m.continue_probability(&obs.user, &latent, t, video, now);
                let resp = m.respond(&obs.user, &latent, t, video, now, &mut rng);
                if !gone {
                    sampled += resp.reward;
                    gone = resp.left;
                }
                m.update(&mut latent, video, resp.action, resp.followed, now);
                now += resp.dt;
                t += 1;
                if self.rules.budget_spent(t) || weight < 1e-6 {
                    break;
                }
                let mut best = (f64::NEG_INFINITY, video);
                for c in &obs.candidates {
                    let v = m.expected_reward(&obs.user, &latent, c.video, now);
                    if v > best.0 {
                        best = (v, c.video);
                    }
                }
                video = best.1;
            }
            if self.retention.is_some() {
                total -= self.config.churn_weight * self.churn_chance(satisfaction, so_far + sampled);
            }
        }
        total / self.config.rollouts as f64
    }
}

impl Policy for PlannerPolicy {
    fn kind(&self) -> PolicyKind {
        if self.retention.is_some() {
            PolicyKind::RetentionPlanner
        } else {
            PolicyKind::Planner
        }
    }
    /// Unknown (NaN): the choice depends on the rollouts' seed, drawn per step, and the
    /// chance of each candidate winning its rollouts has no closed form.
    fn propensity(&self, _obs: &Observation, _slot: usize, _index: usize) -> f64 {
        f64::NAN
    }
    fn act(&mut self, obs: &Observation, _explore: bool, rng: &mut SimRng) -> Result<usize> {
        use rayon::prelude::*;
        let seed: u64 = rng.random();
        // Each candidate's rollouts are a pure function of the observation and the seed,
        // so they run on every core and the choice is the same as one after the other.
        let values: Vec<f64> = (0..obs.candidates.len()).into_par_iter().map(|k| self.value(obs, k, seed)).collect();
        let mut best = (f64::NEG_INFINITY, 0);
        for (k, &v) in values.iter().enumerate() {
            if v > best.0 {
                best = (v, k);
            }
        }
        Ok(best.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::drive::train::{evaluate, paired_gap};
    use crate::world::World;

    fn gap(config: &Checked, episodes: usize) -> crate::stats::Interval {
        let world = std::sync::Arc::new(World::generate(config));
        let myopic = evaluate(config, &world, &mut MyopicOraclePolicy, episodes).unwrap();
        let planner = evaluate(config, &world, &mut PlannerPolicy::new(config), episodes).unwrap();
        paired_gap(&[myopic, planner], PolicyKind::Planner, PolicyKind::MyopicOracle).unwrap()
    }

    #[test]
    fn without_dynamics_the_myopia_gap_vanishes_and_the_myopic_oracle_is_the_oracle() {
        let c = Config::from_toml_str("[planner]\nrollouts = 4\ndepth = 5\n", &[]).unwrap();
        let g = gap(&c, 200);
        assert!(g.mean.abs() <= g.ci95, "{g:?}");
        let world = std::sync::Arc::new(World::generate(&c));
        let oracle = evaluate(&c, &world, &mut OraclePolicy::new(&c), 200).unwrap();
        let myopic = evaluate(&c, &world, &mut MyopicOraclePolicy, 200).unwrap();
        assert_eq!(oracle.returns, myopic.returns);
    }

    #[test]
    fn on_the_longterm_preset_the_planner_beats_the_myopic_oracle() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/longterm.toml");
        let c = Config::load(&path, &[]).unwrap();
        let g = gap(&c, 600);
        assert!(g.mean - g.ci95 > 0.0, "{g:?}");
    }

    #[test]
    fn the_retention_planner_prices_the_return_models_churn_and_without_a_price_plans_as_the_planner() {
        let c = Config::from_toml_str(
            "[calendar]\ndays = 7\ncoupling = 0.5\nreference = 3.0\nsessions_per_day = 1.0\nchurn_days = 7\n[planner]\nrollouts = 4\ndepth = 5\nchurn_weight = 0.0\n",
            &[],
        )
        .unwrap();
        let p = PlannerPolicy::retention_aware(&c);
        assert_eq!(p.kind(), PolicyKind::RetentionPlanner);
        // At the reference satisfaction after a session at the reference: one return a
        // day, so a week away has chance e^-7; a session returning 1 less: e^-7 e^-0.25.
        let at_ref = p.churn_chance(3.0, 3.0);
        assert!((at_ref - (-7.0f64).exp()).abs() < 1e-12);
        let worse = p.churn_chance(3.0, 2.0);
        assert!((worse - (-7.0 * (-0.25f64).exp()).exp()).abs() < 1e-12 && worse > at_ref);
        assert_eq!(PlannerPolicy::new(&c).churn_chance(3.0, -10.0), 0.0, "the planner does not price churn");
        // Without a price the two plan alike.
        let world = std::sync::Arc::new(World::generate(&c));
        let mut env = crate::env::Env::new(&c, world);
        let mut rng = crate::rng::stream(3, crate::rng::Stream::Policy);
        let (mut a, mut b) = (PlannerPolicy::new(&c), p);
        for user in 0..20 {
            let obs = env.reset(user).clone();
            let mut ra = rng.clone();
            assert_eq!(a.act(&obs, false, &mut ra).unwrap(), b.act(&obs, false, &mut rng).unwrap());
        }
    }
}
