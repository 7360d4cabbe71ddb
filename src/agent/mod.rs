//! Policies: the DQN and the baselines share one [`Policy`] trait, so the training loop
//! does not know which one it drives.

#[cfg(feature = "torch")]
pub mod adam;
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
pub trait Policy {
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
    })
}
