//! The public environment API, in the spirit of Gymnasium: build the world once, then
//! `reset` and `step` episodes one at a time, from any language that can call Rust.
//!
//! An episode is one session of one user. `reset` seeds the episode's streams the way
//! `fypsim run` seeds its evaluation episodes: episode `k` under seed `s` draws its user
//! and the user's responses from the evaluation stream `(s, k)` and the policy's draws from
//! the policy stream `(s, k)`, so for a run's config and seed, episode `k` driven by a
//! built-in baseline reproduces row `k` of that baseline in `eval_episodes.csv`.
//!
//! With [`Streams::Training`] episodes draw instead from the continuing streams of
//! `fypsim run`'s training loop (its users, responses and policy streams, in the world
//! `train.train_world` names), so a baseline driven through the API reproduces the
//! training episodes of a run of that baseline, and its step log equals the run's
//! `steps.parquet`.
//!
//! Two rules differ from fypsim's own loops, because Gymnasium has no zero-step episode:
//! a user with nothing left to see at `reset` is redrawn (the next draw of the same
//! stream, deterministically); and a feed that runs dry mid-episode ends the episode as
//! terminated, as the trainer treats it.

use std::collections::BTreeMap;
use std::sync::Arc;

use rand::Rng;

use crate::agent::{make_policy, Policy};
use crate::config::{Checked, EvalWorld, PolicyKind};
use crate::drive::session::{decide, StepEnd};
use crate::drive::train::StepRecord;
use crate::env::{Env, Observation};
use crate::rng::{stream, substream, SimRng, Stream};
use crate::world::{Action, World};
use crate::{Error, Result};

/// Which world an episode starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartWorld {
    /// The generated world: every episode independent of the others (what `fypsim run`
    /// evaluates on with `train.eval_world = "fresh"`).
    Fresh,
    /// The world as the episodes before left it: shown videos stay in the matrix and the
    /// users' histories (as in training, and evaluation with `eval_world = "evolving"`).
    Evolving,
}

/// Which random streams the episodes draw from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Streams {
    /// Episode `k` under seed `s` draws from the evaluation streams `(s, k)`: episodes
    /// are independent of each other and of the order they are played in (the default).
    #[default]
    Evaluation,
    /// Episodes draw, one after the other, from the continuing streams of `fypsim run`'s
    /// training loop for the seed (which user, the responses, the policy's draws); the
    /// episode index only counts. The default world is `train.train_world`.
    Training,
}

/// What `reset` may be told besides the seed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResetOptions {
    /// The episode index (default: one after the last episode; 0 after a new seed).
    pub episode: Option<u64>,
    /// The world the episode starts from (default: the config's `train.eval_world`).
    pub world: Option<StartWorld>,
}

/// Everything a step reveals besides the reward: what the user did, and the truth that only
/// a simulator knows, for analysis and off-policy evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct StepInfo {
    /// The shown video, its category and the slot it was in.
    pub video: u32,
    pub category: u16,
    pub slot: usize,
    /// What the user did with it.
    pub response: Action,
    /// Seconds of the video watched.
    pub watch_s: f64,
    /// The true probabilities of the outcome of showing that video: watched, skipped,
    /// liked, left.
    pub outcome_p: [f64; 4],
    /// Every candidate's true expected reward just before the step, by slot.
    pub expected_rewards: Vec<f64>,
    /// The user's clock when the video was shown, in seconds.
    pub time_s: f64,
    /// Steps taken in the episode, this one included.
    pub t: usize,
    /// Which slots of the next observation hold a candidate.
    pub action_mask: Vec<bool>,
}

/// What `step` returns.
#[derive(Debug, Clone, PartialEq)]
pub struct StepResult {
    pub reward: f64,
    /// The session is over: the user left, or nothing is left to show.
    pub terminated: bool,
    /// The step budget (`env.max_steps`) ended the episode.
    pub truncated: bool,
    pub info: StepInfo,
}

/// The environment for agents outside fypsim's own loops.
pub struct SimEnv {
    config: Checked,
    env: Env,
    /// The generated world's starting point, for fresh episodes (shared, read-only, by
    /// every replica).
    base: Arc<Env>,
    seed: u64,
    next_episode: u64,
    episode: Option<u64>,
    responses: SimRng,
    policy_rng: SimRng,
    over: bool,
    steps: usize,
    baselines: BTreeMap<String, Box<dyn Policy>>,
    streams: Streams,
    /// With [`Streams::Training`]: which user starts each episode.
    users_rng: SimRng,
    /// The steps taken since logging began (None: not logging).
    log: Option<Vec<StepRecord>>,
}

/// What one baseline did on one episode of [`SimEnv::play_baseline`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Played {
    pub episode_return: f64,
    pub steps: u32,
    pub user: u32,
}

impl SimEnv {
    /// Generates the config's world (once); episodes then start with [`SimEnv::reset`].
    /// A config whose world (kept twice: as generated, and as the episodes change it)
    /// would not fit in this machine's memory is refused with the estimate.
    pub fn new(config: &Checked) -> Result<SimEnv> {
        crate::drive::preflight::fits_in_memory(config)?;
        Ok(SimEnv::generate(config))
    }

    /// `n` environments of one config, each with its own state, each equal to one built
    /// by [`SimEnv::new`] (the world is generated once and shared: it does not change; so
    /// is the starting point fresh episodes copy back from). Refused, with the estimate,
    /// when `n` copies of the world's matrix would not fit in this machine's memory.
    pub fn many(config: &Checked, n: usize) -> Result<Vec<SimEnv>> {
        if n == 0 {
            return Err(Error::Other("num_envs must be at least 1".into()));
        }
        crate::drive::preflight::fits_in_memory_envs(config, n)?;
        let first = SimEnv::generate(config);
        let mut envs = Vec::with_capacity(n);
        for _ in 1..n {
            envs.push(first.replica());
        }
        envs.push(first);
        Ok(envs)
    }

    fn generate(config: &Checked) -> SimEnv {
        let world = Arc::new(World::generate(config));
        SimEnv::from_base(config, Arc::new(Env::new(config, world)))
    }

    /// A new environment over the same world, at the generated world's starting point,
    /// as [`SimEnv::new`] would build it (the streams and the logging carry over; no
    /// episode is under way).
    pub fn replica(&self) -> SimEnv {
        let mut r = SimEnv::from_base(&self.config, Arc::clone(&self.base));
        r.streams = self.streams;
        r.log = self.log.as_ref().map(|_| Vec::new());
        r
    }

    /// An environment at `base`, the generated world's starting point.
    fn from_base(config: &Checked, base: Arc<Env>) -> SimEnv {
        let mut env = Env::clone(&base);
        env.track_changes();
        SimEnv {
            config: config.clone(),
            env,
            base,
            seed: config.seed,
            next_episode: 0,
            episode: None,
            responses: substream(config.seed, Stream::Eval, 0),
            policy_rng: substream(config.seed, Stream::Policy, 0),
            over: true,
            steps: 0,
            baselines: BTreeMap::new(),
            streams: Streams::Evaluation,
            users_rng: stream(config.seed, Stream::EpisodeUsers),
            log: None,
        }
    }

    /// Chooses the streams episodes draw from ([`Streams`]); takes effect at the next
    /// reset with a seed (the training streams start at the seed's beginning).
    pub fn set_streams(&mut self, streams: Streams) {
        self.streams = streams;
    }

    /// Starts (or stops) logging every step as a row of the steps table
    /// ([`crate::drive::steplog`]); starting drops what was logged before.
    pub fn set_logging(&mut self, on: bool) {
        self.log = on.then(Vec::new);
    }

    /// The steps logged so far (in the order they were taken), leaving the log empty.
    pub fn take_log(&mut self) -> Vec<StepRecord> {
        self.log.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// The config the environment runs.
    pub fn config(&self) -> &Checked {
        &self.config
    }

    /// Starts an episode: `seed` (when given) seeds this and every later episode,
    /// restarts the count at 0 and starts from the generated world (a seed restarts the
    /// environment); `options` may name the episode and the world it starts
    /// from. Returns the first observation.
    pub fn reset(&mut self, seed: Option<u64>, options: ResetOptions) -> Result<&Observation> {
        let training = self.streams == Streams::Training;
        if let Some(s) = seed {
            self.seed = s;
            self.next_episode = 0;
            if training {
                self.users_rng = stream(s, Stream::EpisodeUsers);
                self.responses = stream(s, Stream::Responses);
                self.policy_rng = stream(s, Stream::Policy);
            }
        }
        let k = options.episode.unwrap_or(self.next_episode);
        self.next_episode = k.saturating_add(1);
        let default_world = if training { self.config.train.train_world } else { self.config.train.eval_world };
        // A seed restarts the environment: the generated world, whatever world is asked
        // for, so that the same seed gives the same episodes.
        let fresh = seed.is_some()
            || match options.world {
                Some(w) => w == StartWorld::Fresh,
                None => default_world == EvalWorld::Fresh,
            };
        if fresh {
            self.env.reset_to(&self.base);
        }
        let mut rng = if training { self.users_rng.clone() } else { substream(self.seed, Stream::Eval, k) };
        let users = self.env.world.initial_users();
        // A user with nothing left to see has no first step: the next draw of the stream.
        let mut tries = 0;
        loop {
            let user = rng.random_range(0..users) as u32;
            if !self.env.reset(user).exhausted() {
                break;
            }
            tries += 1;
            if tries >= 10_000 {
                self.over = true;
                return Err(Error::Other(format!(
                    "episode {k}: 10,000 users drawn have seen every video the feed could offer; \
                     start from the generated world (world = fresh) or use a larger catalogue"
                )));
            }
        }
        if training {
            self.users_rng = rng;
        } else {
            self.responses = rng;
            self.policy_rng = substream(self.seed, Stream::Policy, k);
        }
        self.episode = Some(k);
        self.over = false;
        self.steps = 0;
        Ok(self.env.observation())
    }

    /// The current observation.
    pub fn observation(&self) -> &Observation {
        self.env.observation()
    }

    /// Whether the episode has ended (or none has begun): `step` needs a `reset` first.
    pub fn is_over(&self) -> bool {
        self.over
    }

    /// The episode under way (None before the first reset).
    pub fn episode(&self) -> Option<u64> {
        self.episode
    }

    /// Which slots of the current observation hold a candidate.
    pub fn action_mask(&self) -> Vec<bool> {
        let obs = self.env.observation();
        (0..self.config.candidates.count).map(|k| k < obs.candidates.len()).collect()
    }

    /// Shows the candidate in `slot` and draws the user's response.
    pub fn step(&mut self, slot: usize) -> Result<StepResult> {
        self.step_with(slot, None)
    }

    /// [`SimEnv::step`], telling the step log the probability with which the acting
    /// policy chose `slot` (its `propensity` column; NaN when not given).
    pub fn step_with(&mut self, slot: usize, propensity: Option<f64>) -> Result<StepResult> {
        if self.over {
            return Err(Error::Other("the episode is over (or never began): call reset() first".into()));
        }
        let obs = self.env.observation();
        if slot >= obs.candidates.len() {
            return Err(Error::Other(format!(
                "action {slot} is not a candidate: allowed 0..{} (slots past the candidates are masked)",
                obs.candidates.len()
            )));
        }
        let truth = &obs.truth;
        let expected_rewards: Vec<f64> =
            obs.candidates.iter().map(|c| truth.model.expected_reward(&obs.user, &truth.latent, c.video, truth.now)).collect();
        let outcome_p =
            truth.model.outcome_probabilities(&obs.user, &truth.latent, truth.t, obs.candidates[slot].video, truth.now);
        let user = self.env.user();
        let mut o = self.env.step(slot, &mut self.responses);
        o.propensity = propensity.unwrap_or(f64::NAN);
        if let Some(log) = &mut self.log {
            log.push(StepRecord::of(self.episode.unwrap_or(0) as u32, self.steps as u32, user, &o));
        }
        self.steps += 1;
        let end = StepEnd::of(&o, self.env.observation().exhausted());
        let (terminated, truncated) = (end == StepEnd::Terminal, end == StepEnd::Truncated);
        self.over = terminated || truncated;
        Ok(StepResult {
            reward: o.reward,
            terminated,
            truncated,
            info: StepInfo {
                video: o.video,
                category: o.category,
                slot: o.slot,
                response: o.response,
                watch_s: o.watch_s,
                outcome_p,
                expected_rewards,
                time_s: o.time_s,
                t: self.steps,
                action_mask: self.action_mask(),
            },
        })
    }

    /// The action a built-in baseline (`random`, `greedy`, `most_viewed`, `oracle`,
    /// `myopic_oracle`, `planner`, `retention_planner`) takes on the current observation,
    /// drawing from the episode's policy stream as `fypsim run`'s evaluation does.
    pub fn baseline_action(&mut self, kind: PolicyKind) -> Result<usize> {
        let (policy, obs, rng) = self.baseline(kind)?;
        Ok(decide(policy, obs, false, rng)?.slot)
    }

    /// A built-in baseline's probability of each slot on the current observation (None for
    /// the planners, whose choice has no closed-form probability); draws nothing.
    pub fn baseline_probabilities(&mut self, kind: PolicyKind) -> Result<Option<Vec<f64>>> {
        let (policy, obs, _) = self.baseline(kind)?;
        Ok(policy.probabilities(obs, false))
    }

    /// Plays episode `episode` (in `world`, by default the streams' default) with the
    /// built-in baseline `kind` to its end: `reset`, then `baseline_action` and `step`
    /// until the episode ends, logging its steps when logging is on (with the baseline's
    /// probability of each chosen slot as the propensity, NaN for the planners).
    pub fn play_baseline(&mut self, kind: PolicyKind, episode: u64, world: Option<StartWorld>) -> Result<Played> {
        self.reset(None, ResetOptions { episode: Some(episode), world })?;
        let user = self.env.user();
        let (mut ret, mut steps) = (0.0, 0);
        loop {
            let (policy, obs, rng) = self.baseline(kind)?;
            let d = decide(policy, obs, false, rng)?;
            let s = self.step_with(d.slot, Some(d.propensity))?;
            ret += s.reward;
            steps += 1;
            if s.terminated || s.truncated {
                return Ok(Played { episode_return: ret, steps, user });
            }
        }
    }

    /// The baseline `kind` (built on first use), the current observation and the
    /// episode's policy stream; refuses "dqn" and calls outside an episode.
    fn baseline(&mut self, kind: PolicyKind) -> Result<(&mut dyn Policy, &Observation, &mut SimRng)> {
        if kind.learns() {
            return Err(Error::Other(format!(
                "\"{kind}\" learns, so it is not a fixed baseline: name random, greedy, most_viewed, oracle, myopic_oracle, planner or retention_planner"
            )));
        }
        if self.over {
            return Err(Error::Other("the episode is over (or never began): call reset() first".into()));
        }
        let policy = match self.baselines.entry(kind.name().to_string()) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => e.insert(make_policy(kind, &self.config)?),
        };
        Ok((policy.as_mut(), self.env.observation(), &mut self.policy_rng))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::drive::train::evaluate;

    fn play(api: &mut SimEnv, kind: PolicyKind, k: u64, world: StartWorld) -> (f64, u32) {
        api.reset(None, ResetOptions { episode: Some(k), world: Some(world) }).unwrap();
        let (mut ret, mut n) = (0.0, 0);
        loop {
            let a = api.baseline_action(kind).unwrap();
            let s = api.step(a).unwrap();
            ret += s.reward;
            n += 1;
            if s.terminated || s.truncated {
                return (ret, n);
            }
        }
    }

    #[test]
    fn episodes_reproduce_the_evaluation_of_fypsim_run_in_both_worlds() {
        for (world, name) in [(StartWorld::Fresh, "fresh"), (StartWorld::Evolving, "evolving")] {
            let c = Config::from_toml_str(
                &format!("[world]\nn_videos = 400\nn_users = 60\n[env]\nmax_steps = 15\n[train]\neval_world = \"{name}\"\n"),
                &[],
            )
            .unwrap();
            for kind in [PolicyKind::Random, PolicyKind::Greedy, PolicyKind::Oracle] {
                let mut api = SimEnv::new(&c).unwrap();
                let e = evaluate(&c, &api.env.world.clone(), make_policy(kind, &c).unwrap().as_mut(), 25).unwrap();
                for k in 0..25 {
                    let (ret, n) = play(&mut api, kind, k, world);
                    assert_eq!((ret, n), (e.returns[k as usize], e.steps[k as usize]), "{kind} {name} episode {k}");
                }
            }
        }
    }

    #[test]
    fn replicas_play_what_their_own_environments_would() {
        let c = Config::from_toml_str("[world]\nn_videos = 300\nn_users = 30\n[env]\nmax_steps = 12\n", &[]).unwrap();
        let mut many = SimEnv::many(&c, 3).unwrap();
        let mut alone = SimEnv::new(&c).unwrap();
        let run = |e: &mut SimEnv, seed: u64| -> Vec<(u32, f64)> {
            e.reset(Some(seed), ResetOptions::default()).unwrap();
            let mut out = Vec::new();
            for _ in 0..6 {
                let user = e.observation().user.id;
                let mut ret = 0.0;
                loop {
                    let a = e.baseline_action(PolicyKind::Random).unwrap();
                    let s = e.step(a).unwrap();
                    ret += s.reward;
                    if s.terminated || s.truncated {
                        break;
                    }
                }
                out.push((user, ret));
                e.reset(None, ResetOptions::default()).unwrap();
            }
            out
        };
        assert_eq!(run(&mut many[2], 5), run(&mut alone, 5));
        assert_eq!(run(&mut many[0], 5), run(&mut many[1], 5));
        assert!(SimEnv::many(&c, 0).is_err());
    }

    #[test]
    fn the_step_log_has_a_row_per_step_with_the_propensity_given() {
        let c = Config::from_toml_str("[world]\nn_videos = 300\nn_users = 30\n[dynamics.fatigue]\nrate = 0.01\n", &[]).unwrap();
        let mut api = SimEnv::new(&c).unwrap();
        api.set_logging(true);
        let p = api.play_baseline(PolicyKind::Random, 4, None).unwrap();
        let log = api.take_log();
        assert_eq!(log.len(), p.steps as usize);
        assert!(log.iter().enumerate().all(|(t, r)| r.episode == 4 && r.t as usize == t && r.user == p.user));
        let d = log[0].detail.as_ref().expect("a dynamic on: the detail columns");
        assert!((d.propensity - 1.0 / d.offered.len() as f64).abs() < 1e-12, "{}", d.propensity);
        api.reset(None, ResetOptions::default()).unwrap();
        api.step(0).unwrap();
        assert!(api.take_log()[0].detail.as_ref().unwrap().propensity.is_nan());
        assert!(api.take_log().is_empty());
    }

    #[test]
    fn bad_calls_are_errors_that_say_what_to_do() {
        let c = Config::from_toml_str("[world]\nn_videos = 300\nn_users = 20\n", &[]).unwrap();
        let mut api = SimEnv::new(&c).unwrap();
        assert!(api.step(0).unwrap_err().to_string().contains("reset() first"));
        api.reset(Some(3), ResetOptions::default()).unwrap();
        assert_eq!(api.episode(), Some(0));
        let e = api.step(10).unwrap_err().to_string();
        assert!(e.contains("not a candidate") && e.contains("0..10"), "{e}");
        assert!(api.baseline_action(PolicyKind::Dqn).is_err());
        let p = api.baseline_probabilities(PolicyKind::Greedy).unwrap().unwrap();
        assert_eq!(p[0], 1.0);
        assert_eq!(api.baseline_probabilities(PolicyKind::Planner).unwrap(), None);
        let s = api.step(0).unwrap();
        assert_eq!(s.info.t, 1);
        assert_eq!(s.info.expected_rewards.len(), 10);
        assert!((s.info.outcome_p.iter().sum::<f64>() - 1.0).abs() < 1e-9, "{:?}", s.info.outcome_p);
        // The next reset is the next episode; a new seed starts again at 0.
        api.reset(None, ResetOptions::default()).unwrap();
        assert_eq!(api.episode(), Some(1));
        api.reset(Some(3), ResetOptions::default()).unwrap();
        assert_eq!(api.episode(), Some(0));
    }
}
