//! Off-policy evaluation (docs/ope.md): logs of a fixed, stochastic logging policy in
//! fresh-world sessions, with every candidate's true expected reward and the logging
//! policy's full probability vector; estimators of a target policy's value from such a
//! log; and the simulator's exact truth to measure them against.
//!
//! A side system: it drives the public environment API ([`SimEnv`]) and the policies'
//! `probabilities` / `scores`, and reaches into nothing else.

pub mod estimators;
pub mod study;

use std::path::PathBuf;

use rand::Rng;

use crate::agent::{make_policy, Policy};
use crate::config::{Checked, PolicyKind};
use crate::drive::api::{ResetOptions, SimEnv, StartWorld};
use crate::env::Observation;
use crate::rng::{substream, Stream};
use crate::{Error, Result};

/// How a policy's choice is made stochastic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mix {
    /// The policy as it is (its own probabilities, exploration off).
    Plain,
    /// A softmax over its scores, standardised across the candidates (so that a
    /// temperature means the same for every policy): p ∝ exp(z / temperature).
    Softmax(f64),
    /// (1 - epsilon) the policy + epsilon uniform over the candidates.
    Epsilon(f64),
}

/// Where a policy comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Base {
    Kind(PolicyKind),
    /// A run folder's trained policy.
    Run(PathBuf),
}

/// A policy as named on the command line: `NAME`, `NAME@softmax=T`, `NAME@epsilon=E`,
/// where NAME is a policy's name or a run folder.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicySpec {
    pub base: Base,
    pub mix: Mix,
    /// As it was written (for tables).
    pub text: String,
}

impl Mix {
    /// Parses `softmax=T` (T in (0, 1e6]) or `epsilon=E` (E in [0, 1]); the error says
    /// what is wrong.
    pub fn parse(text: &str) -> std::result::Result<Mix, &'static str> {
        let (key, value) = text.split_once('=').ok_or("a mixture is softmax=T or epsilon=E")?;
        let v: f64 = value.trim().parse().map_err(|_| "the mixture's value must be a number")?;
        match key.trim() {
            "softmax" if v.is_finite() && v > 0.0 && v <= 1e6 => Ok(Mix::Softmax(v)),
            "epsilon" if (0.0..=1.0).contains(&v) => Ok(Mix::Epsilon(v)),
            "softmax" | "epsilon" => Err("the mixture's value is out of range"),
            _ => Err("unknown mixture"),
        }
    }

    /// `softmax=T` or `epsilon=E` as written by [`Mix::parse`]; empty for the plain policy.
    pub fn describe(&self) -> String {
        match self {
            Mix::Plain => String::new(),
            Mix::Softmax(t) => format!("softmax={t}"),
            Mix::Epsilon(e) => format!("epsilon={e}"),
        }
    }
}

impl PolicySpec {
    pub fn parse(text: &str) -> Result<PolicySpec> {
        let bad = |why: &str| {
            Error::Other(format!(
                "policy `{text}`: {why}; expected NAME, NAME@softmax=T (T > 0) or NAME@epsilon=E (E in [0, 1]), \
                 where NAME is a policy (greedy, most_viewed, random, oracle, myopic_oracle) or a run folder"
            ))
        };
        let (name, mix) = match text.split_once('@') {
            None => (text.trim(), Mix::Plain),
            Some((name, m)) => (name.trim(), Mix::parse(m).map_err(bad)?),
        };
        let base = match PolicyKind::from_name(name) {
            Some(kind) => Base::Kind(kind),
            None if PathBuf::from(name).join("config.toml").is_file() => Base::Run(PathBuf::from(name)),
            None => return Err(bad(&format!("`{name}` is neither a policy nor a run folder (no config.toml in it)"))),
        };
        Ok(PolicySpec { base, mix, text: text.trim().to_string() })
    }
}

/// A policy of a [`PolicySpec`], ready to state its probabilities for observations of
/// `config`'s world.
pub struct SpecPolicy {
    policy: Box<dyn Policy>,
    mix: Mix,
    pub text: String,
    /// The probability vectors of the last `act` / `act_batch` call (its propensities).
    last: Vec<Vec<f64>>,
}

impl SpecPolicy {
    /// Refuses what cannot state its probabilities: the planners (their rollouts draw,
    /// thousands of model calls per decision), an untrained learner, and a run folder of
    /// another world.
    pub fn new(spec: &PolicySpec, config: &Checked) -> Result<SpecPolicy> {
        let policy = match &spec.base {
            Base::Kind(kind @ (PolicyKind::Planner | PolicyKind::RetentionPlanner)) => {
                return Err(Error::Other(format!(
                    "policy `{}`: the {kind}'s probabilities are unknown (its rollouts draw) and each decision costs thousands of model calls; \
                     off-policy evaluation needs a policy that states them",
                    spec.text
                )))
            }
            Base::Kind(kind) if kind.learns() => {
                return Err(Error::Other(format!(
                    "policy `{}`: an untrained {kind} means nothing; name the run folder of a trained one",
                    spec.text
                )))
            }
            Base::Kind(kind) => make_policy(*kind, config)?,
            Base::Run(dir) => {
                crate::experiment::run::require_finished(dir, &format!("policy `{}`", spec.text))?;
                let run = crate::experiment::run::config_of_run(dir)?;
                if !crate::experiment::run::agent_fits(&run, config) {
                    return Err(Error::Other(format!(
                        "policy `{}`: its agent was trained on another world or observation layout (world, seed, candidates \
                         and the dqn's inputs must match the config's)",
                        spec.text
                    )));
                }
                let ck = crate::experiment::checkpoint::open(dir, &run)?;
                let mut p = make_policy(run.policy, &run)?;
                p.load(&ck.dir)?;
                p
            }
        };
        Ok(SpecPolicy::wrap(policy, spec.mix, spec.text.clone()))
    }

    /// `policy` made stochastic by `mix`: as a [`Policy`] it draws each choice from
    /// [`SpecPolicy::probabilities`] and states the drawn slot's exact probability as its
    /// propensity (a served arm that logs for off-policy evaluation). The caller has
    /// checked that the policy may be used where it goes.
    pub fn wrap(policy: Box<dyn Policy>, mix: Mix, text: String) -> SpecPolicy {
        SpecPolicy { policy, mix, text, last: Vec::new() }
    }

    /// The probability of each slot of `obs` (zero past its candidates).
    pub fn probabilities(&self, obs: &Observation) -> Result<Vec<f64>> {
        let n = obs.candidates.len();
        let slots = obs.state.valid.len().max(n);
        let plain = || {
            self.policy.probabilities(obs, false).ok_or_else(|| {
                Error::Other(format!("policy `{}` cannot state its probabilities for this observation", self.text))
            })
        };
        Ok(match self.mix {
            Mix::Plain => plain()?,
            Mix::Epsilon(e) => {
                let mut p = plain()?;
                p.iter_mut().for_each(|x| *x *= 1.0 - e);
                p[..n].iter_mut().for_each(|x| *x += e / n as f64);
                p
            }
            Mix::Softmax(temperature) => {
                let mut p = vec![0.0; slots];
                let scores = self.policy.scores(obs).unwrap_or_else(|| vec![0.0; n]);
                let mean = scores.iter().sum::<f64>() / n as f64;
                let sd = (scores.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
                let z: Vec<f64> = scores.iter().map(|s| if sd > 1e-12 { (s - mean) / sd / temperature } else { 0.0 }).collect();
                let top = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let total: f64 = z.iter().map(|v| (v - top).exp()).sum();
                for (k, v) in z.iter().enumerate() {
                    p[k] = (v - top).exp() / total;
                }
                p
            }
        })
    }
}

impl Policy for SpecPolicy {
    fn kind(&self) -> PolicyKind {
        self.policy.kind()
    }

    fn act(&mut self, obs: &Observation, explore: bool, rng: &mut crate::rng::SimRng) -> Result<usize> {
        Ok(self.act_batch(&[obs], explore, rng)?[0])
    }

    /// One draw per observation, in order, from the stream the caller passes.
    fn act_batch(&mut self, obs: &[&Observation], _explore: bool, rng: &mut crate::rng::SimRng) -> Result<Vec<usize>> {
        self.last = obs.iter().map(|o| SpecPolicy::probabilities(self, o)).collect::<Result<_>>()?;
        Ok(self.last.iter().map(|p| draw(p, rng)).collect())
    }

    fn propensity(&self, _obs: &Observation, slot: usize, index: usize) -> f64 {
        self.last.get(index).and_then(|p| p.get(slot)).copied().unwrap_or(f64::NAN)
    }

    fn probabilities(&self, obs: &Observation, _explore: bool) -> Option<Vec<f64>> {
        SpecPolicy::probabilities(self, obs).ok()
    }

    fn scores(&self, obs: &Observation) -> Option<Vec<f64>> {
        self.policy.scores(obs)
    }

    /// A served arm with a mixture that learns: the policy underneath learns.
    fn observe(&mut self, t: crate::agent::Transition, rng: &mut crate::rng::SimRng) -> Result<Option<f64>> {
        self.policy.observe(t, rng)
    }

    fn save(&self, dir: &std::path::Path) -> Result<()> {
        self.policy.save(dir)
    }

    fn parameters(&self) -> Option<Vec<f32>> {
        self.policy.parameters()
    }

    fn set_parameters(&mut self, parameters: &[f32]) -> Result<()> {
        self.policy.set_parameters(parameters)
    }
}

/// One logged decision.
#[derive(Debug, Clone)]
pub struct LoggedDecision {
    /// What the logging policy saw (state, candidates, and the truth behind them).
    pub obs: Observation,
    /// Every candidate's true expected reward (slot order).
    pub expected: Vec<f64>,
    /// The logging policy's probability of each slot.
    pub probs: Vec<f64>,
    pub slot: usize,
    pub reward: f64,
}

/// A log: sessions of decisions, in order.
#[derive(Debug, Clone, Default)]
pub struct OpeLog {
    pub decisions: Vec<LoggedDecision>,
    /// Where each session starts in `decisions` (and one past the last).
    pub starts: Vec<usize>,
    /// The episodes the sessions were (session i is evaluation episode `first_episode + i`).
    pub first_episode: u64,
}

impl OpeLog {
    pub fn sessions(&self) -> usize {
        self.starts.len().saturating_sub(1)
    }

    /// The decisions of session `i`.
    pub fn session(&self, i: usize) -> &[LoggedDecision] {
        &self.decisions[self.starts[i]..self.starts[i + 1]]
    }

    /// The first `n` sessions, borrowed.
    pub fn prefix(&self, n: usize) -> LogView<'_> {
        let n = n.min(self.sessions());
        LogView { decisions: &self.decisions[..self.starts[n]], starts: &self.starts[..=n] }
    }

    /// The whole log, borrowed.
    pub fn view(&self) -> LogView<'_> {
        LogView { decisions: &self.decisions, starts: &self.starts }
    }
}

/// Sessions of a log, borrowed: what the estimators read.
#[derive(Debug, Clone, Copy)]
pub struct LogView<'a> {
    pub decisions: &'a [LoggedDecision],
    /// Where each session starts in `decisions` (and one past the last).
    pub starts: &'a [usize],
}

impl LogView<'_> {
    pub fn sessions(&self) -> usize {
        self.starts.len().saturating_sub(1)
    }
}

/// Logs `sessions` fresh-world sessions (evaluation episodes `first .. first + sessions`
/// of the config's seed: their users and responses are those every policy meets on them)
/// under `logging`, which draws from a stream of its own per session.
pub fn generate(
    config: &Checked,
    logging: &SpecPolicy,
    first: u64,
    sessions: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<OpeLog> {
    let mut env = SimEnv::new(config)?;
    env.reset(Some(config.seed), ResetOptions::default())?;
    let mut log = OpeLog { decisions: Vec::new(), starts: vec![0], first_episode: first };
    for i in 0..sessions {
        let k = first + i as u64;
        let mut rng = substream(config.seed, Stream::OpeLogging, k);
        env.reset(None, ResetOptions { episode: Some(k), world: Some(StartWorld::Fresh) })?;
        while !env.is_over() && !env.observation().exhausted() {
            let obs = env.observation();
            let probs = logging.probabilities(obs)?;
            let slot = draw(&probs, &mut rng);
            let expected = expected_rewards(obs);
            let obs = obs.clone();
            let p = probs[slot];
            let step = env.step_with(slot, Some(p))?;
            log.decisions.push(LoggedDecision { obs, expected, probs, slot, reward: step.reward });
        }
        log.starts.push(log.decisions.len());
        progress(i + 1);
    }
    Ok(log)
}

/// A slot drawn with probabilities `p` (the last positive one if rounding leaves a gap).
fn draw(p: &[f64], rng: &mut crate::rng::SimRng) -> usize {
    let u: f64 = rng.random();
    let mut acc = 0.0;
    let mut last = 0;
    for (k, &pk) in p.iter().enumerate() {
        if pk > 0.0 {
            acc += pk;
            last = k;
            if u < acc {
                return k;
            }
        }
    }
    last
}

/// The on-policy truth of a session's value: `target` run on evaluation episodes
/// `first .. first + sessions` (the log's users and responses: common random numbers),
/// drawing from a stream of its own. Returns each session's return.
pub fn on_policy_returns(
    config: &Checked,
    target: &SpecPolicy,
    first: u64,
    sessions: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<Vec<f64>> {
    let mut env = SimEnv::new(config)?;
    env.reset(Some(config.seed), ResetOptions::default())?;
    let mut out = Vec::with_capacity(sessions);
    for i in 0..sessions {
        let k = first + i as u64;
        let mut rng = substream(config.seed, Stream::OpeTarget, k);
        env.reset(None, ResetOptions { episode: Some(k), world: Some(StartWorld::Fresh) })?;
        let mut ret = 0.0;
        while !env.is_over() && !env.observation().exhausted() {
            let probs = target.probabilities(env.observation())?;
            ret += env.step(draw(&probs, &mut rng))?.reward;
        }
        out.push(ret);
        progress(i + 1);
    }
    Ok(out)
}

/// The target's probabilities on every logged decision; refuses a target that puts mass
/// where the logging policy put none, naming the decisions.
pub fn target_probabilities(log: &OpeLog, target: &SpecPolicy) -> Result<Vec<Vec<f64>>> {
    let mut out = Vec::with_capacity(log.decisions.len());
    let mut unsupported = Vec::new();
    for (i, d) in log.decisions.iter().enumerate() {
        let p = target.probabilities(&d.obs)?;
        if p.iter().zip(&d.probs).any(|(&pe, &p0)| pe > 0.0 && p0 <= 0.0) {
            unsupported.push(i);
        }
        out.push(p);
    }
    if !unsupported.is_empty() {
        let shown: Vec<String> = unsupported.iter().take(5).map(|i| i.to_string()).collect();
        return Err(Error::Other(format!(
            "target `{}` puts probability on slots the logging policy never chooses at {} of {} decisions (first: {}); \
             no estimator can see those choices: log with a softmax or epsilon mixture",
            target.text,
            unsupported.len(),
            log.decisions.len(),
            shown.join(", ")
        )));
    }
    Ok(out)
}

/// V1's exact truth: the mean over logged decisions of sum_a target(a | x) E[r | x, a].
pub fn one_decision_truth(log: LogView<'_>, target: &[Vec<f64>]) -> f64 {
    let n = log.decisions.len().max(1) as f64;
    log.decisions.iter().zip(target).map(|(d, p)| d.expected.iter().zip(p).map(|(e, q)| e * q).sum::<f64>()).sum::<f64>() / n
}

/// What `fypsim ope` is asked.
#[derive(Debug, Clone)]
pub struct Request {
    pub logging: PolicySpec,
    pub targets: Vec<PolicySpec>,
    pub sessions: usize,
    /// The log sizes (sessions, its first ones) every estimator is also run on, for the
    /// error-against-size plot; the whole log is always one.
    pub sizes: Vec<usize>,
    pub options: estimators::Options,
    /// The most on-policy sessions a session truth may take.
    pub truth_max: usize,
}

/// One estimator's estimate on one log size, with its error against the truth.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    pub target: String,
    pub sessions: usize,
    #[serde(flatten)]
    pub estimate: estimators::Estimate,
    pub truth: f64,
    pub error: f64,
    pub relative_error: f64,
}

/// A target's truths.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Truth {
    pub target: String,
    /// V1 on the whole log (exact).
    pub one_decision: f64,
    /// V: the mean return of `sessions` on-policy sessions, with its standard error.
    pub session: f64,
    pub session_se: f64,
    pub sessions: usize,
    /// Whether the session truth's standard error reached a tenth of the smallest session
    /// estimator's (else `truth_max` stopped it).
    pub precise_enough: bool,
}

/// What `fypsim ope` found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub config: String,
    pub seed: u64,
    pub logging: String,
    pub sessions: usize,
    pub decisions: usize,
    pub bootstrap: usize,
    pub truths: Vec<Truth>,
    pub rows: Vec<Row>,
    /// Seconds: logging, estimating (every size and target), the truth runs.
    pub logging_s: f64,
    pub estimating_s: f64,
    pub truth_s: f64,
}

/// Logs, estimates every target on every size, measures the truths, and writes
/// `ope.csv`, `ope.json`, `ope.png` and `log.parquet` (the one-decision table for other
/// toolkits) into `dir`. `stage` hears what is under way.
pub fn run(config: &Checked, req: &Request, dir: &std::path::Path, stage: &mut dyn FnMut(&str)) -> Result<Report> {
    use std::time::Instant;
    if req.sessions < 2 {
        return Err(Error::Other(format!("--sessions {}: at least 2", req.sessions)));
    }
    if req.targets.is_empty() {
        return Err(Error::Other("name at least one --target".into()));
    }
    let logging = SpecPolicy::new(&req.logging, config)?;
    let targets: Vec<SpecPolicy> = req.targets.iter().map(|t| SpecPolicy::new(t, config)).collect::<Result<_>>()?;
    std::fs::create_dir_all(dir).map_err(Error::io("create", dir))?;
    let t0 = Instant::now();
    stage(&format!("logging {} sessions under {}", req.sessions, logging.text));
    let log = generate(config, &logging, 0, req.sessions, &mut |_| {})?;
    let logging_s = t0.elapsed().as_secs_f64();
    let mut resolved = config.inner().clone();
    resolved.provenance = Some(crate::experiment::run::provenance());
    crate::files::write_file(
        &dir.join(CONFIG_FILE),
        format!(
            "# The resolved config of this off-policy evaluation: `fypsim ope --log {}` estimates new targets on its log.\n{}",
            dir.display(),
            resolved.to_toml()
        )
        .as_bytes(),
    )?;
    let (report, probs) = estimate_and_measure(config, req, &logging, &targets, &log, logging_s, stage)?;
    write(&report, &log, &targets, &probs, dir, true)?;
    Ok(report)
}

/// The resolved config `fypsim ope` writes beside its log.
pub const CONFIG_FILE: &str = "config.toml";

/// Estimates new targets on the log an earlier `fypsim ope` saved in `saved` (its
/// `config.toml`, `ope.json` and `log.parquet`): the log is replayed (each session's
/// episode rerun with the logged choices), which rebuilds every observation and checks
/// that each logged propensity and reward is what the replay gives; then every estimator
/// and truth as [`run`], written to `dir` (without `log.parquet`). The config, the logging
/// policy and the sessions are the saved log's; `options`' seed and FQE iterations are
/// set from its config.
pub fn run_on_saved(
    saved: &std::path::Path,
    targets: &[PolicySpec],
    sizes: &[usize],
    options: &estimators::Options,
    truth_max: usize,
    dir: &std::path::Path,
    stage: &mut dyn FnMut(&str),
) -> Result<Report> {
    use std::time::Instant;
    let config = crate::config::Config::load(&saved.join(CONFIG_FILE), &[])
        .map_err(|e| Error::Other(format!("{} is not the folder of a `fypsim ope` log ({e})", saved.display())))?;
    if targets.is_empty() {
        return Err(Error::Other("name at least one --target".into()));
    }
    let meta: serde_json::Value = {
        let path = saved.join("ope.json");
        let text = std::fs::read_to_string(&path).map_err(Error::io("read", &path))?;
        serde_json::from_str(&text).map_err(|e| Error::Other(format!("{} is damaged: {e}", path.display())))?
    };
    let logging_text = meta["logging"]
        .as_str()
        .ok_or_else(|| Error::Other(format!("{}: no logging policy recorded", saved.join("ope.json").display())))?;
    let logging_spec = PolicySpec::parse(logging_text)?;
    let logging = SpecPolicy::new(&logging_spec, &config)?;
    let target_policies: Vec<SpecPolicy> = targets.iter().map(|t| SpecPolicy::new(t, &config)).collect::<Result<_>>()?;
    let t0 = Instant::now();
    stage(&format!("replaying the log in {}", saved.display()));
    let log = replay_saved(&config, &logging, &saved.join("log.parquet"))?;
    let logging_s = t0.elapsed().as_secs_f64();
    if log.sessions() < 2 {
        return Err(Error::Other(format!("the saved log holds {} session(s): at least 2", log.sessions())));
    }
    std::fs::create_dir_all(dir).map_err(Error::io("create", dir))?;
    let req = Request {
        logging: logging_spec,
        targets: targets.to_vec(),
        sessions: log.sessions(),
        sizes: sizes.to_vec(),
        options: estimators::Options { seed: config.seed, fqe_iterations: config.env.max_steps, ..options.clone() },
        truth_max,
    };
    let (report, probs) = estimate_and_measure(&config, &req, &logging, &target_policies, &log, logging_s, stage)?;
    write(&report, &log, &target_policies, &probs, dir, false)?;
    Ok(report)
}

/// A column of `df` as f64 values (no nulls), or an error naming the file and column.
fn column_f64(df: &polars::prelude::DataFrame, name: &str, path: &std::path::Path) -> Result<Vec<f64>> {
    use polars::prelude::DataType;
    let bad = |why: String| Error::Other(format!("{}: column `{name}` {why}", path.display()));
    let c = df.column(name).map_err(|_| bad("is missing".into()))?;
    let c = c.cast(&DataType::Float64).map_err(|e| bad(format!("is not numeric ({e})")))?;
    let ca = c.f64().map_err(|e| bad(e.to_string()))?;
    (0..ca.len()).map(|i| ca.get(i).ok_or_else(|| bad(format!("has an empty row {i}")))).collect()
}

/// Replays a saved `log.parquet` (its `session`, `t`, `action`, `pscore` and `reward`):
/// session i reruns evaluation episode i of the config with the logged choices.
fn replay_saved(config: &Checked, logging: &SpecPolicy, path: &std::path::Path) -> Result<OpeLog> {
    let df = crate::output::records::read_parquet(path)?;
    let (session, t, action) = (column_f64(&df, "session", path)?, column_f64(&df, "t", path)?, column_f64(&df, "action", path)?);
    let (pscore, reward) = (column_f64(&df, "pscore", path)?, column_f64(&df, "reward", path)?);
    let fail = |row: usize, why: String| {
        Error::Other(format!(
            "{} does not replay at row {row} (session {}, step {}): {why}; it is not the log of this folder's config and logging policy",
            path.display(),
            session[row],
            t[row]
        ))
    };
    let mut env = SimEnv::new(config)?;
    env.reset(Some(config.seed), ResetOptions::default())?;
    let mut log = OpeLog { decisions: Vec::new(), starts: vec![0], first_episode: 0 };
    let mut row = 0;
    while row < session.len() {
        let k = log.sessions();
        if session[row] != k as f64 {
            return Err(fail(row, format!("sessions must be numbered 0, 1, 2, ... in order; expected {k}")));
        }
        env.reset(None, ResetOptions { episode: Some(k as u64), world: Some(StartWorld::Fresh) })?;
        let mut step = 0;
        while row < session.len() && session[row] == k as f64 {
            if t[row] != step as f64 {
                return Err(fail(row, format!("steps must be numbered 0, 1, 2, ... in order; expected {step}")));
            }
            if env.is_over() || env.observation().exhausted() {
                return Err(fail(row, "the replayed session is over before this step".into()));
            }
            let obs = env.observation();
            let slot = action[row];
            if !(slot >= 0.0 && slot.fract() == 0.0 && (slot as usize) < obs.candidates.len()) {
                return Err(fail(row, format!("action {slot} is not a slot of the {} candidates", obs.candidates.len())));
            }
            let slot = slot as usize;
            let probs = logging.probabilities(obs)?;
            if probs[slot] != pscore[row] {
                return Err(fail(
                    row,
                    format!("the logging policy gives the choice probability {}, the log {}", probs[slot], pscore[row]),
                ));
            }
            let expected = expected_rewards(obs);
            let obs = obs.clone();
            let p = probs[slot];
            let outcome = env.step_with(slot, Some(p))?;
            if outcome.reward != reward[row] {
                return Err(fail(row, format!("the replay pays {}, the log {}", outcome.reward, reward[row])));
            }
            log.decisions.push(LoggedDecision { obs, expected, probs, slot, reward: outcome.reward });
            row += 1;
            step += 1;
        }
        if !(env.is_over() || env.observation().exhausted()) {
            return Err(fail(row - 1, "the replayed session goes on after the log's last step of it".into()));
        }
        log.starts.push(log.decisions.len());
    }
    Ok(log)
}

/// Every candidate's true expected reward (slot order).
fn expected_rewards(obs: &Observation) -> Vec<f64> {
    let truth = &obs.truth;
    obs.candidates.iter().map(|c| truth.model.expected_reward(&obs.user, &truth.latent, c.video, truth.now)).collect()
}

/// Every estimator of every target on every size of `log`, with the truths.
fn estimate_and_measure(
    config: &Checked,
    req: &Request,
    logging: &SpecPolicy,
    targets: &[SpecPolicy],
    log: &OpeLog,
    logging_s: f64,
    stage: &mut dyn FnMut(&str),
) -> Result<(Report, Vec<Vec<Vec<f64>>>)> {
    use std::time::Instant;
    let features = crate::agent::bandit::BanditFeatures::of(config);
    let mut sizes: Vec<usize> = req.sizes.iter().copied().filter(|&n| n >= 2 && n < req.sessions).collect();
    sizes.push(req.sessions);
    sizes.sort_unstable();
    sizes.dedup();

    let t1 = Instant::now();
    let mut probs_of = Vec::new();
    let mut estimates: Vec<Vec<(usize, Vec<estimators::Estimate>)>> = Vec::new();
    for target in targets {
        stage(&format!("estimating {}", target.text));
        let tp = target_probabilities(log, target)?;
        let mut by_size = Vec::new();
        for &n in &sizes {
            let part = log.prefix(n);
            let est = estimators::estimate(part, &tp[..part.decisions.len()], &features, &req.options)?;
            by_size.push((n, est));
        }
        estimates.push(by_size);
        probs_of.push(tp);
    }
    let estimating_s = t1.elapsed().as_secs_f64();

    let t2 = Instant::now();
    let mut truths = Vec::new();
    let mut rows = Vec::new();
    for ((target, tp), by_size) in targets.iter().zip(&probs_of).zip(&estimates) {
        // The session truth: on-policy sessions (the log's episodes first), in chunks,
        // until its standard error is a tenth of the smallest session estimator's.
        let smallest = by_size
            .iter()
            .flat_map(|(_, e)| e.iter())
            .filter(|e| e.estimand == estimators::Estimand::Session && e.se.is_finite() && e.se > 0.0)
            .map(|e| e.se)
            .fold(f64::INFINITY, f64::min);
        let mut returns = Vec::new();
        let chunk = req.sessions.clamp(1_000, 20_000);
        let (mut mean, mut se) = (f64::NAN, f64::INFINITY);
        stage(&format!("on-policy truth of {} (until its error is a tenth of the estimators')", target.text));
        while returns.len() < req.truth_max.max(2) {
            let take = chunk.min(req.truth_max.max(2) - returns.len());
            returns.extend(on_policy_returns(config, target, returns.len() as u64, take, &mut |_| {})?);
            let n = returns.len() as f64;
            mean = returns.iter().sum::<f64>() / n;
            se = (returns.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1.0) / n).sqrt();
            if se <= 0.1 * smallest {
                break;
            }
        }
        let truth = Truth {
            target: target.text.clone(),
            one_decision: one_decision_truth(log.view(), tp),
            session: mean,
            session_se: se,
            sessions: returns.len(),
            precise_enough: se <= 0.1 * smallest,
        };
        for (n, est) in by_size {
            let part_truth = one_decision_truth(log.prefix(*n), &tp[..log.starts[*n]]);
            for e in est {
                let t = if e.estimand == estimators::Estimand::OneDecision { part_truth } else { truth.session };
                let error = e.value - t;
                rows.push(Row {
                    target: target.text.clone(),
                    sessions: *n,
                    estimate: e.clone(),
                    truth: t,
                    error,
                    relative_error: error / t.abs().max(1e-12),
                });
            }
        }
        truths.push(truth);
    }
    let truth_s = t2.elapsed().as_secs_f64();
    let report = Report {
        config: config.name.clone(),
        seed: config.seed,
        logging: logging.text.clone(),
        sessions: req.sessions,
        decisions: log.decisions.len(),
        bootstrap: req.options.bootstrap,
        truths,
        rows,
        logging_s,
        estimating_s,
        truth_s,
    };
    Ok((report, probs_of))
}

/// The columns of an estimate in every table of estimates (`ope.csv`, `ab_ope.csv`):
/// `estimator`, `estimand`, `estimate`, `ci_low`, `ci_high`, `se`, `ess`.
pub fn estimate_columns(es: &[&estimators::Estimate]) -> Vec<polars::prelude::Column> {
    use polars::prelude::Column;
    let f = |name: &str, g: &dyn Fn(&estimators::Estimate) -> f64| {
        Column::new(name.into(), es.iter().map(|e| g(e)).collect::<Vec<f64>>())
    };
    vec![
        Column::new("estimator".into(), es.iter().map(|e| e.estimator.clone()).collect::<Vec<String>>()),
        Column::new("estimand".into(), es.iter().map(|e| e.estimand.name().to_string()).collect::<Vec<String>>()),
        f("estimate", &|e| e.value),
        f("ci_low", &|e| e.ci_low),
        f("ci_high", &|e| e.ci_high),
        f("se", &|e| e.se),
        f("ess", &|e| e.ess),
    ]
}

/// ope.csv, ope.json, ope.png, and log.parquet if `with_log`.
fn write(
    report: &Report,
    log: &OpeLog,
    targets: &[SpecPolicy],
    probs: &[Vec<Vec<f64>>],
    dir: &std::path::Path,
    with_log: bool,
) -> Result<()> {
    use polars::prelude::{Column, DataFrame};
    let csv = dir.join("ope.csv");
    let rows = &report.rows;
    let col_f = |name: &str, f: &dyn Fn(&Row) -> f64| Column::new(name.into(), rows.iter().map(f).collect::<Vec<f64>>());
    let col_s = |name: &str, f: &dyn Fn(&Row) -> String| Column::new(name.into(), rows.iter().map(f).collect::<Vec<String>>());
    let mut columns = vec![
        col_s("target", &|r| r.target.clone()),
        Column::new("sessions".into(), rows.iter().map(|r| r.sessions as u64).collect::<Vec<u64>>()),
    ];
    columns.extend(estimate_columns(&rows.iter().map(|r| &r.estimate).collect::<Vec<_>>()));
    columns.extend([
        col_f("truth", &|r| r.truth),
        col_f("error", &|r| r.error),
        col_f("relative_error", &|r| r.relative_error),
        col_s("setting", &|r| r.estimate.setting.clone()),
    ]);
    let mut df = crate::output::records::frame(DataFrame::new_infer_height(columns), &csv)?;
    crate::output::records::write_csv(&mut df, &csv)?;
    let json = serde_json::to_string_pretty(report).expect("a report serialises");
    crate::files::write_file(&dir.join("ope.json"), json.as_bytes())?;

    // |relative error| against log size, per estimator, for the first target.
    if let Some(first) = targets.first() {
        let mut series: Vec<crate::output::plot::Series> = Vec::new();
        for (name, _) in estimators::NAMES {
            let points = rows
                .iter()
                .filter(|r| r.target == first.text && r.estimate.estimator == name)
                .map(|r| (r.sessions as f64, r.relative_error.abs()))
                .collect();
            series.push(crate::output::plot::Series { name: name.to_string(), points });
        }
        if report.rows.iter().any(|r| r.relative_error.abs() > 0.0) {
            crate::output::plot::loglog_plot_in(
                &dir.join("ope.png"),
                &format!("target {}: |relative error| against log size", first.text),
                "logged sessions",
                "|estimate - truth| / |truth|",
                &series,
                &crate::output::plot::WIDE_PALETTE,
            )?;
        }
    }

    if !with_log {
        return Ok(());
    }
    // The one-decision table, for other toolkits.
    let path = dir.join("log.parquet");
    let mut session = Vec::new();
    let mut t = Vec::new();
    for s in 0..log.sessions() {
        for (k, _) in log.session(s).iter().enumerate() {
            session.push(s as u32);
            t.push(k as u32);
        }
    }
    let d = &log.decisions;
    // List columns built in one buffer each (a Series per row would cost kilobytes a row).
    let list = |name: &str, f: &dyn Fn(usize) -> Vec<f64>| -> Column {
        use polars::prelude::{DataType, Float64Type, IntoColumn, ListBuilderTrait, ListPrimitiveChunkedBuilder};
        let mut b = ListPrimitiveChunkedBuilder::<Float64Type>::new(name.into(), d.len(), d.len() * 10, DataType::Float64);
        for i in 0..d.len() {
            b.append_slice(&f(i));
        }
        b.finish().into_column()
    };
    let mut columns = vec![
        Column::new("session".into(), session),
        Column::new("t".into(), t),
        Column::new("user".into(), d.iter().map(|x| x.obs.user.id).collect::<Vec<u32>>()),
        Column::new("action".into(), d.iter().map(|x| x.slot as u32).collect::<Vec<u32>>()),
        Column::new("reward".into(), d.iter().map(|x| x.reward).collect::<Vec<f64>>()),
        Column::new("pscore".into(), d.iter().map(|x| x.probs[x.slot]).collect::<Vec<f64>>()),
        list("logging_probs", &|i| d[i].probs.clone()),
        list("expected_rewards", &|i| d[i].expected.clone()),
        list("state_numeric", &|i| d[i].obs.state.numeric.iter().map(|v| *v as f64).collect()),
        list("state_categorical", &|i| d[i].obs.state.categorical.iter().map(|v| *v as f64).collect()),
    ];
    for (k, p) in probs.iter().enumerate() {
        columns.push(list(&format!("target{k}_probs"), &|i| p[i].clone()));
    }
    let mut df = crate::output::records::frame(DataFrame::new_infer_height(columns), &path)?;
    crate::output::records::write_parquet(&mut df, &path)
}

#[cfg(test)]
mod tests {
    use super::estimators::{estimate, Options};
    use super::*;
    use crate::agent::bandit::BanditFeatures;
    use crate::config::Config;

    fn config() -> Checked {
        Config::from_toml_str(
            "seed = 5\n[world]\nn_videos = 300\nn_users = 40\n[env]\nmax_steps = 12\n[dynamics.satiation]\nstrength = 0.5\n",
            &[],
        )
        .unwrap()
    }

    fn spec(text: &str, c: &Checked) -> SpecPolicy {
        SpecPolicy::new(&PolicySpec::parse(text).unwrap(), c).unwrap()
    }

    fn opts() -> Options {
        Options { ridge: 1.0, switch_tau: None, shrinkage_lambda: None, bootstrap: 100, seed: 1, fqe_iterations: 12 }
    }

    #[test]
    fn specs_parse_and_bad_ones_are_refused_with_the_grammar() {
        let s = PolicySpec::parse("greedy@softmax=0.5").unwrap();
        assert_eq!((s.base, s.mix), (Base::Kind(PolicyKind::Greedy), Mix::Softmax(0.5)));
        assert_eq!(PolicySpec::parse("random@epsilon=1").unwrap().mix, Mix::Epsilon(1.0));
        for bad in ["greedy@softmax=0", "greedy@epsilon=1.5", "greedy@warm=1", "nope", "greedy@softmax"] {
            let e = PolicySpec::parse(bad).unwrap_err().to_string();
            assert!(e.contains("NAME@softmax=T"), "{bad}: {e}");
        }
        let c = config();
        for refused in ["planner", "retention_planner", "linucb"] {
            assert!(SpecPolicy::new(&PolicySpec::parse(refused).unwrap(), &c).is_err(), "{refused}");
        }
    }

    /// Probabilities are distributions over the candidates, softmax temperatures order
    /// as they should (colder: closer to the policy's own choice).
    #[test]
    fn mixtures_state_distributions() {
        let c = config();
        let log = generate(&c, &spec("random", &c), 0, 5, &mut |_| {}).unwrap();
        for text in ["greedy@softmax=0.3", "greedy@softmax=3", "myopic_oracle@epsilon=0.2", "most_viewed"] {
            let p = spec(text, &c);
            for d in &log.decisions {
                let probs = p.probabilities(&d.obs).unwrap();
                assert!((probs.iter().sum::<f64>() - 1.0).abs() < 1e-9, "{text}");
                assert!(probs[d.obs.candidates.len()..].iter().all(|&x| x == 0.0), "{text}");
            }
        }
        let d = &log.decisions[0];
        let cold = spec("greedy@softmax=0.3", &c).probabilities(&d.obs).unwrap()[0];
        let warm = spec("greedy@softmax=3", &c).probabilities(&d.obs).unwrap()[0];
        assert!(cold > warm, "{cold} {warm}");
    }

    #[test]
    fn a_target_outside_the_logs_support_is_refused_naming_decisions() {
        let c = config();
        let log = generate(&c, &spec("greedy", &c), 0, 3, &mut |_| {}).unwrap();
        let e = target_probabilities(&log, &spec("random", &c)).unwrap_err().to_string();
        assert!(e.contains("never chooses") && e.contains("first: 0"), "{e}");
    }

    /// IPS and cross-fitted DR for V1, and PDIS and DR for V, are unbiased: over 300 independent
    /// logs of 80 sessions (distinct episodes, so independent draws) the mean error is
    /// within 3 standard errors of 0, and that standard error is at most 2% of |V|. With
    /// the logged propensities scaled by 1.1 the same check fails for IPS and PDIS; DR
    /// stays unbiased, as a doubly robust estimator with a good reward model should.
    #[test]
    fn ips_dr_pdis_and_dr_seq_are_unbiased_and_a_wrong_propensity_is_caught() {
        let c = config();
        let logging = spec("greedy@softmax=1", &c);
        let target = spec("greedy@softmax=0.7", &c);
        let features = BanditFeatures::of(&c);
        let (logs, per) = (300, 80);
        let whole = generate(&c, &logging, 0, logs * per, &mut |_| {}).unwrap();
        let truth_runs = on_policy_returns(&c, &target, 1_000_000, 40_000, &mut |_| {}).unwrap();
        let n = truth_runs.len() as f64;
        let v = truth_runs.iter().sum::<f64>() / n;
        let v_se = (truth_runs.iter().map(|r| (r - v).powi(2)).sum::<f64>() / (n - 1.0) / n).sqrt();
        let check = |scale: f64| -> Vec<(String, bool, f64)> {
            let mut errors: Vec<Vec<f64>> = vec![Vec::new(); 4];
            for l in 0..logs {
                let mut log = OpeLog {
                    decisions: whole.decisions[whole.starts[l * per]..whole.starts[(l + 1) * per]].to_vec(),
                    starts: whole.starts[l * per..=(l + 1) * per].iter().map(|s| s - whole.starts[l * per]).collect(),
                    first_episode: (l * per) as u64,
                };
                log.decisions.iter_mut().for_each(|d| d.probs.iter_mut().for_each(|p| *p *= scale));
                let tp = target_probabilities(&log, &target).unwrap();
                let v1 = one_decision_truth(log.view(), &tp);
                let est = estimate(log.view(), &tp, &features, &opts()).unwrap();
                let get = |name: &str| est.iter().find(|e| e.estimator == name).unwrap().value;
                errors[0].push(get("ips") - v1);
                errors[1].push(get("dr") - v1);
                errors[2].push(get("pdis") - v);
                errors[3].push(get("dr_seq") - v);
            }
            ["ips", "dr", "pdis", "dr_seq"]
                .iter()
                .zip(&errors)
                .map(|(name, e)| {
                    let m = e.len() as f64;
                    let mean = e.iter().sum::<f64>() / m;
                    let mut se = (e.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (m - 1.0) / m).sqrt();
                    if *name == "pdis" || *name == "dr_seq" {
                        se = (se * se + v_se * v_se).sqrt();
                    }
                    assert!(se <= 0.02 * v.abs(), "{name}: standard error {se} against |V| {v}");
                    (name.to_string(), mean.abs() < 3.0 * se, mean / se)
                })
                .collect()
        };
        for (name, ok, z) in check(1.0) {
            assert!(ok, "{name}: mean error {z:.2} standard errors from 0");
        }
        for (name, ok, z) in check(1.1) {
            if name == "dr_seq" {
                // Doubly robust too, with a worse model (linear FQE): not asserted either way.
                continue;
            }
            if name == "dr" {
                // Doubly robust: with a reward model this good, wrong propensities leave it
                // unbiased (measured: 0.7 standard errors), as theory says.
                assert!(ok, "dr: {z:.2} standard errors with a good reward model");
            } else {
                assert!(!ok, "{name}: propensities scaled by 1.1 went unnoticed ({z:.2} standard errors)");
            }
        }
    }
}
