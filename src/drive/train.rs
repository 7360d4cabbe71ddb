//! The episode loop: the environment, a policy, the learning cadence, and the evaluation
//! of policies on common random numbers.

use std::time::Instant;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::agent::Policy;
use crate::config::{Checked, PolicyKind};
use crate::drive::session::{decide, decide_batch, play_session, Learner, Played};
use crate::env::{Env, Observation, Session, State, StepOutcome};
use crate::model::state::SimState;
use crate::platform::candidates::CandidateGenerator;
use crate::rng::SimRng;
use crate::rng::{stream, substream, Stream};
use crate::world::{Action, World};
use crate::Result;
use std::sync::Arc;

/// One training episode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub episode: u32,
    pub t: u32,
    pub user: u32,
    pub video: u32,
    pub slot: u32,
    pub category: u16,
    pub response: Action,
    pub reward: f64,
    /// With a dynamic on: what the user model knew before the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Box<StepDetail>>,
}

impl StepRecord {
    /// The record of step `t` (from 0) of `episode`, a session of `user`: the detail
    /// columns when the step filled them (a dynamic on, or `output.step_detail`).
    pub fn of(episode: u32, t: u32, user: u32, o: &StepOutcome) -> StepRecord {
        StepRecord {
            episode,
            t,
            user,
            video: o.video,
            slot: o.slot as u32,
            category: o.category,
            response: o.response,
            reward: o.reward,
            detail: (!o.offered.is_empty()).then(|| {
                Box::new(StepDetail {
                    watch_s: o.watch_s,
                    expected_p: o.expected_p,
                    expected_reward: o.expected_reward,
                    satiation: o.satiation,
                    left: o.terminal,
                    offered: o.offered.clone(),
                    propensity: o.propensity,
                    propensity_estimated: o.propensity_estimated,
                    time_s: o.time_s,
                    outcome_p: o.outcome_p,
                })
            }),
        }
    }
}

/// The user model's view of one step (users with memory): steps.parquet's extra columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepDetail {
    /// Seconds watched.
    pub watch_s: f64,
    /// E[p] and the expected reward of the shown video before the step's draws.
    pub expected_p: f64,
    pub expected_reward: f64,
    /// Exposure to the shown category before the step.
    pub satiation: f64,
    /// The session ended after this step.
    pub left: bool,
    /// The videos on offer, in slot order.
    pub offered: Vec<u32>,
    /// The probability with which the policy chose the shown slot (epsilon-greedy:
    /// epsilon / n + (1 - epsilon) [the greedy slot]; 1/n for random; 1 for the others).
    #[serde(default = "one")]
    pub propensity: f64,
    /// `propensity` is an estimate (Thompson sampling's Monte Carlo), not exact.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub propensity_estimated: bool,
    /// The user's clock when the video was shown (0 in records written before it existed).
    #[serde(default)]
    pub time_s: f64,
    /// The true probabilities of the step's outcome before its draws: watched, skipped,
    /// liked, left (zeros in records written before they existed).
    #[serde(default)]
    pub outcome_p: [f64; 4],
}

fn one() -> f64 {
    1.0
}

/// The trained policy's evaluation return after `episode` training episodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalPoint {
    pub episode: u32,
    pub mean_return: f64,
    pub ci95: f64,
}

/// Everything a training run has produced so far, and everything it needs to go on
/// exactly where it stopped: a checkpoint saves this beside the agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainProgress {
    pub episodes_done: u32,
    pub episodes: Vec<EpisodeRecord>,
    pub steps: Vec<StepRecord>,
    /// The learning curve (evaluation points).
    pub curve: Vec<EvalPoint>,
    pub total_steps: u64,
    pub updates: u64,
    /// Training seconds over every session of the run.
    pub elapsed_s: f64,
    pub users_rng: SimRng,
    pub response_rng: SimRng,
    pub policy_rng: SimRng,
    pub env: SimState,
    /// Learning across sessions: the population runs done so far (after the episodes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub calendar_runs: Vec<crate::drive::calendar::CalendarRun>,
}

/// Whether training goes on after an episode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

impl TrainProgress {
    /// A run that has not started.
    pub fn new(config: &Checked, env: &Env) -> TrainProgress {
        TrainProgress {
            episodes_done: 0,
            episodes: Vec::new(),
            steps: Vec::new(),
            curve: Vec::new(),
            total_steps: 0,
            updates: 0,
            elapsed_s: 0.0,
            users_rng: stream(config.seed, Stream::EpisodeUsers),
            response_rng: stream(config.seed, Stream::Responses),
            // The bandits draw from a stream of their own (trained as the run's policy or
            // as a baseline alike).
            policy_rng: stream(config.seed, if config.policy.is_bandit() { Stream::Bandit } else { Stream::Policy }),
            env: env.state(),
            calendar_runs: Vec::new(),
        }
    }

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

/// Called after every training episode, with the training state, the environment and the
/// policy (to evaluate or checkpoint); it says whether training goes on.
pub type AfterEpisode<'a> = dyn FnMut(&mut TrainProgress, &Env, &mut dyn Policy) -> Result<Flow> + 'a;

/// Trains (or, for a baseline, just runs) `policy` on `env` from `progress` until
/// `config.train.episodes` episodes are done, calling `after_episode` after each one (to
/// evaluate or checkpoint; evaluation draws from its own streams, so it does not change
/// the training run). `after_episode` can stop the run early.
pub fn train(
    config: &Checked,
    env: &mut Env,
    policy: &mut dyn Policy,
    record_steps: bool,
    progress: &mut TrainProgress,
    after_episode: &mut AfterEpisode,
) -> Result<()> {
    if config.train.sessions > 1 {
        return train_lockstep(config, env, policy, record_steps, progress, after_episode);
    }
    // With fresh training episodes, each starts from the generated world.
    let base = (config.train.train_world == crate::config::EvalWorld::Fresh).then(|| Env::new(config, Arc::clone(&env.world)));
    let mut session_start = Instant::now();
    for episode in progress.episodes_done..config.train.episodes as u32 {
        let started = Instant::now();
        if let Some(base) = &base {
            // The first is a whole copy (the environment handed in may come from anywhere);
            // later ones undo only what the last episode changed.
            env.reset_to(base);
        }
        // A user with nothing left to see has an episode of no steps.
        let mut dry = env.reset_random(&mut progress.users_rng).exhausted();
        let mut ep = EpisodeInProgress::new(episode, env.user(), started);
        while !dry {
            let obs = env.observation();
            let d = decide(policy, obs, true, &mut progress.policy_rng)?;
            let state = obs.state.clone();
            let mut o = env.step(d.slot, &mut progress.response_rng);
            o.propensity = d.propensity;
            o.propensity_estimated = d.estimated;
            let next = env.observation();
            dry = next.exhausted();
            if ep.learn_from(policy, progress, record_steps, state, next, &o)? {
                break;
            }
        }
        if ep.finish(policy, progress, env, after_episode, &mut session_start)? == Flow::Stop {
            break;
        }
    }
    Ok(())
}

/// One training episode under way: what its records need. Both training loops hand
/// steps to the learner and close episodes through it.
struct EpisodeInProgress {
    episode: u32,
    user: u32,
    steps: u32,
    ret: f64,
    loss_sum: f64,
    n_loss: u32,
    started: Instant,
}

impl EpisodeInProgress {
    fn new(episode: u32, user: u32, started: Instant) -> EpisodeInProgress {
        EpisodeInProgress { episode, user, steps: 0, ret: 0.0, loss_sum: 0.0, n_loss: 0, started }
    }

    /// The feedback half of one step (taken in `state`, leading to `next`): hands it to
    /// the learner and records it; returns whether the episode ended there.
    fn learn_from(
        &mut self,
        policy: &mut dyn Policy,
        progress: &mut TrainProgress,
        record_steps: bool,
        state: State,
        next: &Observation,
        o: &StepOutcome,
    ) -> Result<bool> {
        let mut learner = Learner::resumed(progress.updates);
        let (loss, end) = learner.feedback(policy, &mut progress.policy_rng, self.episode, state, o, next)?;
        progress.updates = learner.updates;
        if let Some(loss) = loss {
            self.loss_sum += loss;
            self.n_loss += 1;
        }
        if record_steps {
            progress.steps.push(StepRecord::of(self.episode, self.steps, self.user, o));
        }
        self.ret += o.reward;
        self.steps += 1;
        progress.total_steps += 1;
        Ok(end.ends_episode())
    }

    /// Closes the episode: the policy's per-episode tick, its record, the training clock
    /// (time in `after_episode`, evaluations and checkpoints, is not training time), and
    /// `after_episode`'s verdict.
    fn finish(
        self,
        policy: &mut dyn Policy,
        progress: &mut TrainProgress,
        env: &Env,
        after_episode: &mut AfterEpisode,
        session_start: &mut Instant,
    ) -> Result<Flow> {
        policy.end_episode();
        progress.episodes.push(EpisodeRecord {
            episode: self.episode,
            user: self.user,
            steps: self.steps,
            episode_return: self.ret,
            mean_loss: (self.n_loss > 0).then(|| self.loss_sum / self.n_loss as f64),
            epsilon: policy.epsilon(),
            wall_s: self.started.elapsed().as_secs_f64(),
        });
        progress.episodes_done += 1;
        progress.elapsed_s += session_start.elapsed().as_secs_f64();
        let flow = after_episode(progress, env, policy)?;
        *session_start = Instant::now();
        Ok(flow)
    }
}

/// One session of lockstep training in flight.
struct Running {
    session: Session,
    /// Its current observation (None until the next observation phase).
    obs: Option<Observation>,
    episode: EpisodeInProgress,
    /// The step just applied, waiting for its next observation: the state it was taken
    /// in and what happened.
    pending: Option<(State, StepOutcome)>,
}

/// Training with `train.sessions` sessions in flight at once over the one shared world.
/// Each tick: start episodes in free slots (users drawn in slot order); observe every
/// session that needs it, in parallel on `train.threads` threads (observing only reads
/// the world); hand each finished step to the learner in slot order; pick the actions of
/// all running sessions with one batched forward pass; apply them in slot order. The
/// parallel phase only reads, and everything that draws or writes runs in slot order,
/// so a seed gives the same run whatever the thread count.
///
/// Episodes are recorded as they finish; `episode` is the order in which they started.
fn train_lockstep(
    config: &Checked,
    env: &mut Env,
    policy: &mut dyn Policy,
    record_steps: bool,
    progress: &mut TrainProgress,
    after_episode: &mut AfterEpisode,
) -> Result<()> {
    use rayon::prelude::*;
    let threads = match config.train.threads {
        0 => crate::cores(),
        t => t,
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| crate::Error::Other(format!("cannot start {threads} threads for train.sessions: {e}")))?;
    let total = config.train.episodes as u32;
    let mut n_started = progress.episodes_done;
    let mut slots: Vec<Option<Running>> = (0..config.train.sessions).map(|_| None).collect();
    let n_videos = env.world.videos.len();
    let chunk = slots.len().div_ceil(threads);
    let mut generators: Vec<CandidateGenerator> = (0..threads).map(|_| CandidateGenerator::new(n_videos)).collect();
    let mut session_start = Instant::now();
    loop {
        for slot in slots.iter_mut().filter(|s| s.is_none()) {
            if n_started >= total {
                break;
            }
            let user = progress.users_rng.random_range(0..env.world.initial_users()) as u32;
            *slot = Some(Running {
                session: env.start_session(user),
                obs: None,
                episode: EpisodeInProgress::new(n_started, user, Instant::now()),
                pending: None,
            });
            n_started += 1;
        }
        if slots.iter().all(Option::is_none) {
            return Ok(());
        }

        // Observe (in parallel: reads only), one contiguous block of slots per thread,
        // each thread with its own candidate scratch space.
        let shared: &Env = env;
        pool.install(|| {
            slots.par_chunks_mut(chunk).zip(generators.par_iter_mut()).for_each(|(part, g)| {
                for r in part.iter_mut().flatten().filter(|r| r.obs.is_none()) {
                    r.obs = Some(shared.observe_session(&r.session, g));
                }
            });
        });

        // Hand the finished steps to the learner, in slot order; a session whose user has
        // nothing left to see ends (at once, when that is so from its start).
        for slot in slots.iter_mut() {
            let Some(r) = slot.as_mut() else { continue };
            let obs = r.obs.as_ref().expect("observed above");
            let dry = obs.exhausted();
            let ended = match r.pending.take() {
                Some((state, o)) => r.episode.learn_from(policy, progress, record_steps, state, obs, &o)?,
                None => dry,
            };
            if ended {
                let done = slot.take().expect("running").episode;
                if done.finish(policy, progress, env, after_episode, &mut session_start)? == Flow::Stop {
                    return Ok(());
                }
            }
        }

        // Act: one batched forward pass for every running session.
        let running: Vec<usize> = (0..slots.len()).filter(|&i| slots[i].as_ref().is_some_and(|r| r.obs.is_some())).collect();
        if running.is_empty() {
            continue;
        }
        let decisions = {
            let obs: Vec<&Observation> =
                running.iter().map(|&i| slots[i].as_ref().and_then(|r| r.obs.as_ref()).expect("running")).collect();
            decide_batch(policy, &obs, true, &mut progress.policy_rng)?
        };

        // Apply, in slot order.
        for (&i, d) in running.iter().zip(&decisions) {
            let r = slots[i].as_mut().expect("running");
            let obs = r.obs.take().expect("running");
            let mut o = env.apply(&mut r.session, &obs, d.slot, &mut progress.response_rng);
            o.propensity = d.propensity;
            o.propensity_estimated = d.estimated;
            r.pending = Some((obs.state, o));
        }
    }
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
    /// Seconds of video watched per episode (session), on average: reported where videos
    /// are watched in part (`dynamics.behaviour.enabled`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_watch_s: Option<f64>,
    /// Per evaluation episode: its user, return and steps.
    #[serde(skip)]
    pub returns: Vec<f64>,
    #[serde(skip)]
    pub users: Vec<u32>,
    #[serde(skip)]
    pub steps: Vec<u32>,
}

/// The trained policy's (first entry's) return minus `baseline`'s, paired episode by
/// episode, with its 95% interval.
pub fn paired_advantage(evaluation: &[EvalResult], baseline: PolicyKind) -> Option<crate::stats::Interval> {
    let (trained, baselines) = evaluation.split_first()?;
    let b = baselines.iter().find(|e| e.policy == baseline)?;
    let diffs: Vec<f64> = trained.returns.iter().zip(&b.returns).map(|(t, b)| t - b).collect();
    Some(crate::stats::Interval::with(&diffs, crate::stats::Critical::Normal))
}

/// `a`'s return minus `b`'s, paired over the episodes both ran (None unless both are in
/// `results`).
pub fn paired_gap(results: &[EvalResult], a: PolicyKind, b: PolicyKind) -> Option<crate::stats::Interval> {
    let a = results.iter().find(|e| e.policy == a)?;
    let b = results.iter().find(|e| e.policy == b)?;
    let diffs: Vec<f64> = a.returns.iter().zip(&b.returns).map(|(x, y)| x - y).collect();
    Some(crate::stats::Interval::with(&diffs, crate::stats::Critical::Normal))
}

/// Runs `episodes` evaluation episodes with exploration off, from a fresh copy of `world`.
/// Episode k draws its user and its responses from its own stream, the same for every
/// policy (common random numbers), so differences between policies are not noise.
pub fn evaluate(config: &Checked, world: &Arc<World>, policy: &mut dyn Policy, episodes: usize) -> Result<EvalResult> {
    evaluate_with(config, world, policy, episodes, false, None)
}

/// [`evaluate`] that stops after the current episode when a signal asks
/// ([`crate::stop::stop_requested`]), with [`crate::Error::Interrupted`]: for `fypsim eval`,
/// whose evaluation is all it does (a run handles the signal around its evaluations).
pub fn evaluate_until_signal(
    config: &Checked,
    world: &Arc<World>,
    policy: &mut dyn Policy,
    episodes: usize,
) -> Result<EvalResult> {
    evaluate_with(config, world, policy, episodes, true, None)
}

/// One evaluation step, scored with the true response model: what the policy showed
/// against the best candidate on offer (the oracle's choice).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChoiceRecord {
    pub episode: u32,
    pub t: u32,
    pub user: u32,
    pub slot: u32,
    pub category: u16,
    pub interest_match: bool,
    /// E[p] of the shown candidate under the true response model.
    pub expected_p: f64,
    /// The largest E[p] among the candidates.
    pub best_expected_p: f64,
    /// Whether any candidate matched one of the user's interests.
    pub interest_on_offer: bool,
}

/// [`evaluate`], recording every step as a [`ChoiceRecord`].
pub fn evaluate_choices(
    config: &Checked,
    world: &Arc<World>,
    policy: &mut dyn Policy,
    episodes: usize,
) -> Result<(EvalResult, Vec<ChoiceRecord>)> {
    let mut out = Vec::new();
    let r = evaluate_with(
        config,
        world,
        policy,
        episodes,
        true,
        Some(&mut |k, t, _env, obs, o| {
            let (m, tr) = (&obs.truth.model, &obs.truth);
            let ep = |video: u32| m.expected_p(&obs.user, &tr.latent, video, tr.now);
            let best = obs.candidates.iter().map(|c| ep(c.video)).fold(f64::NEG_INFINITY, f64::max);
            let shown = &obs.candidates[o.slot];
            out.push(ChoiceRecord {
                episode: k as u32,
                t,
                user: obs.user.id,
                slot: o.slot as u32,
                category: shown.category,
                interest_match: shown.interest_match,
                expected_p: ep(shown.video),
                best_expected_p: best,
                interest_on_offer: obs.candidates.iter().any(|c| c.interest_match),
            });
        }),
    )?;
    Ok((r, out))
}

/// What a policy's choices cost against the oracle's (see [`ChoiceRecord`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChoiceSummary {
    pub steps: usize,
    /// Share of steps whose shown candidate has the best E[p] on offer.
    pub oracle_match: f64,
    /// Mean of (best E[p] - shown E[p]) per step.
    pub mean_shortfall: f64,
    /// Share of steps that offered a candidate of the user's interests.
    pub interest_on_offer: f64,
    /// Share of those steps where one was shown.
    pub interest_shown_when_offered: f64,
    /// The most frequent misses: (best E[p], shown E[p]) rounded to 3 decimals, with
    /// their share of all steps, most frequent first.
    pub misses: Vec<(f64, f64, f64)>,
}

/// Summarises choice records (at most `top` kinds of miss).
pub fn summarize_choices(records: &[ChoiceRecord], top: usize) -> ChoiceSummary {
    let n = records.len().max(1) as f64;
    let round = |x: f64| (x * 1000.0).round() as i64;
    let mut misses = std::collections::BTreeMap::<(i64, i64), usize>::new();
    for r in records.iter().filter(|r| round(r.expected_p) != round(r.best_expected_p)) {
        *misses.entry((round(r.best_expected_p), round(r.expected_p))).or_default() += 1;
    }
    let mut misses: Vec<((i64, i64), usize)> = misses.into_iter().collect();
    misses.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let offered = records.iter().filter(|r| r.interest_on_offer).count();
    ChoiceSummary {
        steps: records.len(),
        oracle_match: records.iter().filter(|r| round(r.expected_p) == round(r.best_expected_p)).count() as f64 / n,
        mean_shortfall: records.iter().map(|r| r.best_expected_p - r.expected_p).sum::<f64>() / n,
        interest_on_offer: offered as f64 / n,
        interest_shown_when_offered: records.iter().filter(|r| r.interest_on_offer && r.interest_match).count() as f64
            / offered.max(1) as f64,
        misses: misses.into_iter().take(top).map(|((b, c), k)| (b as f64 / 1000.0, c as f64 / 1000.0, k as f64 / n)).collect(),
    }
}

/// [`evaluate`], calling `on_step(episode, t, env, observation, outcome)` after every step
/// when given (with the observation the step was chosen from; only then is it copied).
/// What [`evaluate_with`] calls after every step: (episode, t, env, observation, outcome).
type StepHook<'a> = &'a mut dyn FnMut(u64, u32, &Env, &Observation, &StepOutcome);

fn evaluate_with(
    config: &Checked,
    world: &Arc<World>,
    policy: &mut dyn Policy,
    episodes: usize,
    stop_on_signal: bool,
    mut on_step: Option<StepHook<'_>>,
) -> Result<EvalResult> {
    let mut env = Env::new(config, world.clone());
    // The starting point of every episode, kept only when episodes start afresh (at
    // platform scale a copy of the matrix is gigabytes).
    let base = (config.train.eval_world == crate::config::EvalWorld::Fresh).then(|| env.clone());
    if base.is_some() {
        env.track_changes();
    }
    let mut returns = Vec::with_capacity(episodes);
    let mut users = Vec::with_capacity(episodes);
    let mut steps = Vec::with_capacity(episodes);
    let mut total_steps = 0usize;
    let mut watch_s = 0.0;
    for k in 0..episodes as u64 {
        if stop_on_signal && crate::stop::stop_requested() {
            return Err(crate::Error::Interrupted);
        }
        if let (Some(base), true) = (&base, k > 0) {
            env.reset_to(base);
        }
        let mut rng = substream(config.seed, Stream::Eval, k);
        let mut policy_rng = substream(config.seed, Stream::Policy, k);
        let user = rng.random_range(0..world.initial_users()) as u32;
        env.reset(user);
        let mut hook = on_step.as_mut().map(|f| move |t: u32, e: &Env, obs: &Observation, o: &StepOutcome| f(k, t, e, obs, o));
        let hook = hook.as_mut().map(|h| h as &mut dyn FnMut(u32, &Env, &Observation, &StepOutcome));
        let Played { steps: n, ret } = play_session(&mut env, policy, false, &mut rng, &mut policy_rng, &mut watch_s, hook)?;
        total_steps += n as usize;
        returns.push(ret);
        users.push(user);
        steps.push(n);
    }
    let (mean_return, ci95) = crate::stats::mean_ci(&returns, crate::stats::Critical::Normal);
    Ok(EvalResult {
        policy: policy.kind(),
        episodes,
        mean_return,
        ci95,
        mean_steps: total_steps as f64 / episodes.max(1) as f64,
        mean_watch_s: config.dynamics.behaviour.enabled.then(|| watch_s / episodes.max(1) as f64),
        returns,
        users,
        steps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::baselines::GreedyPolicy;
    use crate::config::Config;

    /// Greedy, except that its first `odd` choices show the last slot instead.
    struct OddStart {
        odd: usize,
    }

    impl Policy for OddStart {
        fn kind(&self) -> PolicyKind {
            PolicyKind::Greedy
        }
        fn act(&mut self, obs: &Observation, explore: bool, rng: &mut SimRng) -> Result<usize> {
            if self.odd > 0 {
                self.odd -= 1;
                return Ok(obs.candidates.len() - 1);
            }
            GreedyPolicy.act(obs, explore, rng)
        }
    }

    #[test]
    fn users_who_have_seen_everything_end_their_sessions_at_once() {
        // 12 videos, 2 users: within a few episodes every video is in both histories.
        let c = Config::from_toml_str(
            "[world]\nn_videos = 12\nn_users = 2\n[history]\ninteractions_mean = 3.0\ninteractions_min = 1\n\
             [train]\nepisodes = 60\ncheckpoint_every = 0\n[env]\nmax_steps = 50\n",
            &[],
        )
        .unwrap();
        let w = Arc::new(World::generate(&c));
        let learner = cfg!(feature = "torch").then_some(PolicyKind::Dqn);
        for kind in
            [PolicyKind::Random, PolicyKind::Greedy, PolicyKind::MostViewed, PolicyKind::Oracle].into_iter().chain(learner)
        {
            let mut policy = crate::agent::make_policy(kind, &c).unwrap();
            let mut env = Env::new(&c, w.clone());
            let mut progress = TrainProgress::new(&c, &env);
            train(&c, &mut env, policy.as_mut(), true, &mut progress, &mut |_, _, _| Ok(Flow::Continue)).unwrap();
            assert_eq!(progress.episodes.len(), 60);
            // Nobody sees a video twice, and the later episodes have nothing left to show.
            let shown: std::collections::HashSet<(u32, u32)> = progress.steps.iter().map(|s| (s.user, s.video)).collect();
            assert_eq!(shown.len(), progress.steps.len(), "{kind}: a video was shown twice to one user");
            assert!(progress.steps.len() <= 24, "{kind}");
            assert_eq!(progress.episodes.last().unwrap().steps, 0, "{kind}");
            let e = evaluate(&c, &w, policy.as_mut(), 30).unwrap();
            assert!(e.steps.iter().all(|&n| n <= 12) && e.mean_return.is_finite(), "{kind}");
        }
    }

    #[test]
    fn fresh_evaluation_episodes_do_not_see_earlier_ones() {
        let config = |world: &str| Config::from_toml_str(&format!("[train]\neval_world = \"{world}\"\n"), &[]).unwrap();
        let (fresh, evolving) = (config("fresh"), config("evolving"));
        let w = Arc::new(World::generate(&fresh));
        let greedy = evaluate(&fresh, &w, &mut GreedyPolicy, 40).unwrap();
        // Other choices in episode 0 only: with fresh worlds, episodes 1.. are the same.
        let odd = evaluate(&fresh, &w, &mut OddStart { odd: 3 }, 40).unwrap();
        assert_ne!(greedy.returns[0], odd.returns[0], "episode 0 differs by construction");
        assert_eq!(greedy.returns[1..], odd.returns[1..]);
        assert_eq!(greedy.steps[1..], odd.steps[1..]);
        // In one evolving world, the views and interactions of earlier episodes change
        // later ones.
        let moving = evaluate(&evolving, &w, &mut GreedyPolicy, 40).unwrap();
        assert_eq!(moving.returns[0], greedy.returns[0], "episode 0 starts from the same world");
        assert_ne!(moving.returns, greedy.returns);
    }
}
