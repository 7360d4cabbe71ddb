//! The episode loop: the environment, a policy, the learning cadence, and the evaluation
//! of policies on common random numbers.

use std::time::Instant;

use rand::Rng;
use serde::Serialize;

use crate::agent::{Policy, Transition};
use crate::config::{Checked, PolicyKind};
use crate::env::Env;
use crate::rng::{stream, substream, Stream};
use crate::world::{Action, World};
use crate::Result;

/// One training episode.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EpisodeRecord {
    pub episode: u32,
    pub user: u32,
    pub steps: u32,
    pub episode_return: f64,
    /// Mean loss of the updates made during the episode (None if there were none).
    pub mean_loss: Option<f64>,
    /// Epsilon at the end of the episode.
    pub epsilon: f64,
    /// Wall-clock seconds the episode took.
    pub wall_s: f64,
}

/// One step of a training episode.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepRecord {
    pub episode: u32,
    pub t: u32,
    pub user: u32,
    pub video: u32,
    pub slot: u32,
    pub category: u16,
    pub response: Action,
    pub reward: f64,
}

/// Everything a training run produced.
#[derive(Debug, Clone, Default)]
pub struct TrainOutcome {
    pub episodes: Vec<EpisodeRecord>,
    pub steps: Vec<StepRecord>,
    pub total_steps: u64,
    pub updates: u64,
    pub elapsed_s: f64,
}

impl TrainOutcome {
    pub fn steps_per_s(&self) -> f64 {
        if self.elapsed_s > 0.0 {
            self.total_steps as f64 / self.elapsed_s
        } else {
            0.0
        }
    }

    /// Mean return over the last `n` episodes (all of them when there are fewer).
    pub fn mean_return_last(&self, n: usize) -> f64 {
        let tail = &self.episodes[self.episodes.len().saturating_sub(n)..];
        if tail.is_empty() {
            return 0.0;
        }
        tail.iter().map(|e| e.episode_return).sum::<f64>() / tail.len() as f64
    }
}

/// Trains (or, for a baseline, just runs) `policy` for `config.train.episodes` episodes on
/// `env`, calling `after_episode` after each one with the policy (to evaluate it, say:
/// evaluation draws from its own streams, so it does not change the training run).
pub fn train(
    config: &Checked,
    env: &mut Env,
    policy: &mut dyn Policy,
    record_steps: bool,
    after_episode: &mut dyn FnMut(&EpisodeRecord, &mut dyn Policy) -> Result<()>,
) -> Result<TrainOutcome> {
    let mut users_rng = stream(config.seed, Stream::EpisodeUsers);
    let mut response_rng = stream(config.seed, Stream::Responses);
    let mut policy_rng = stream(config.seed, Stream::Policy);
    let mut out = TrainOutcome::default();
    let start = Instant::now();
    for episode in 0..config.train.episodes as u32 {
        let t0 = Instant::now();
        env.reset_random(&mut users_rng);
        let user = env.user();
        let (mut ret, mut steps, mut loss_sum, mut n_loss) = (0.0, 0u32, 0.0, 0u32);
        loop {
            let obs = env.observation();
            let slot = policy.act(obs, true, &mut policy_rng)?;
            let state = obs.state.clone();
            let o = env.step(slot, &mut response_rng);
            let transition = Transition {
                state,
                action: o.slot,
                reward: o.reward,
                next_state: env.observation().state.clone(),
                terminal: o.terminal,
                episode_end: o.terminal || o.truncated,
            };
            if let Some(loss) = policy.observe(transition, &mut policy_rng)? {
                loss_sum += loss;
                n_loss += 1;
                out.updates += 1;
            }
            if record_steps {
                out.steps.push(StepRecord {
                    episode,
                    t: steps,
                    user,
                    video: o.video,
                    slot: o.slot as u32,
                    category: o.category,
                    response: o.response,
                    reward: o.reward,
                });
            }
            ret += o.reward;
            steps += 1;
            if o.terminal || o.truncated {
                break;
            }
        }
        policy.end_episode();
        out.total_steps += steps as u64;
        let rec = EpisodeRecord {
            episode,
            user,
            steps,
            episode_return: ret,
            mean_loss: (n_loss > 0).then(|| loss_sum / n_loss as f64),
            epsilon: policy.epsilon(),
            wall_s: t0.elapsed().as_secs_f64(),
        };
        after_episode(&rec, &mut *policy)?;
        out.episodes.push(rec);
    }
    out.elapsed_s = start.elapsed().as_secs_f64();
    Ok(out)
}

/// A policy's returns on the evaluation episodes.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct EvalResult {
    pub policy: PolicyKind,
    pub episodes: usize,
    pub mean_return: f64,
    /// Half-width of the 95% normal confidence interval of the mean, across episodes.
    pub ci95: f64,
    pub mean_steps: f64,
    /// Per evaluation episode: its user, return and steps.
    #[serde(skip)]
    pub returns: Vec<f64>,
    #[serde(skip)]
    pub users: Vec<u32>,
    #[serde(skip)]
    pub steps: Vec<u32>,
}

/// Mean and 95% half-width of a sample.
pub fn mean_ci95(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    if xs.is_empty() {
        return (0.0, 0.0);
    }
    let mean = xs.iter().sum::<f64>() / n;
    if xs.len() < 2 {
        return (mean, 0.0);
    }
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, 1.96 * (var / n).sqrt())
}

/// Runs `episodes` evaluation episodes with exploration off, from a fresh copy of `world`.
/// Episode k draws its user and its responses from its own stream, the same for every
/// policy (common random numbers), so differences between policies are not noise.
pub fn evaluate(
    config: &Checked,
    world: &World,
    policy: &mut dyn Policy,
    episodes: usize,
) -> Result<EvalResult> {
    let mut env = Env::new(config, world.clone());
    let mut returns = Vec::with_capacity(episodes);
    let mut users = Vec::with_capacity(episodes);
    let mut steps = Vec::with_capacity(episodes);
    let mut total_steps = 0usize;
    for k in 0..episodes as u64 {
        let mut rng = substream(config.seed, Stream::Eval, k);
        let mut policy_rng = substream(config.seed, Stream::Policy, k);
        let user = rng.random_range(0..world.users.len()) as u32;
        env.reset(user);
        let (mut ret, mut n) = (0.0, 0u32);
        loop {
            let slot = policy.act(env.observation(), false, &mut policy_rng)?;
            let o = env.step(slot, &mut rng);
            ret += o.reward;
            n += 1;
            if o.terminal || o.truncated {
                break;
            }
        }
        total_steps += n as usize;
        returns.push(ret);
        users.push(user);
        steps.push(n);
    }
    let (mean_return, ci95) = mean_ci95(&returns);
    Ok(EvalResult {
        policy: policy.kind(),
        episodes,
        mean_return,
        ci95,
        mean_steps: total_steps as f64 / episodes.max(1) as f64,
        returns,
        users,
        steps,
    })
}
