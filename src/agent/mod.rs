//! Policies: the DQN and the baselines share one [`Policy`] trait, so the training loop
//! does not know which one it drives.

#[cfg(feature = "torch")]
pub mod adam;
pub mod bandit;
pub mod baselines;
#[cfg(feature = "torch")]
pub mod dqn;
pub mod epsilon;
pub mod replay;

use crate::config::{Checked, PolicyKind};
use crate::env::{Observation, State};
use crate::rng::SimRng;
use crate::Result;

/// One step of experience.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub state: State,
    pub action: usize,
    pub reward: f64,
    pub next_state: State,
    /// The session ended: the target does not bootstrap from `next_state`.
    pub terminal: bool,
    /// The episode ended here, by session end or by the step budget (n-step returns stop
    /// at episode boundaries).
    pub episode_end: bool,
    /// A discount of the bootstrap beyond the per-step gamma: 1 within a session; across
    /// sessions (a session's last step leading to the user's next session) the time
    /// discount of the gap between them (docs/model.md: Learning across sessions).
    pub discount: f64,
}

/// Chooses which candidate slot to show.
pub trait Policy: Send {
    fn kind(&self) -> PolicyKind;

    /// A slot in `0..obs.candidates.len()`. `explore` is false during evaluation.
    fn act(&mut self, obs: &Observation, explore: bool, rng: &mut SimRng) -> Result<usize>;

    /// A slot for each of several observations (sessions run in lockstep). Draws from
    /// `rng` exactly as `act` called on each observation in order would, so the choices do
    /// not depend on how sessions are batched; learners override it to score all
    /// observations in one forward pass.
    fn act_batch(&mut self, obs: &[&Observation], explore: bool, rng: &mut SimRng) -> Result<Vec<usize>> {
        obs.iter().map(|o| self.act(o, explore, rng)).collect()
    }

    /// The probability with which the last `act` / `act_batch` call chose `slot` for its
    /// `index`-th observation `obs` (the logging policy's propensity, for off-policy
    /// evaluation). Deterministic policies: 1.
    fn propensity(&self, _obs: &Observation, _slot: usize, _index: usize) -> f64 {
        1.0
    }

    /// Whether the last `act`'s propensities are estimates (Thompson sampling's Monte
    /// Carlo), not exact: logs flag them.
    fn propensity_estimated(&self) -> bool {
        false
    }

    /// The probability with which `act(obs, explore, ..)` would choose each slot: one entry
    /// per slot of the state (`obs.state.valid.len()`), zero on masked slots (past the
    /// candidates), summing to one. It changes neither the policy's state nor any random
    /// stream. None where the policy cannot say (the planners, whose rollouts draw).
    fn probabilities(&self, _obs: &Observation, _explore: bool) -> Option<Vec<f64>> {
        None
    }

    /// The score by which the policy ranks each candidate (higher preferred; one per
    /// candidate, in slot order), where it ranks by one. It changes neither the policy's
    /// state nor any random stream.
    fn scores(&self, _obs: &Observation) -> Option<Vec<f64>> {
        None
    }

    /// Learners store the transition and may update; returns the loss of any update.
    fn observe(&mut self, _transition: Transition, _rng: &mut SimRng) -> Result<Option<f64>> {
        Ok(None)
    }

    /// Called after every training episode (epsilon schedules per episode use it).
    fn end_episode(&mut self) {}

    /// The current exploration rate (0 for policies that do not explore).
    fn epsilon(&self) -> f64 {
        0.0
    }

    /// Saves whatever the policy has learned into `dir` (nothing for stateless baselines).
    fn save(&self, _dir: &std::path::Path) -> Result<()> {
        Ok(())
    }

    /// Loads what [`Policy::save`] wrote.
    fn load(&mut self, _dir: &std::path::Path) -> Result<()> {
        Ok(())
    }

    /// The parameters it acts by, flat (a network's weights), when it has them: a copy
    /// of the policy can then serve while this one learns, and take these at chosen
    /// points ([`Policy::set_parameters`]). None: it learns where it acts (a bandit).
    fn parameters(&self) -> Option<Vec<f32>> {
        None
    }

    /// Acts by `parameters` from now on (what [`Policy::parameters`] of a policy of the
    /// same shape gave), bit for bit.
    fn set_parameters(&mut self, _parameters: &[f32]) -> Result<()> {
        Err(crate::Error::Other(format!("a {} policy has no parameters to set", self.kind())))
    }
}

/// The probabilities of a policy that always chooses `slot`, over `obs`'s slots.
pub fn one_hot(obs: &Observation, slot: usize) -> Vec<f64> {
    let mut p = vec![0.0; obs.state.valid.len().max(obs.candidates.len())];
    p[slot] = 1.0;
    p
}

/// The probabilities of a uniform choice among `obs`'s first `n` candidates.
pub fn uniform(obs: &Observation, n: usize) -> Vec<f64> {
    let mut p = vec![0.0; obs.state.valid.len().max(obs.candidates.len())];
    let n = n.min(obs.candidates.len()).max(1);
    p[..n].iter_mut().for_each(|x| *x = 1.0 / n as f64);
    p
}

/// The policy a config names.
pub fn make_policy(kind: PolicyKind, config: &Checked) -> Result<Box<dyn Policy>> {
    Ok(match kind {
        #[cfg(not(feature = "torch"))]
        PolicyKind::Dqn => {
            return Err(crate::Error::Other(
                "policy \"dqn\" needs libtorch: this fypsim was built without the `torch` feature".into(),
            ))
        }
        #[cfg(feature = "torch")]
        PolicyKind::Dqn => {
            // tch panics where libtorch fails (an allocation it cannot make, say): that is
            // an error of this run, not a crash of the process.
            let built = std::panic::catch_unwind(|| dqn::DqnAgent::new(config)).unwrap_or_else(|payload| {
                Err(crate::Error::Other(format!(
                    "libtorch could not build the Q-network ({}); check dqn.hidden and dqn.embeddings",
                    crate::panic_message(payload.as_ref()).lines().next().unwrap_or("")
                )))
            });
            Box::new(built?)
        }
        PolicyKind::Random => Box::new(baselines::RandomPolicy),
        PolicyKind::Greedy => Box::new(baselines::GreedyPolicy),
        PolicyKind::MostViewed => Box::new(baselines::MostViewedPolicy),
        PolicyKind::Oracle => Box::new(baselines::OraclePolicy::new(config)),
        PolicyKind::MyopicOracle => Box::new(baselines::MyopicOraclePolicy),
        PolicyKind::Planner => Box::new(baselines::PlannerPolicy::new(config)),
        PolicyKind::RetentionPlanner => Box::new(baselines::PlannerPolicy::retention_aware(config)),
        PolicyKind::LinUcb | PolicyKind::Thompson | PolicyKind::EpsilonGreedy => Box::new(bandit::Bandit::new(kind, config)),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::Config;
    use crate::env::Env;
    use crate::rng::{stream, Stream};
    use crate::world::World;
    use std::sync::Arc;

    /// Observations along a few greedy sessions of a small world with users with memory.
    pub(crate) fn observations(c: &Checked) -> Vec<Observation> {
        let mut env = Env::new(c, Arc::new(World::generate(c)));
        let mut rng = stream(1, Stream::Eval);
        let mut out = Vec::new();
        for user in 0..25 {
            env.reset(user);
            for t in 0..8 {
                let obs = env.observation().clone();
                if obs.exhausted() {
                    break;
                }
                let o = env.step(t % obs.candidates.len(), &mut rng);
                out.push(obs);
                if o.terminal || o.truncated {
                    break;
                }
            }
        }
        out
    }

    pub(crate) fn config() -> Checked {
        Config::from_toml_str(
            "[world]\nn_videos = 300\nn_users = 30\n[dynamics.satiation]\nstrength = 0.5\n[dynamics.quality]\nsd = 0.3\n",
            &[],
        )
        .unwrap()
    }

    /// `probabilities` is a distribution over the slots, zero past the candidates, and the
    /// propensity `act` then states is its entry for the chosen slot.
    pub(crate) fn check_policy(policy: &mut dyn Policy, obs: &[Observation], explore: bool) {
        let mut rng = stream(9, Stream::Policy);
        for o in obs {
            let p = policy.probabilities(o, explore).unwrap_or_else(|| panic!("{}: no probabilities", policy.kind()));
            assert_eq!(p.len(), o.state.valid.len(), "{}", policy.kind());
            assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-9, "{}: {p:?}", policy.kind());
            assert!(p[o.candidates.len()..].iter().all(|&x| x == 0.0), "{}: mass on masked slots", policy.kind());
            assert_eq!(policy.probabilities(o, explore), Some(p.clone()), "{}: changed by asking", policy.kind());
            let slot = policy.act(o, explore, &mut rng).unwrap();
            let logged = policy.propensity(o, slot, 0);
            assert!((logged - p[slot]).abs() < 1e-12, "{}: propensity {logged} against {}", policy.kind(), p[slot]);
            if let Some(s) = policy.scores(o) {
                assert_eq!(s.len(), o.candidates.len(), "{}", policy.kind());
            }
        }
    }

    #[test]
    fn every_baseline_states_the_probabilities_it_acts_by() {
        let c = config();
        let obs = observations(&c);
        assert!(obs.len() > 20);
        for kind in [PolicyKind::Random, PolicyKind::Greedy, PolicyKind::MostViewed, PolicyKind::Oracle, PolicyKind::MyopicOracle]
        {
            let mut p = make_policy(kind, &c).unwrap();
            for explore in [false, true] {
                check_policy(p.as_mut(), &obs, explore);
            }
        }
        // The planners draw their rollouts' seed: their probabilities are unknown.
        for kind in [PolicyKind::Planner, PolicyKind::RetentionPlanner] {
            let p = make_policy(kind, &c).unwrap();
            assert_eq!(p.probabilities(&obs[0], false), None);
            assert!(p.propensity(&obs[0], 0, 0).is_nan());
        }
    }

    /// A step from `o` showing `slot` for `reward`, for a learner to observe.
    fn step_of(o: &Observation, slot: usize, reward: f64) -> Transition {
        Transition {
            state: o.state.clone(),
            action: slot,
            reward,
            next_state: o.state.clone(),
            terminal: false,
            episode_end: false,
            discount: 1.0,
        }
    }

    /// The bandits, trained a little on the observations (so that their choices are not
    /// all ties), state the probabilities they act by: LinUCB and epsilon-greedy exactly,
    /// Thompson sampling by its Monte Carlo estimate (the same one its propensity logs).
    #[test]
    fn every_bandit_states_the_probabilities_it_acts_by() {
        let mut c: Config = (*config()).clone();
        c.bandit.propensity_draws = 2000;
        let c = c.check().unwrap();
        let obs = observations(&c);
        for kind in PolicyKind::BANDITS {
            let mut p = make_policy(kind, &c).unwrap();
            let mut rng = stream(3, Stream::Bandit);
            for (i, o) in obs.iter().enumerate() {
                p.observe(step_of(o, i % o.candidates.len(), [1.0, -1.0, 2.0][i % 3]), &mut rng).unwrap();
            }
            for explore in [false, true] {
                check_policy(p.as_mut(), &obs, explore);
            }
            assert_eq!(p.propensity_estimated(), kind == PolicyKind::Thompson, "{kind}");
        }
        // Thompson sampling without draws cannot say: NaN, like the planner.
        let mut ts = make_policy(PolicyKind::Thompson, &config()).unwrap();
        assert_eq!(ts.probabilities(&obs[0], true), None);
        let slot = ts.act(&obs[0], true, &mut stream(1, Stream::Bandit)).unwrap();
        assert!(ts.propensity(&obs[0], slot, 0).is_nan());
    }

    /// Thompson sampling's estimated probabilities match how often it chooses each slot.
    #[test]
    fn thompson_chooses_with_the_frequencies_it_estimates() {
        let mut c: Config = (*config()).clone();
        c.bandit.propensity_draws = 20_000;
        let c = c.check().unwrap();
        let obs = observations(&c);
        let mut p = make_policy(PolicyKind::Thompson, &c).unwrap();
        let mut rng = stream(3, Stream::Bandit);
        for (i, o) in obs.iter().enumerate().take(6) {
            p.observe(step_of(o, i % o.candidates.len(), 1.0), &mut rng).unwrap();
        }
        let o = &obs[10];
        let probs = p.probabilities(o, true).unwrap();
        assert!(probs.iter().filter(|&&x| x > 0.02).count() >= 2, "a spread to test: {probs:?}");
        let n = 20_000;
        let mut counts = vec![0usize; probs.len()];
        for _ in 0..n {
            counts[p.act(o, true, &mut rng).unwrap()] += 1;
        }
        for (k, &pk) in probs.iter().enumerate() {
            // Both are estimates from 20,000 draws: the difference's sd is sqrt(2) times one's.
            let sd = (2.0 * pk.max(1e-4) * (1.0 - pk) / n as f64).sqrt();
            let f = counts[k] as f64 / n as f64;
            assert!((f - pk).abs() <= 5.0 * sd + 1e-3, "slot {k}: {f} against {pk}");
        }
    }

    #[test]
    fn random_chooses_with_the_frequencies_it_states() {
        let c = config();
        let obs = &observations(&c)[0];
        let mut policy = baselines::RandomPolicy;
        let p = policy.probabilities(obs, true).unwrap();
        let mut rng = stream(5, Stream::Policy);
        let n = 20_000;
        let mut counts = vec![0usize; p.len()];
        for _ in 0..n {
            counts[policy.act(obs, true, &mut rng).unwrap()] += 1;
        }
        for (k, &pk) in p.iter().enumerate() {
            let sd = (pk * (1.0 - pk) / n as f64).sqrt();
            let f = counts[k] as f64 / n as f64;
            assert!((f - pk).abs() <= 5.0 * sd + 1e-12, "slot {k}: {f} against {pk}");
        }
    }
}
