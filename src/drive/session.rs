//! The one session driver, in two halves that every loop over sessions composes:
//!
//! - [`decide`] (and [`decide_batch`]): the policy acts on an observation and states the
//!   probability with which it chose (the propensity a log needs);
//! - the environment applies the response ([`Env::step`] or [`Env::apply`]; the step
//!   budget is [`crate::config::EnvConfig::budget_spent`], applied there);
//! - [`Learner::feedback`]: builds the step's [`Transition`] (in [`transition`], the one
//!   place one is built), hands it to the learner, and stops on divergence (raised here
//!   only).
//!
//! Training (one session at a time and in lockstep), evaluation, `anatomy`, calendar runs
//! and the benchmark's replay filler are built from these; the server calls `decide` when
//! a recommendation is asked for and applies the reported response when feedback comes.

use crate::agent::{Policy, Transition};
use crate::env::{Env, Observation, State, StepOutcome};
use crate::rng::SimRng;
use crate::{Error, Result};

/// What a policy chose for one observation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub slot: usize,
    /// The probability with which the policy chose `slot` (1 for deterministic policies).
    pub propensity: f64,
    /// `propensity` is an estimate (Thompson sampling's Monte Carlo), not exact.
    pub estimated: bool,
}

/// The decide half: `policy` acts on `obs` (exploring when `explore`), drawing from `rng`.
#[inline]
pub fn decide(policy: &mut dyn Policy, obs: &Observation, explore: bool, rng: &mut SimRng) -> Result<Decision> {
    let slot = policy.act(obs, explore, rng)?;
    Ok(Decision { slot, propensity: policy.propensity(obs, slot, 0), estimated: policy.propensity_estimated() })
}

/// [`decide`] for several observations at once (one batched forward pass for learners).
#[inline]
pub fn decide_batch(policy: &mut dyn Policy, obs: &[&Observation], explore: bool, rng: &mut SimRng) -> Result<Vec<Decision>> {
    let slots = policy.act_batch(obs, explore, rng)?;
    Ok(slots
        .iter()
        .enumerate()
        .map(|(row, &slot)| Decision {
            slot,
            propensity: policy.propensity(obs[row], slot, row),
            estimated: policy.propensity_estimated(),
        })
        .collect())
}

/// How a step ends, for its transition.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StepEnd {
    /// The session goes on: the next state follows.
    Continues,
    /// The step budget ended the episode: the target still bootstraps from the next state.
    Truncated,
    /// The session is over (the user left, or nothing is left to show): no bootstrap.
    Terminal,
    /// A calendar session's last step, leading to the user's next session after a gap
    /// whose time discount multiplies the bootstrap.
    NextSession { discount: f64 },
}

impl StepEnd {
    /// How a simulated step ended: `dry` says the next observation has no candidate left,
    /// which ends the session like a terminal state (nothing can follow to bootstrap from).
    #[inline]
    pub fn of(o: &StepOutcome, dry: bool) -> StepEnd {
        if o.terminal || dry {
            StepEnd::Terminal
        } else if o.truncated {
            StepEnd::Truncated
        } else {
            StepEnd::Continues
        }
    }

    /// Whether the episode (the session) ends here.
    #[inline]
    pub fn ends_episode(self) -> bool {
        self != StepEnd::Continues
    }
}

/// The one place a transition is built: `action` in `state` earned `reward` and led to
/// `next_state`, ending as `end` says.
#[inline]
pub fn transition(state: State, action: usize, reward: f64, next_state: State, end: StepEnd) -> Transition {
    let (terminal, discount) = match end {
        StepEnd::Continues | StepEnd::Truncated => (false, 1.0),
        StepEnd::Terminal => (true, 1.0),
        StepEnd::NextSession { discount } => (false, discount),
    };
    Transition { state, action, reward, next_state, terminal, episode_end: end.ends_episode(), discount }
}

/// The learner's side of feedback: hands transitions to the policy and counts its updates.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Learner {
    /// Updates made so far.
    pub updates: u64,
}

impl Learner {
    /// A learner that has made `updates` updates (a resumed run).
    #[inline]
    pub fn resumed(updates: u64) -> Learner {
        Learner { updates }
    }

    /// Hands `transition` to `policy`; returns the loss of any update it made. A loss that
    /// is not a finite number ends the run with [`Error::Diverged`] (`episode`: the
    /// training episode it happened in, for the message): nothing after it would mean
    /// anything.
    #[inline]
    pub fn feed(
        &mut self,
        policy: &mut dyn Policy,
        transition: Transition,
        rng: &mut SimRng,
        episode: u32,
    ) -> Result<Option<f64>> {
        let Some(loss) = policy.observe(transition, rng)? else { return Ok(None) };
        if !loss.is_finite() {
            return Err(Error::Diverged { loss, update: self.updates + 1, episode });
        }
        self.updates += 1;
        Ok(Some(loss))
    }

    /// The feedback half for a simulated step: the step taken in `state` with outcome `o`
    /// led to `next`; builds its transition and feeds it. Returns the loss of any update
    /// and how the step ended.
    #[inline]
    pub fn feedback(
        &mut self,
        policy: &mut dyn Policy,
        rng: &mut SimRng,
        episode: u32,
        state: State,
        o: &StepOutcome,
        next: &Observation,
    ) -> Result<(Option<f64>, StepEnd)> {
        let end = StepEnd::of(o, next.exhausted());
        let loss = self.feed(policy, transition(state, o.slot, o.reward, next.state.clone(), end), rng, episode)?;
        Ok((loss, end))
    }
}

/// What [`play_session`] returns.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Played {
    pub steps: u32,
    /// The session's return: the sum of its rewards.
    pub ret: f64,
}

/// What [`play_session`] calls after every step: (t, env, observation, outcome).
pub type OnStep<'a> = &'a mut dyn FnMut(u32, &Env, &Observation, &StepOutcome);

/// Runs one session of `env` (already reset to its user) under `policy` without learning,
/// calling `on_step` after every step when given (the observation the step was chosen
/// from is copied only then). The user's responses draw from `responses`, the policy from
/// `policy_rng`; each step's seconds watched are added to `watched_s` (a running total the
/// caller keeps across sessions).
pub fn play_session(
    env: &mut Env,
    policy: &mut dyn Policy,
    explore: bool,
    responses: &mut SimRng,
    policy_rng: &mut SimRng,
    watched_s: &mut f64,
    mut on_step: Option<OnStep<'_>>,
) -> Result<Played> {
    let (mut steps, mut ret) = (0u32, 0.0);
    let mut dry = env.observation().exhausted();
    while !dry {
        let d = decide(policy, env.observation(), explore, policy_rng)?;
        let obs = on_step.is_some().then(|| env.observation().clone());
        let mut o = env.step(d.slot, responses);
        o.propensity = d.propensity;
        o.propensity_estimated = d.estimated;
        if let (Some(f), Some(obs)) = (on_step.as_mut(), &obs) {
            f(steps, env, obs, &o);
        }
        ret += o.reward;
        *watched_s += o.watch_s;
        steps += 1;
        dry = env.observation().exhausted();
        if o.terminal || o.truncated {
            break;
        }
    }
    Ok(Played { steps, ret })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_end_of_a_step_decides_its_transition() {
        let s = State::default();
        let t = transition(s.clone(), 3, 1.5, s.clone(), StepEnd::Continues);
        assert!(!t.terminal && !t.episode_end && t.discount == 1.0 && t.action == 3 && t.reward == 1.5);
        let t = transition(s.clone(), 0, 0.0, s.clone(), StepEnd::Truncated);
        assert!(!t.terminal && t.episode_end && t.discount == 1.0);
        let t = transition(s.clone(), 0, 0.0, s.clone(), StepEnd::Terminal);
        assert!(t.terminal && t.episode_end && t.discount == 1.0);
        let t = transition(s.clone(), 0, 0.0, s, StepEnd::NextSession { discount: 0.5 });
        assert!(!t.terminal && t.episode_end && t.discount == 0.5);
    }

    /// A learner whose second update reports a loss that is not finite.
    struct Exploding {
        seen: u32,
    }

    impl Policy for Exploding {
        fn kind(&self) -> crate::config::PolicyKind {
            crate::config::PolicyKind::Dqn
        }
        fn act(&mut self, _obs: &Observation, _explore: bool, _rng: &mut SimRng) -> Result<usize> {
            Ok(0)
        }
        fn observe(&mut self, _t: Transition, _rng: &mut SimRng) -> Result<Option<f64>> {
            self.seen += 1;
            Ok(Some(if self.seen == 2 { f64::NAN } else { 0.25 }))
        }
    }

    #[test]
    fn a_loss_that_is_not_finite_stops_the_learner_with_its_update_and_episode() {
        let mut rng = crate::rng::stream(1, crate::rng::Stream::Replay);
        let mut learner = Learner::default();
        let mut p = Exploding { seen: 0 };
        let t = transition(State::default(), 0, 0.0, State::default(), StepEnd::Continues);
        assert_eq!(learner.feed(&mut p, t.clone(), &mut rng, 4).unwrap(), Some(0.25));
        match learner.feed(&mut p, t, &mut rng, 5) {
            Err(Error::Diverged { loss, update, episode }) => {
                assert!(loss.is_nan());
                assert_eq!((update, episode), (2, 5));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(learner.updates, 1);
    }
}
