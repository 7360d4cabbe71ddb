//! A trained policy as a service (docs/serving.md): the [`Service`] keeps each user's
//! session and the live interaction matrix, routes every user to one arm of an A/B
//! experiment by a stable hash, answers recommendation requests with the arm's policy,
//! applies the feedback a client reports like a simulated interaction, and appends every
//! decision and outcome to the decision log ([`log`]). [`http`] puts it behind an
//! HTTP/JSON server, [`traffic`] drives it with simulated users (over HTTP, or in
//! process), and [`report`] reads the log into an A/B report.
//!
//! The service sees only what a platform logs: the users' profiles, the videos shown and
//! the responses reported. It never reads the simulator's latent states, so policies that
//! do (the oracles, the planner) cannot be served.

pub mod abtest;
pub mod http;
pub mod learner;
pub mod log;
pub mod ope;
pub mod report;
pub mod traffic;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::agent::{make_policy, Policy};
use crate::config::{Checked, PolicyKind};
use crate::drive::session::decide_batch;
use crate::env::{Env, Layout, Observation, Seen, Session};
use crate::model::response::Action;
use crate::ope::{Mix, SpecPolicy};
use crate::platform::candidates::CandidateGenerator;
use crate::rng::{stream, substream, SimRng, Stream};
use crate::world::World;
use crate::{Error, Result};

pub use log::{Decision, Outcome, Record};

/// A session with no request for this long is over; the user's next request opens a new
/// one (the usual 30-minute rule of web analytics).
pub const SESSION_TIMEOUT_MS: u64 = 30 * 60 * 1000;

/// A decision whose feedback has not come for this long is forgotten (its feedback is
/// then refused), so that abandoned decisions do not pile up.
pub const PENDING_TTL_MS: u64 = 60 * 60 * 1000;

/// The most arms an experiment may have.
pub const MAX_ARMS: usize = 8;

/// The most steps a client may report in `recent`.
pub const MAX_RECENT: usize = 1000;

/// Where an arm's policy comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A run folder with a saved agent.
    Run(PathBuf),
    /// A baseline that needs nothing but what a platform logs.
    Baseline(PolicyKind),
}

/// One arm of the experiment: `NAME=SOURCE[@MIXTURE]` on the command line.
#[derive(Debug, Clone, PartialEq)]
pub struct ArmSpec {
    pub name: String,
    pub source: Source,
    /// `@softmax=T` or `@epsilon=E`: the arm draws its choices (and logs their exact
    /// propensities), so its log supports off-policy evaluation.
    pub mix: Mix,
    /// `:learn`: the arm's trained agent keeps learning from the feedback it is served.
    pub learn: bool,
}

impl ArmSpec {
    /// An arm serving `source` as it is.
    pub fn plain(name: &str, source: Source) -> ArmSpec {
        ArmSpec { name: name.to_string(), source, mix: Mix::Plain, learn: false }
    }
}

/// The baselines a service can run: they read only the candidates and their logged
/// numbers (the oracles and the planner read the simulator's truth, which a service has
/// not got).
pub const SERVABLE_BASELINES: [PolicyKind; 3] = [PolicyKind::Greedy, PolicyKind::Random, PolicyKind::MostViewed];

/// What the service answers (409) for a user who has seen every video the feed can offer;
/// the traffic driver recognises it.
pub const EXHAUSTED: &str = "has seen every video the feed can offer";

/// The one rule for what a service may run, wherever the policy comes from (a baseline's
/// name or a run folder's own policy): the servable baselines and the trained learners
/// (the DQN, the bandits), which read only what a platform logs. The others read the simulator's truth.
pub fn refuse_truth_readers(kind: PolicyKind, what: &str) -> Result<()> {
    if kind.learns() || SERVABLE_BASELINES.contains(&kind) {
        return Ok(());
    }
    Err(Error::Other(format!(
        "{what}: {kind} reads the simulator's latent state, which a service does not have; \
         servable baselines: greedy, random, most_viewed, or a run folder with a saved agent"
    )))
}

impl ArmSpec {
    /// Parses `NAME=SOURCE[@softmax=T | @epsilon=E]`, where SOURCE is a baseline's name or
    /// a run folder.
    pub fn parse(text: &str) -> Result<ArmSpec> {
        let (name, source) = text.split_once('=').ok_or_else(|| {
            Error::Other(format!("--arm `{text}`: expected NAME=SOURCE, e.g. A=greedy or B=results/default/seed42-001"))
        })?;
        let name = name.trim();
        if name.is_empty() || name.len() > 32 || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return Err(Error::Other(format!("--arm `{text}`: an arm's name is 1 to 32 letters, digits, `_` or `-`")));
        }
        let (source, learn) = match source.trim().strip_suffix(":learn") {
            Some(rest) => (rest, true),
            None => (source, false),
        };
        // The mixture is what follows the last `@`, if that names one (a run folder's
        // path may hold an `@` of its own).
        let mixture = source.rsplit_once('@').filter(|(_, m)| {
            let m = m.trim_start();
            m.starts_with("softmax") || m.starts_with("epsilon") || m.is_empty()
        });
        let (source, mix) = match mixture {
            None => (source.trim(), Mix::Plain),
            Some((source, m)) => (
                source.trim(),
                Mix::parse(m).map_err(|why| {
                    Error::Other(format!(
                        "--arm `{text}`: {why}; a mixture is @softmax=T (T in (0, 1e6]) or @epsilon=E (E in [0, 1])"
                    ))
                })?,
            ),
        };
        let source = match PolicyKind::from_name(source) {
            Some(kind) if kind.is_bandit() => {
                return Err(Error::Other(format!(
                    "--arm `{text}`: {kind} learns; serve the run folder of a trained one (`fypsim run` with policy = \"{kind}\")"
                )))
            }
            Some(kind) if kind != PolicyKind::Dqn => {
                refuse_truth_readers(kind, &format!("--arm `{text}`"))?;
                Source::Baseline(kind)
            }
            _ => {
                let dir = PathBuf::from(source);
                if !dir.join("config.toml").is_file() {
                    return Err(Error::Other(format!(
                        "--arm `{text}`: `{source}` is neither a servable baseline (greedy, random, most_viewed) \
                         nor a run folder (no config.toml in it)"
                    )));
                }
                Source::Run(dir)
            }
        };
        if learn && !matches!(source, Source::Run(_)) {
            return Err(Error::Other(format!(
                "--arm `{text}`: `:learn` needs a run folder with a trained DQN or bandit; a baseline has nothing to learn"
            )));
        }
        Ok(ArmSpec { name: name.to_string(), source, mix, learn })
    }
}

/// Parses `--split 50/50` into shares that sum to 1, one per arm.
pub fn parse_split(text: &str, arms: usize) -> Result<Vec<f64>> {
    let bad = |why: &str| Error::Other(format!("--split `{text}`: {why}; e.g. --split 50/50 for two arms"));
    let parts: Vec<f64> = text
        .split('/')
        .map(|p| p.trim().parse::<f64>().map_err(|_| bad("every part must be a number")))
        .collect::<Result<_>>()?;
    if parts.len() != arms {
        return Err(bad(&format!("{} parts for {arms} arm(s)", parts.len())));
    }
    if parts.iter().any(|&p| !p.is_finite() || p <= 0.0) {
        return Err(bad("every arm needs a positive share"));
    }
    let total: f64 = parts.iter().sum();
    Ok(parts.iter().map(|p| p / total).collect())
}

/// The arm of `user`: the first whose cumulative share exceeds the user's stable hash
/// share ([`crate::serve::abtest::hash_share`]).
pub fn arm_of(salt: &str, user: u64, shares: &[f64]) -> usize {
    let x = crate::serve::abtest::hash_share(salt, user);
    let mut cum = 0.0;
    for (k, s) in shares.iter().enumerate() {
        cum += s;
        if x < cum {
            return k;
        }
    }
    shares.len() - 1
}

/// What the service is asked to serve.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub arms: Vec<ArmSpec>,
    /// One share per arm (sums to 1); None: equal shares.
    pub shares: Option<Vec<f64>>,
    /// The experiment's salt: users are reshuffled between arms by a new one.
    pub salt: String,
    /// The world's config; None: the first run folder's.
    pub config: Option<Checked>,
    /// The decision log's folder; None: no log (tests and benchmarks only).
    pub log: Option<PathBuf>,
    /// How often a learning DQN arm's learner checkpoints its state beside the log.
    pub learning_checkpoint_every: std::time::Duration,
}

/// The default of [`ServeOptions::learning_checkpoint_every`].
pub const LEARNING_CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

impl ServeOptions {
    /// The experiment of `arms` (names and shares) and `salt` in `config`'s world, with
    /// greedy serving in every arm: the same users land in the same arms, and nothing is
    /// logged (a served-log replay's and a plan's stand-in).
    pub fn stand_in(arms: &[log::ArmMeta], salt: &str, config: &Checked) -> ServeOptions {
        ServeOptions {
            arms: arms.iter().map(|a| ArmSpec::plain(&a.name, Source::Baseline(PolicyKind::Greedy))).collect(),
            shares: Some(arms.iter().map(|a| a.share).collect()),
            salt: salt.to_string(),
            config: Some(config.clone()),
            log: None,
            learning_checkpoint_every: LEARNING_CHECKPOINT_EVERY,
        }
    }
}

/// A served arm.
pub struct Arm {
    pub name: String,
    pub kind: PolicyKind,
    /// `policy@digest`: what exactly served (the saved agent's SHA-256, or the fypsim
    /// version for a baseline).
    pub version: String,
    pub share: f64,
    policy: Box<dyn Policy>,
    /// Whether it learns from its feedback, and its learning so far.
    learning: Option<Learning>,
}

/// A learning arm's state besides its policy.
struct Learning {
    /// Its own draws (a DQN's replay sampling): one stream per arm.
    rng: SimRng,
    /// Transitions learnt from.
    transitions: u64,
    /// Why it stopped learning (a non-finite loss, a failed update); it then serves its
    /// last good parameters.
    stopped: Option<String>,
    /// A policy that serves by parameters (a DQN) learns apart, on a learner of its own
    /// ([`learner`]); a bandit learns where it serves, from every outcome.
    apart: Option<learner::Apart>,
}

/// A learning arm's step whose next state is not known yet (the user's next decision in
/// the session completes it).
#[derive(Debug, Clone)]
struct Half {
    arm: usize,
    state: crate::env::State,
    action: usize,
    reward: f64,
}

/// A user's session in flight.
#[derive(Debug, Clone)]
struct Live {
    session: Session,
    number: u32,
    last_ms: u64,
}

/// A user's session, session counter and decision awaiting feedback, as saved before a
/// request that might not be logged.
struct UserState {
    live: Option<Live>,
    sessions: Option<u32>,
    awaiting: Option<(String, Pending)>,
    half: Option<Half>,
}

/// A decision awaiting its feedback.
#[derive(Debug, Clone)]
struct Pending {
    user: u32,
    arm: usize,
    video: u32,
    session: u32,
    at_ms: u64,
    /// A learning arm's decision: the state it was made in and the slot.
    learn: Option<(crate::env::State, usize)>,
}

/// A request the service answers with an error: the HTTP status and what is wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into() }
    }
}

/// `POST /recommend`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecommendRequest {
    pub user: u64,
    /// Start a new session even when one is in flight.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub new_session: bool,
    /// The session's steps so far, as the client saw them: the session is rebuilt from
    /// them (its features only; the matrix already holds what feedback reported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recent: Option<Vec<RecentStep>>,
}

/// One step of a session, as a client reports it in `recent`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecentStep {
    pub video: u32,
    pub response: Reported,
    #[serde(default)]
    pub watch_time_s: Option<f64>,
}

/// A response as a client reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reported {
    Watched,
    Liked,
    Skipped,
    /// The user left without watching (the session is over).
    #[serde(alias = "session_end")]
    Left,
}

impl Reported {
    pub fn action(self) -> Action {
        match self {
            Reported::Watched => Action::Watched,
            Reported::Liked => Action::Liked,
            Reported::Skipped => Action::Skipped,
            Reported::Left => Action::SessionEnd,
        }
    }

    pub fn of(action: Action) -> Reported {
        match action {
            Action::Watched => Reported::Watched,
            Action::Liked => Reported::Liked,
            Action::Skipped => Reported::Skipped,
            Action::SessionEnd | Action::Done => Reported::Left,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Reported::Watched => "watched",
            Reported::Liked => "liked",
            Reported::Skipped => "skipped",
            Reported::Left => "left",
        }
    }
}

/// The answer to `POST /recommend`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    pub request_id: String,
    pub arm: String,
    pub video: u32,
    pub slot: usize,
    pub candidates: Vec<u32>,
    /// The probability with which the arm's policy chose this video.
    pub propensity: f64,
    /// The probability with which the user was assigned to this arm.
    pub assignment_p: f64,
    /// The user's session number (its steps share it).
    pub session: u32,
    /// The step within the session.
    pub step: usize,
    pub policy: String,
}

/// `POST /feedback`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedbackRequest {
    pub request_id: String,
    pub response: Reported,
    /// Seconds watched (watched or liked; default: the video's whole duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch_time_s: Option<f64>,
    /// The user left after this video (implied by `"response": "left"`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub left: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shared: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub followed: bool,
}

/// The answer to `POST /feedback`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedbackAck {
    pub request_id: String,
    pub arm: String,
    /// The reward the world's reward weights give this response.
    pub reward: f64,
    /// The session is over (the user left, or reached `env.max_steps`).
    pub session_over: bool,
}

/// What `GET /health` tells.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    pub status: String,
    /// The SHA-256 of the world's resolved config: a traffic driver checks it is
    /// simulating the same world.
    pub world: String,
    pub users: usize,
    pub videos: usize,
    pub arms: Vec<log::ArmMeta>,
    pub salt: String,
    pub live_sessions: usize,
    pub pending_feedback: usize,
    pub log: Option<String>,
    /// The learning arms' state (none: every arm is frozen).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub learning: Vec<LearningStatus>,
}

/// A learning arm's state, as `/health` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LearningStatus {
    pub arm: String,
    pub transitions: u64,
    /// Why it stopped learning (it then serves its last parameters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    /// The SHA-256 over the files its policy saves (parameters, optimiser, replay buffer),
    /// when asked (`GET /health?state=digest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_sha256: Option<String>,
    /// A DQN arm, which learns apart from where it serves: the transitions the parameters
    /// it serves by were learnt from (its last logged swap; 0: it serves what it loaded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving_transitions: Option<u64>,
    /// With the state's digest: the SHA-256 of the parameters it serves by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving_sha256: Option<String>,
    /// A DQN arm's last checkpoint beside the log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<learner::CheckpointStatus>,
}

/// The served experiment (see the module docs).
pub struct Service {
    config: Checked,
    env: Env,
    generator: CandidateGenerator,
    arms: Vec<Arm>,
    salt: String,
    fingerprint: String,
    live: HashMap<u32, Live>,
    sessions: HashMap<u32, u32>,
    pending: HashMap<String, Pending>,
    /// Per user, the one decision awaiting its feedback in the user's session: a user's
    /// next recommendation waits for it, and a session that ends (a new one starts) drops
    /// it. The one owner of in-flight decisions.
    awaiting: HashMap<u32, String>,
    /// Earlier runs of the service on this log: each run's request-id prefix and the
    /// highest sequence number it issued (an id of theirs is known even if not pending).
    earlier: HashMap<String, u64>,
    /// Records of the request being answered, written to the log before it is answered.
    outbox: Vec<Record>,
    prefix: String,
    seq: u64,
    last_purge_ms: u64,
    rng: SimRng,
    log: Option<log::Sink>,
    log_dir: Option<PathBuf>,
    /// The log folder's lock, held while serving: a second server on the same folder
    /// is refused instead of interleaving its decisions with this one's.
    _log_lock: Option<crate::experiment::run::RunLock>,
    /// Records kept in memory too ([`Service::capture`]).
    memory: Option<Vec<Record>>,
    /// Per user, a learning arm's last step awaiting its next state.
    halves: HashMap<u32, Half>,
    /// Transitions of the request being answered, learnt once it is logged.
    learn_queue: Vec<(usize, crate::agent::Transition)>,
    /// In a replay, arms whose serving parameters are not known since a swap (the
    /// checkpoint their learner was loaded from passed over them).
    serving_unknown: HashSet<usize>,
    learning_checkpoint_every: std::time::Duration,
}

/// A request id's run prefix and sequence number ("<prefix>-<hex seq>").
fn split_id(id: &str) -> Option<(&str, u64)> {
    let (prefix, seq) = id.rsplit_once('-')?;
    Some((prefix, u64::from_str_radix(seq, 16).ok()?))
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Service {
    /// Builds the world, loads every arm's policy, opens the decision log (replaying an
    /// existing one: its outcomes into the matrix, its unanswered decisions as pending),
    /// and starts each learning DQN arm's learner on its thread.
    pub fn new(opts: &ServeOptions) -> Result<Service> {
        let mut service = Service::open(opts)?;
        service.start_learning()?;
        Ok(service)
    }

    /// A service to replay a log through ([`Service::replay_in_order`]): as
    /// [`Service::new`], but its learning DQN arms learn inline, at the log's swaps.
    pub(crate) fn for_replay(opts: &ServeOptions) -> Result<Service> {
        Service::open(opts)
    }

    fn open(opts: &ServeOptions) -> Result<Service> {
        if opts.arms.is_empty() {
            return Err(Error::Other("serve needs at least one --arm NAME=SOURCE".into()));
        }
        if opts.arms.len() > MAX_ARMS {
            return Err(Error::Other(format!(
                "{} arms given: an experiment here has 1 (serving) to {MAX_ARMS} arms (an A/B/n test)",
                opts.arms.len()
            )));
        }
        let mut names = HashSet::new();
        for a in &opts.arms {
            if !names.insert(a.name.as_str()) {
                return Err(Error::Other(format!("two arms are named `{}`", a.name)));
            }
        }
        let shares = match &opts.shares {
            Some(s) if s.len() == opts.arms.len() => s.clone(),
            Some(s) => return Err(Error::Other(format!("{} shares for {} arms", s.len(), opts.arms.len()))),
            None => vec![1.0 / opts.arms.len() as f64; opts.arms.len()],
        };
        let first_run = opts.arms.iter().find_map(|a| match &a.source {
            Source::Run(dir) => Some(dir.clone()),
            Source::Baseline(_) => None,
        });
        let config = match (&opts.config, &first_run) {
            (Some(c), _) => c.clone(),
            (None, Some(dir)) => crate::experiment::run::config_of_run(dir)?,
            (None, None) => return Err(Error::Other("no world: give a config or a run folder arm".into())),
        };
        crate::drive::preflight::check(&config)?;
        let fingerprint = crate::experiment::checkpoint::fingerprint(&config);
        let world = std::sync::Arc::new(World::generate(&config));
        let mut env = Env::new(&config, world);
        env.stop_listing_interactions();
        let mut arms = Vec::new();
        for (k, (spec, &share)) in opts.arms.iter().zip(&shares).enumerate() {
            let mut arm = load_arm(spec, share, &config, env.layout())?;
            if spec.learn {
                let rng = substream(config.seed, Stream::ServeLearn, k as u64);
                // A policy that serves by parameters learns on a copy of its own.
                let apart = match arm.policy.parameters() {
                    Some(_) => {
                        let learner = load_plain_arm(spec, share, &config, env.layout())?.policy;
                        Some(learner::Apart::inline(learner::Core::new(learner, rng.clone())))
                    }
                    None => None,
                };
                arm.learning = Some(Learning { rng, transitions: 0, stopped: None, apart });
            }
            arms.push(arm);
        }
        let generator = CandidateGenerator::new(env.world.videos.len());
        let started = now_ms();
        let mut service = Service {
            rng: stream(config.seed, Stream::Serve),
            config,
            env,
            generator,
            arms,
            salt: opts.salt.clone(),
            fingerprint,
            live: HashMap::new(),
            sessions: HashMap::new(),
            pending: HashMap::new(),
            awaiting: HashMap::new(),
            earlier: HashMap::new(),
            outbox: Vec::new(),
            prefix: format!("{started:x}"),
            seq: 0,
            last_purge_ms: started,
            log: None,
            log_dir: opts.log.clone(),
            _log_lock: None,
            memory: None,
            halves: HashMap::new(),
            learn_queue: Vec::new(),
            serving_unknown: HashSet::new(),
            learning_checkpoint_every: opts.learning_checkpoint_every,
        };
        if let Some(dir) = &opts.log {
            std::fs::create_dir_all(dir).map_err(Error::io("create", dir))?;
            service._log_lock = Some(crate::experiment::run::RunLock::acquire(dir)?);
            let meta = service.experiment();
            let earlier = log::open_dir(dir, &meta)?;
            service.replay(&earlier);
            if service.arms.iter().any(|a| a.learning.is_some()) && !earlier.is_empty() {
                service.relearn(opts, &earlier)?;
            }
            // This run's ids must not repeat an earlier run's (started in the same millisecond).
            let mut started = started;
            while service.earlier.contains_key(&service.prefix) {
                started += 1;
                service.prefix = format!("{started:x}");
            }
            service.log = Some(log::Sink::open(dir)?);
            // Where this server's run begins: a replay of the log repeats what a restart
            // keeps (no session, no step awaiting its next state) at this point.
            service.emit(Record::Start(log::Start { time_ms: started, run: service.prefix.clone() }));
            service.commit().map_err(|e| Error::Other(e.message))?;
        }
        Ok(service)
    }

    /// The experiment as the log's `experiment.json` records it.
    pub fn experiment(&self) -> log::Experiment {
        log::Experiment {
            fypsim: env!("CARGO_PKG_VERSION").to_string(),
            salt: self.salt.clone(),
            arms: self.arm_meta(),
            world: self.fingerprint.clone(),
            reward: log::RewardMeta::of(&self.config),
            max_steps: self.config.env.max_steps,
            session_timeout_s: SESSION_TIMEOUT_MS / 1000,
        }
    }

    fn arm_meta(&self) -> Vec<log::ArmMeta> {
        self.arms
            .iter()
            .map(|a| log::ArmMeta {
                name: a.name.clone(),
                policy: a.kind.name().into(),
                version: a.version.clone(),
                share: a.share,
            })
            .collect()
    }

    pub fn config(&self) -> &Checked {
        &self.config
    }

    pub fn env(&self) -> &Env {
        &self.env
    }

    pub fn arms(&self) -> &[Arm] {
        &self.arms
    }

    /// Makes the service what the log says it was: every outcome lands in the matrix,
    /// users' session counters move past their logged sessions, and decisions without an
    /// outcome await their feedback again.
    fn replay(&mut self, records: &[Record]) {
        // Per decision without an outcome yet: its place in the log.
        let mut decided: HashMap<&str, (usize, &Decision)> = HashMap::new();
        for (k, r) in records.iter().enumerate() {
            match r {
                Record::Decision(d) => {
                    decided.insert(&d.request_id, (k, d));
                    let n = self.sessions.entry(d.user).or_insert(0);
                    *n = (*n).max(d.session + 1);
                    if let Some((prefix, seq)) = split_id(&d.request_id) {
                        let top = self.earlier.entry(prefix.to_string()).or_insert(0);
                        *top = (*top).max(seq);
                    }
                }
                Record::Start(_) | Record::LearningStopped(_) | Record::Swap(_) => {}
                Record::Outcome(o) => {
                    if decided.remove(o.request_id.as_str()).is_some() && self.user_known(o.user as u64) {
                        let seen = self.seen(o.video, o.response, o.watch_time_s, o.left);
                        self.env.record(None, o.user, seen);
                    }
                }
            }
        }
        // A user's last decision, if it has no outcome and has not expired, awaits its
        // feedback again; any earlier one belonged to a session that had ended.
        let mut last: HashMap<u32, &str> = HashMap::new();
        for r in records {
            if let Record::Decision(d) = r {
                last.insert(d.user, &d.request_id);
            }
        }
        let now = now_ms();
        for (user, id) in last {
            let Some(&(_, d)) = decided.get(id) else { continue };
            if now.saturating_sub(d.time_ms) > PENDING_TTL_MS {
                continue;
            }
            if let Some(arm) = self.arms.iter().position(|a| a.name == d.arm) {
                if self.user_known(user as u64) && (d.video as usize) < self.env.world.videos.len() {
                    let p = Pending { user, arm, video: d.video, session: d.session, at_ms: d.time_ms, learn: None };
                    self.pending.insert(id.to_string(), p);
                    self.awaiting.insert(user, id.to_string());
                }
            }
        }
    }

    /// Whether an earlier run of the service on this log issued `id`.
    fn issued_earlier(&self, id: &str) -> bool {
        split_id(id).is_some_and(|(prefix, seq)| self.earlier.get(prefix).is_some_and(|&top| seq <= top))
    }

    /// Whether this run of the service issued `id`.
    fn issued_here(&self, id: &str) -> bool {
        id.strip_prefix(self.prefix.as_str())
            .and_then(|rest| rest.strip_prefix('-'))
            .and_then(|seq| u64::from_str_radix(seq, 16).ok())
            .is_some_and(|seq| seq < self.seq)
    }

    fn user_known(&self, user: u64) -> bool {
        user < self.env.matrix.n_users() as u64
    }

    /// What the platform records of a reported response.
    fn seen(&self, video: u32, response: Reported, watch_time_s: f64, left: bool) -> Seen {
        let v = &self.env.world.videos[video as usize];
        let action = response.action();
        let e = &self.config.env;
        let dt = if action.counts_view() { watch_time_s } else { 0.5 * (e.skip_time_min_s + e.skip_time_max_s) };
        let fraction = if v.duration_s > 0.0 { (watch_time_s / v.duration_s).min(1.0) } else { 0.0 };
        Seen { video, response: action, watch_s: watch_time_s, dt, fraction, left: left || response == Reported::Left }
    }

    /// A request's user, checked.
    fn user_of(&self, user: u64) -> std::result::Result<u32, ApiError> {
        if self.user_known(user) {
            Ok(user as u32)
        } else {
            Err(ApiError::new(404, format!("unknown user {user}: the world has users 0..{}", self.env.matrix.n_users())))
        }
    }

    /// Why the log cannot be trusted now (its last write or sync failed).
    fn log_failure(&self) -> Option<String> {
        self.log.as_ref()?.failure()
    }

    /// Writes the records of the request being answered to the log: Ok once the
    /// operating system holds them; else nothing of them is in the log, and the caller
    /// answers 503 and undoes what the request did.
    fn commit(&mut self) -> std::result::Result<(), ApiError> {
        let records = std::mem::take(&mut self.outbox);
        if let Some(sink) = &mut self.log {
            sink.write(&records).map_err(|e| {
                ApiError::new(503, format!("the decision log cannot be written ({e}); not answering unlogged: try again later"))
            })?;
        }
        if let Some(m) = &mut self.memory {
            m.extend(records);
        }
        Ok(())
    }

    /// What a recommendation request may change of `user`.
    fn user_state(&self, user: u32) -> UserState {
        let awaiting = self.awaiting.get(&user).and_then(|id| Some((id.clone(), self.pending.get(id)?.clone())));
        UserState {
            live: self.live.get(&user).cloned(),
            sessions: self.sessions.get(&user).copied(),
            awaiting,
            half: self.halves.get(&user).cloned(),
        }
    }

    /// Puts `user` back as `state` had it.
    fn restore(&mut self, user: u32, state: UserState) {
        match state.live {
            Some(l) => self.live.insert(user, l),
            None => self.live.remove(&user),
        };
        match state.sessions {
            Some(n) => self.sessions.insert(user, n),
            None => self.sessions.remove(&user),
        };
        if let Some(id) = self.awaiting.remove(&user) {
            self.pending.remove(&id);
        }
        if let Some((id, p)) = state.awaiting {
            self.pending.insert(id.clone(), p);
            self.awaiting.insert(user, id);
        }
        match state.half {
            Some(h) => self.halves.insert(user, h),
            None => self.halves.remove(&user),
        };
    }

    /// Ends `user`'s session: its decision awaiting feedback, if any, is dropped.
    fn end_session(&mut self, user: u32) {
        self.live.remove(&user);
        // A learning arm's step whose session ended otherwise than by its feedback (a new
        // session, a timeout) has no next state: it is not learnt from.
        self.halves.remove(&user);
        if let Some(id) = self.awaiting.remove(&user) {
            self.pending.remove(&id);
        }
    }

    /// Answers several recommendation requests: each user's observation from the live
    /// matrix, then one `act_batch` per arm (one forward pass for a network).
    pub fn recommend_batch(&mut self, reqs: &[RecommendRequest], now: u64) -> Vec<std::result::Result<Recommendation, ApiError>> {
        let mut out: Vec<Option<std::result::Result<Recommendation, ApiError>>> = vec![None; reqs.len()];
        // (request index, user, observation) per arm.
        let mut by_arm: Vec<Vec<(usize, u32, Observation)>> = (0..self.arms.len()).map(|_| Vec::new()).collect();
        let mut users_in_batch = HashSet::new();
        // What each user's request may change, as it was: restored if the batch cannot be
        // logged (a new session's end of the old one included).
        let mut before: Vec<(u32, UserState)> = Vec::new();
        let shares = self.shares();
        for (i, req) in reqs.iter().enumerate() {
            let prepared = self.user_of(req.user).and_then(|user| {
                if !users_in_batch.insert(user) {
                    return Err(ApiError::new(409, format!("user {user} has another request in flight; send one at a time")));
                }
                before.push((user, self.user_state(user)));
                self.prepare(user, req, now).map(|obs| (user, obs))
            });
            match prepared {
                Ok((user, obs)) => {
                    let arm = arm_of(&self.salt, user as u64, &shares);
                    by_arm[arm].push((i, user, obs));
                }
                Err(e) => out[i] = Some(Err(e)),
            }
        }
        for (arm, group) in by_arm.into_iter().enumerate() {
            if group.is_empty() {
                continue;
            }
            let obs: Vec<&Observation> = group.iter().map(|g| &g.2).collect();
            let chosen = match decide_batch(self.arms[arm].policy.as_mut(), &obs, false, &mut self.rng) {
                Ok(c) => c,
                Err(e) => {
                    for (i, _, _) in &group {
                        out[*i] = Some(Err(ApiError::new(500, format!("arm {} failed: {e}", self.arms[arm].name))));
                    }
                    continue;
                }
            };
            for ((i, user, o), d) in group.iter().zip(chosen) {
                let slot = d.slot.min(o.candidates.len() - 1);
                out[*i] = Some(Ok(self.decide(*user, arm, o, slot, d.propensity, now)));
            }
        }
        // Logged before answered: decisions that cannot be logged are undone and refused
        // (and nothing is learnt from them); logged, their completed steps are learnt.
        if let Err(e) = self.commit() {
            self.learn_queue.clear();
            for r in out.iter_mut() {
                if let Some(Ok(rec)) = r {
                    self.pending.remove(&rec.request_id);
                    *r = Some(Err(e.clone()));
                }
            }
            for (user, state) in before {
                self.restore(user, state);
            }
        }
        self.learn(now);
        out.into_iter().map(|r| r.expect("every request answered")).collect()
    }

    fn shares(&self) -> Vec<f64> {
        self.arms.iter().map(|a| a.share).collect()
    }

    /// The user's session (opened or rebuilt as the request says) and its observation.
    fn prepare(&mut self, user: u32, req: &RecommendRequest, now: u64) -> std::result::Result<Observation, ApiError> {
        if let Some(recent) = &req.recent {
            if recent.len() > MAX_RECENT {
                return Err(ApiError::new(422, format!("`recent` holds {} steps; at most {MAX_RECENT}", recent.len())));
            }
            for (k, s) in recent.iter().enumerate() {
                self.check_video(s.video)?;
                check_watch(s.watch_time_s)?;
                let action = s.response.action();
                let duration = self.env.world.videos[s.video as usize].duration_s;
                if let Some(w) = s.watch_time_s.filter(|&w| !action.counts_view() && w > duration) {
                    return Err(ApiError::new(
                        422,
                        format!(
                            "`recent` step {k}: watch_time_s = {w} for a {}, longer than the video ({duration} s)",
                            action.name()
                        ),
                    ));
                }
                if s.response == Reported::Left && k + 1 < recent.len() {
                    return Err(ApiError::new(
                        422,
                        format!("`recent` step {k} is `left`, but steps follow it: a session ends where its user leaves"),
                    ));
                }
            }
        }
        if req.recent.is_some() && self.arms[arm_of(&self.salt, user as u64, &self.shares())].learning.is_some() {
            return Err(ApiError::new(
                422,
                format!(
                    "user {user}'s arm learns: its sessions cannot be rebuilt from `recent` (a restart could not replay them \
                     to rebuild what the arm learnt); start a new session instead"
                ),
            ));
        }
        let rules = &self.config.env;
        let stale = match self.live.get(&user) {
            None => true,
            Some(l) => {
                req.new_session
                    || req.recent.is_some()
                    || now.saturating_sub(l.last_ms) > SESSION_TIMEOUT_MS
                    || rules.budget_spent(l.session.t)
            }
        };
        if !stale {
            if let Some(id) = self.awaiting.get(&user) {
                let step = self.live.get(&user).map_or(0, |l| l.session.t);
                return Err(ApiError::new(
                    409,
                    format!(
                        "user {user} has a recommendation awaiting its feedback (request {id}, step {step} of this session): \
                         send its feedback first, or start a new session with \"new_session\": true"
                    ),
                ));
            }
        }
        if stale {
            self.end_session(user);
            let number = {
                let n = self.sessions.entry(user).or_insert(0);
                *n += 1;
                *n - 1
            };
            let mut session = self.env.open_served_session(user);
            for s in req.recent.iter().flatten() {
                let seen = self.seen(s.video, s.response, s.watch_time_s.unwrap_or(0.0), false);
                self.env.follow_session(&mut session, s.video, seen.response, seen.watch_s, seen.dt);
            }
            self.live.insert(user, Live { session, number, last_ms: now });
        }
        let live = self.live.get_mut(&user).expect("opened above");
        live.last_ms = now;
        let obs = self.env.observe_session(&live.session, &mut self.generator);
        if obs.exhausted() {
            return Err(ApiError::new(409, format!("user {user} {EXHAUSTED}")));
        }
        Ok(obs)
    }

    fn check_video(&self, video: u32) -> std::result::Result<(), ApiError> {
        let n = self.env.matrix.n_items();
        if (video as usize) < n {
            Ok(())
        } else {
            Err(ApiError::new(422, format!("unknown video {video}: the catalogue has videos 0..{n}")))
        }
    }

    /// Records the decision (a pending feedback and a log record) and returns it.
    fn decide(&mut self, user: u32, arm: usize, obs: &Observation, slot: usize, propensity: f64, now: u64) -> Recommendation {
        let live = &self.live[&user];
        let video = obs.candidates[slot].video;
        let request_id = format!("{}-{:x}", self.prefix, self.seq);
        self.seq += 1;
        let a = &self.arms[arm];
        let rec = Recommendation {
            request_id: request_id.clone(),
            arm: a.name.clone(),
            video,
            slot,
            candidates: obs.candidates.iter().map(|c| c.video).collect(),
            propensity,
            assignment_p: a.share,
            session: live.number,
            step: live.session.t,
            policy: a.version.clone(),
        };
        let learns = a.learning.is_some();
        // A learning arm's previous step in this session is completed by this state.
        if let Some(h) = self.halves.remove(&user) {
            let t = crate::agent::Transition {
                state: h.state,
                action: h.action,
                reward: h.reward,
                next_state: obs.state.clone(),
                terminal: false,
                episode_end: false,
                discount: 1.0,
            };
            self.learn_queue.push((h.arm, t));
        }
        let learn = learns.then(|| (obs.state.clone(), slot));
        self.pending.insert(request_id.clone(), Pending { user, arm, video, session: live.number, at_ms: now, learn });
        self.awaiting.insert(user, request_id.clone());
        if now.saturating_sub(self.last_purge_ms) > 60_000 {
            self.pending.retain(|_, p| now.saturating_sub(p.at_ms) <= PENDING_TTL_MS);
            let pending = &self.pending;
            self.awaiting.retain(|_, id| pending.contains_key(id));
            self.last_purge_ms = now;
        }
        self.emit(Record::Decision(Decision {
            request_id,
            time_ms: now,
            user,
            session: rec.session,
            step: rec.step,
            arm: rec.arm.clone(),
            assignment_p: rec.assignment_p,
            policy: a.kind.name().to_string(),
            version: a.version.clone(),
            candidates: rec.candidates.clone(),
            video,
            slot,
            propensity,
        }));
        rec
    }

    /// One recommendation (see [`Service::recommend_batch`]).
    pub fn recommend(&mut self, req: &RecommendRequest, now: u64) -> std::result::Result<Recommendation, ApiError> {
        self.recommend_batch(std::slice::from_ref(req), now).pop().expect("one answer")
    }

    /// Applies a reported response: the matrix, the video's log and the user's session
    /// move on exactly as a simulated step moves them, and the outcome joins its decision
    /// in the log.
    pub fn feedback(&mut self, req: &FeedbackRequest, now: u64) -> std::result::Result<FeedbackAck, ApiError> {
        check_watch(req.watch_time_s)?;
        // A decision that waited too long, or whose session timed out, is over now, not
        // only when the next purge or request notices.
        if let Some(p) = self.pending.get(&req.request_id) {
            let user = p.user;
            let expired = now.saturating_sub(p.at_ms) > PENDING_TTL_MS;
            let timed_out =
                self.live.get(&user).is_some_and(|l| l.number == p.session && now.saturating_sub(l.last_ms) > SESSION_TIMEOUT_MS);
            if timed_out {
                self.end_session(user);
            } else if expired {
                self.pending.remove(&req.request_id);
                if self.awaiting.get(&user) == Some(&req.request_id) {
                    self.awaiting.remove(&user);
                }
            }
        }
        let Some(p) = self.pending.get(&req.request_id).cloned() else {
            return Err(if self.issued_here(&req.request_id) || self.issued_earlier(&req.request_id) {
                ApiError::new(
                    409,
                    format!(
                        "request {} awaits no feedback: it has had its feedback, or its session ended first (the user \
                         started another), or it waited over {} minutes and expired",
                        req.request_id,
                        PENDING_TTL_MS / 60_000
                    ),
                )
            } else {
                ApiError::new(404, format!("unknown request_id `{}`: not a recommendation this experiment made", req.request_id))
            });
        };
        let v = &self.env.world.videos[p.video as usize];
        let action = req.response.action();
        // A skip leaves before the video's end: a longer watch is a client's error, not
        // watch time (the decision stays pending, so a corrected feedback is taken).
        if let Some(w) = req.watch_time_s.filter(|&w| !action.counts_view() && w > v.duration_s) {
            return Err(ApiError::new(
                422,
                format!(
                    "watch_time_s = {w} for a {}: longer than the video ({} s); a skip watches at most the video's length",
                    action.name(),
                    v.duration_s
                ),
            ));
        }
        let watch = if action.counts_view() { req.watch_time_s.unwrap_or(v.duration_s) } else { req.watch_time_s.unwrap_or(0.0) };
        let seen = self.seen(p.video, req.response, watch, req.left);
        let reward = self.env.world.model.reward_of(action, seen.watch_s, req.shared, req.followed);
        self.emit(Record::Outcome(Outcome {
            request_id: req.request_id.clone(),
            time_ms: now,
            user: p.user,
            session: p.session,
            arm: self.arms[p.arm].name.clone(),
            video: p.video,
            response: req.response,
            left: seen.left,
            watch_time_s: seen.watch_s,
            shared: req.shared,
            followed: req.followed,
            reward,
        }));
        // Logged before applied: an outcome that cannot be logged leaves the world as it
        // was and the decision awaiting its feedback.
        self.commit()?;
        self.pending.remove(&req.request_id);
        if self.awaiting.get(&p.user) == Some(&req.request_id) {
            self.awaiting.remove(&p.user);
        }
        let rules = self.config.env.clone();
        let left = seen.left;
        let mut over = left;
        match self.live.get_mut(&p.user) {
            Some(l) if l.number == p.session => {
                self.env.record(Some(&mut l.session), p.user, seen);
                l.last_ms = now;
                over |= rules.budget_spent(l.session.t);
                if let Some((state, action)) = p.learn.clone() {
                    if over || self.arms[p.arm].kind.is_bandit() {
                        // A bandit learns from every outcome; a DQN's session's last step is
                        // terminal if the user left, else cut by the step budget (its target
                        // bootstraps from the state it left).
                        let next_state =
                            if left { state.clone() } else { self.env.observe_session(&l.session, &mut self.generator).state };
                        let t = crate::agent::Transition {
                            state,
                            action,
                            reward,
                            next_state,
                            terminal: left,
                            episode_end: true,
                            discount: 1.0,
                        };
                        self.learn_queue.push((p.arm, t));
                    } else {
                        self.halves.insert(p.user, Half { arm: p.arm, state, action, reward });
                    }
                }
                if over {
                    self.end_session(p.user);
                }
            }
            _ => self.env.record(None, p.user, seen),
        }
        self.learn(now);
        Ok(FeedbackAck { request_id: req.request_id.clone(), arm: self.arms[p.arm].name.clone(), reward, session_over: over })
    }

    /// Learns the queued transitions of what was just logged, in log order. An arm whose
    /// update fails or whose loss is not finite stops learning and says why (`/health`).
    fn learn(&mut self, now: u64) {
        let mut stops = Vec::new();
        for (arm, t) in std::mem::take(&mut self.learn_queue) {
            let a = &mut self.arms[arm];
            let Some(l) = a.learning.as_mut() else { continue };
            if let Some(apart) = l.apart.as_mut() {
                apart.push(t);
                continue;
            }
            if l.stopped.is_some() {
                continue;
            }
            if let Err(why) = learner::learn_step(a.policy.as_mut(), t, &mut l.rng, &mut l.transitions) {
                l.stopped = Some(why);
            }
            if let Some(why) = &l.stopped {
                stops.push(Record::LearningStopped(log::LearningStopped {
                    time_ms: now,
                    arm: a.name.clone(),
                    transitions: l.transitions,
                    why: why.clone(),
                }));
            }
        }
        // Said in the log too (and so in the A/B report); should the write fail, `/health`
        // still says it.
        if !stops.is_empty() {
            self.outbox.extend(stops);
            let _ = self.commit();
        }
    }

    /// On a restart, a learning arm's state is rebuilt from the log: a fresh service of the
    /// same arms replays every decision and outcome in log order through the same code
    /// that learnt them live, so each learning arm ends as a server that never stopped
    /// would be at the log's end; its policies are then this service's. A DQN arm's
    /// learner starts from its checkpoint beside the log and learns only what came after
    /// it; a checkpoint that does not fit the log is set aside (with a warning) and the
    /// arm learns from the whole log.
    fn relearn(&mut self, opts: &ServeOptions, records: &[Record]) -> Result<()> {
        let dir = self.log_dir.clone();
        // Arms whose checkpoint does not fit: each learns from the whole log, the others
        // from theirs.
        let mut ignored = HashSet::new();
        loop {
            match self.relearn_from(opts, records, dir.as_deref(), &ignored)? {
                Ok(()) => return Ok(()),
                Err((arm, why)) => {
                    eprintln!("warning: {why}; arm {arm} learns again from the whole log");
                    if !ignored.insert(arm) {
                        return Err(Error::Other(format!("the learning arms' state cannot be rebuilt from the log: {why}")));
                    }
                }
            }
        }
    }

    /// [`Service::relearn`] from the learners' checkpoints in `checkpoints` (None: from
    /// the whole log), but for the arms in `ignored`; Ok(Err((arm, why))): the arm's
    /// checkpoint does not fit the log.
    fn relearn_from(
        &mut self,
        opts: &ServeOptions,
        records: &[Record],
        checkpoints: Option<&std::path::Path>,
        ignored: &HashSet<String>,
    ) -> Result<std::result::Result<(), (String, String)>> {
        let mut scratch = Service::for_replay(&ServeOptions { log: None, ..opts.clone() })?;
        if let Some(dir) = checkpoints {
            for a in scratch.arms.iter_mut() {
                let Some(apart) = a.learning.as_mut().and_then(|l| l.apart.as_mut()) else { continue };
                if ignored.contains(&a.name) {
                    continue;
                }
                let d = dir.join(learner::DIR).join(&a.name);
                if let Err(e) = apart.resume(&d, &self.config) {
                    let why = format!("the checkpoint of learning arm {} in {} cannot be used ({e})", a.name, d.display());
                    return Ok(Err((a.name.clone(), why)));
                }
            }
        }
        let names: Vec<String> = self.arms.iter().map(|a| a.name.clone()).collect();
        scratch
            .replay_in_order(&names, records, &mut |_, _, _, _| Ok(()), &mut |_, _| Ok(()))
            .map_err(|e| Error::Other(format!("the learning arms' state cannot be rebuilt from the log: {e}")))?;
        for a in scratch.arms.iter_mut() {
            let Some(apart) = a.learning.as_mut().and_then(|l| l.apart.as_mut()) else { continue };
            if apart.checkpoint_verified() == Some(false) {
                let why = format!(
                    "the checkpoint of learning arm {} holds transitions this log does not give (is it another log's?)",
                    a.name
                );
                return Ok(Err((a.name.clone(), why)));
            }
        }
        if let Some(&k) = scratch.serving_unknown.iter().next() {
            let name = scratch.arms[k].name.clone();
            let why = format!("the parameters learning arm {name} served last are neither in its checkpoint nor learnt after it");
            return Ok(Err((name, why)));
        }
        // The arms whose stop the log has said: a stop not said yet is said again.
        let said: HashSet<&str> =
            records.iter().filter_map(|r| if let Record::LearningStopped(s) = r { Some(s.arm.as_str()) } else { None }).collect();
        for a in &scratch.arms {
            let Some((taken, from)) = a.learning.as_ref().and_then(|l| l.apart.as_ref()).and_then(|p| p.replayed()) else {
                continue;
            };
            match from {
                Some(n) => eprintln!(
                    "learning arm {}: {taken} transitions, {n} from its checkpoint and {} learnt again from the log",
                    a.name,
                    taken.saturating_sub(n)
                ),
                None => eprintln!("learning arm {}: {taken} transitions, learnt again from the whole log", a.name),
            }
        }
        for (mine, theirs) in self.arms.iter_mut().zip(scratch.arms) {
            if mine.learning.is_some() {
                mine.policy = theirs.policy;
                mine.learning = theirs.learning;
                // A learner that stopped before the restart: said in the log already, or
                // to be said (`swap_in`).
                if let Some(l) = mine.learning.as_mut() {
                    if let Some(apart) = &l.apart {
                        l.stopped = apart.status().1.filter(|_| said.contains(mine.name.as_str()));
                    }
                }
            }
        }
        Ok(Ok(()))
    }

    /// Moves each DQN arm's learner onto a thread of its own, checkpointing beside the
    /// log (when there is one); from here on its parameters serve at logged swaps
    /// ([`Service::swap_in`]). A service that replays a log learns inline instead.
    pub fn start_learning(&mut self) -> Result<()> {
        for a in self.arms.iter_mut() {
            let Some(apart) = a.learning.as_mut().and_then(|l| l.apart.as_mut()) else { continue };
            let checkpointing = self.log_dir.as_ref().map(|dir| learner::Checkpointing {
                dir: dir.join(learner::DIR).join(&a.name),
                every: self.learning_checkpoint_every,
                config: self.config.clone(),
                #[cfg(test)]
                fail: Default::default(),
            });
            let serving =
                learner::Snapshot { transitions: apart.serving(), parameters: a.policy.parameters().unwrap_or_default() };
            apart.start(checkpointing, serving)?;
        }
        Ok(())
    }

    /// Between two batches: each DQN arm's newly learnt parameters, if its learner offers
    /// some, are logged as a swap and serve from the next decision on (parameters that
    /// cannot be logged do not serve: the learner offers newer ones after its next
    /// update); a learner that stopped is said in the log.
    pub fn swap_in(&mut self, now: u64) {
        let mut offers = Vec::new();
        let mut stops = Vec::new();
        for (k, a) in self.arms.iter_mut().enumerate() {
            let Some(l) = a.learning.as_mut() else { continue };
            let Some(apart) = l.apart.as_mut() else { continue };
            let offer = apart.poll();
            let (learnt, stopped) = apart.status();
            if let (Some(why), None) = (stopped, &l.stopped) {
                self.outbox.push(Record::LearningStopped(log::LearningStopped {
                    time_ms: now,
                    arm: a.name.clone(),
                    transitions: learnt,
                    why: why.clone(),
                }));
                stops.push((k, why));
            }
            if let Some(snap) = offer {
                self.outbox.push(Record::Swap(log::Swap { time_ms: now, arm: a.name.clone(), transitions: snap.transitions }));
                offers.push((k, snap));
            }
        }
        if self.outbox.is_empty() {
            return;
        }
        if self.commit().is_err() {
            // Not logged, so not served, and the stop not yet said: each waits for the
            // next batch.
            for (k, snap) in offers {
                if let Some(apart) = self.arms[k].learning.as_mut().and_then(|l| l.apart.as_mut()) {
                    apart.put_back(snap);
                }
            }
            return;
        }
        for (k, why) in stops {
            if let Some(l) = self.arms[k].learning.as_mut() {
                l.stopped = Some(why);
            }
        }
        for (k, snap) in offers {
            let a = &mut self.arms[k];
            let Some(l) = a.learning.as_mut() else { continue };
            match a.policy.set_parameters(&snap.parameters) {
                Ok(()) => {
                    if let Some(apart) = l.apart.as_mut() {
                        apart.swapped(snap.transitions);
                    }
                }
                Err(e) => l.stopped = Some(format!("its learnt parameters could not be served: {e}")),
            }
        }
    }

    /// Replays `records` in order through this service (which holds no log and has served
    /// nothing): each decision's session is opened or continued as it was, its
    /// observation rebuilt and its candidates checked against the logged ones, the
    /// decision made again with the logged slot, and each outcome applied as it was (a
    /// learning arm learns from both as it did live). `on_decision` hears each decision
    /// with its arm (an index into `arms`, the log's arm names), its observation and the
    /// replay's request id; `on_outcome` each outcome with what the replay paid.
    pub(crate) fn replay_in_order(
        &mut self,
        arms: &[String],
        records: &[Record],
        on_decision: &mut dyn FnMut(usize, &Decision, Observation, &str) -> Result<()>,
        on_outcome: &mut dyn FnMut(&Outcome, f64) -> Result<()>,
    ) -> Result<()> {
        let mut ids: HashMap<&str, String> = HashMap::new();
        for r in records {
            match r {
                Record::LearningStopped(_) => {}
                Record::Swap(w) => {
                    let Some(arm) = arms.iter().position(|a| *a == w.arm) else { continue };
                    let a = &mut self.arms[arm];
                    let fail = |why: String| Error::Other(format!("the log cannot be replayed at arm {}'s swap: {why}", w.arm));
                    // An arm replayed frozen (a served-log evaluation's stand-in) has nothing to swap.
                    let Some(apart) = a.learning.as_mut().and_then(|l| l.apart.as_mut()) else { continue };
                    match apart.swap_to(w.transitions).map_err(|e| fail(e.to_string()))? {
                        Some(p) => {
                            a.policy.set_parameters(&p).map_err(|e| fail(e.to_string()))?;
                            self.serving_unknown.remove(&arm);
                        }
                        None => {
                            self.serving_unknown.insert(arm);
                        }
                    }
                }
                Record::Start(_) => {
                    // A server (re)started here: it kept no session and no step awaiting its
                    // next state, and the decisions it took feedback for were not learnt.
                    self.live.clear();
                    self.halves.clear();
                    self.pending.values_mut().for_each(|p| p.learn = None);
                }
                Record::Decision(d) => {
                    let Some(arm) = arms.iter().position(|a| *a == d.arm) else { continue };
                    let fail = |why: String| {
                        Error::Other(format!(
                            "the log cannot be replayed at decision {} (user {}, session {}, step {}): {why}",
                            d.request_id, d.user, d.session, d.step
                        ))
                    };
                    if !self.user_known(d.user as u64) {
                        return Err(fail(format!("the world has users 0..{}", self.env.matrix.n_users())));
                    }
                    let req = RecommendRequest { user: d.user as u64, new_session: d.step == 0, recent: None };
                    let obs = self.prepare(d.user, &req, d.time_ms).map_err(|e| fail(e.message))?;
                    if d.step == 0 {
                        // A new session takes the logged number: a request the service
                        // refused (a user who had seen everything) may have opened one
                        // that the log does not show.
                        self.live.get_mut(&d.user).expect("prepare opened it").number = d.session;
                        self.sessions.insert(d.user, d.session + 1);
                    }
                    let live = &self.live[&d.user];
                    if (live.number, live.session.t) != (d.session, d.step) {
                        return Err(fail(format!(
                            "the replay is at session {}, step {} (a session rebuilt from `recent` cannot be replayed)",
                            live.number, live.session.t
                        )));
                    }
                    let rebuilt: Vec<u32> = obs.candidates.iter().map(|c| c.video).collect();
                    if rebuilt != d.candidates || d.slot >= rebuilt.len() {
                        return Err(fail(format!(
                            "the rebuilt candidates differ from the logged ones ({} rebuilt, {} logged; first difference at slot {})",
                            rebuilt.len(),
                            d.candidates.len(),
                            rebuilt.iter().zip(&d.candidates).take_while(|(a, b)| a == b).count()
                        )));
                    }
                    let rec = self.decide(d.user, arm, &obs, d.slot, d.propensity, d.time_ms);
                    self.outbox.clear();
                    self.learn(d.time_ms);
                    self.outbox.clear();
                    on_decision(arm, d, obs, &rec.request_id)?;
                    ids.insert(d.request_id.as_str(), rec.request_id);
                }
                Record::Outcome(o) => {
                    let Some(id) = ids.get(o.request_id.as_str()) else { continue };
                    let fb = FeedbackRequest {
                        request_id: id.clone(),
                        response: o.response,
                        watch_time_s: Some(o.watch_time_s),
                        left: o.left,
                        shared: o.shared,
                        followed: o.followed,
                    };
                    let ack = self.feedback(&fb, o.time_ms).map_err(|e| {
                        Error::Other(format!("the log cannot be replayed at the outcome of {}: {}", o.request_id, e.message))
                    })?;
                    if (ack.reward - o.reward).abs() > 1e-9 {
                        return Err(Error::Other(format!(
                            "the log cannot be replayed at the outcome of {}: the replay pays {}, the log {}",
                            o.request_id, ack.reward, o.reward
                        )));
                    }
                    on_outcome(o, ack.reward)?;
                }
            }
        }
        Ok(())
    }

    /// Each learning arm's name, transitions learnt and whether it still learns (cheap:
    /// for `/metrics` after every batch).
    pub fn learning_counts(&self) -> Vec<(String, u64, bool)> {
        self.learning_view().into_iter().map(|l| (l.arm, l.transitions, l.stopped.is_none())).collect()
    }

    /// Each learning arm: transitions learnt, why it stopped (if it did), where a DQN arm
    /// serves from and its last checkpoint.
    fn learning_view(&self) -> Vec<LearningStatus> {
        self.arms
            .iter()
            .filter_map(|a| {
                let l = a.learning.as_ref()?;
                let (transitions, stopped) = match &l.apart {
                    Some(apart) => {
                        let (n, why) = apart.status();
                        (n, why.or_else(|| l.stopped.clone()))
                    }
                    None => (l.transitions, l.stopped.clone()),
                };
                Some(LearningStatus {
                    arm: a.name.clone(),
                    transitions,
                    stopped,
                    state_sha256: None,
                    serving_transitions: l.apart.as_ref().map(|p| p.serving()),
                    serving_sha256: None,
                    checkpoint: l.apart.as_ref().and_then(|p| p.checkpoint_status()),
                })
            })
            .collect()
    }

    /// [`Service::learning_view`], and with `digest` the SHA-256 of each arm's saved
    /// state once its learner has taken every transition handed over (what a restart must
    /// rebuild exactly; it saves the whole state, replay buffer included, so only on
    /// request) and of the parameters it serves by.
    pub fn learning_status(&mut self, digest: bool) -> Vec<LearningStatus> {
        // One digest per learning arm, in arm order (a DQN's waits for its learner to
        // take everything queued, so the counts read after are final).
        let digests: Vec<String> = if digest {
            self.arms
                .iter_mut()
                .filter_map(|a| {
                    let l = a.learning.as_mut()?;
                    let state = match l.apart.as_mut() {
                        Some(apart) => apart.digest(),
                        None => learner::state_digest(a.policy.as_ref()),
                    };
                    Some(state.unwrap_or_else(|e| format!("unavailable: {e}")))
                })
                .collect()
        } else {
            Vec::new()
        };
        let mut out = self.learning_view();
        if digest {
            let serving = self.arms.iter().filter(|a| a.learning.is_some()).map(|a| {
                let apart = a.learning.as_ref().is_some_and(|l| l.apart.is_some());
                apart.then(|| a.policy.parameters().map(|p| learner::parameters_digest(&p))).flatten()
            });
            for ((o, d), s) in out.iter_mut().zip(digests).zip(serving) {
                o.state_sha256 = Some(d);
                o.serving_sha256 = s;
            }
        }
        out
    }

    /// Keeps every record in memory too, for [`Service::take_records`] (the in-process
    /// simulation of an experiment).
    pub fn capture(&mut self) {
        self.memory.get_or_insert_with(Vec::new);
    }

    /// The records kept since the last call.
    pub fn take_records(&mut self) -> Vec<Record> {
        self.memory.as_mut().map(std::mem::take).unwrap_or_default()
    }

    fn emit(&mut self, record: Record) {
        self.outbox.push(record);
    }

    pub fn health(&self) -> Health {
        self.health_of(self.learning_view())
    }

    /// [`Service::health`], with each learning arm's state digest if `digest`
    /// (`GET /health?state=digest`).
    pub fn health_with(&mut self, digest: bool) -> Health {
        let learning = self.learning_status(digest);
        self.health_of(learning)
    }

    fn health_of(&self, learning: Vec<LearningStatus>) -> Health {
        Health {
            status: if self.log_failure().is_some() { "log_failed".into() } else { "ok".into() },
            world: self.fingerprint.clone(),
            users: self.env.matrix.n_users(),
            videos: self.env.matrix.n_items(),
            arms: self.arm_meta(),
            salt: self.salt.clone(),
            live_sessions: self.live.len(),
            pending_feedback: self.pending.len(),
            log: self.log_dir.as_ref().map(|d| d.display().to_string()),
            learning,
        }
    }

    /// Flushes the log and waits until it is on disk; returns the folder.
    pub fn close(mut self) -> Result<Option<PathBuf>> {
        if let Some(sink) = self.log.take() {
            sink.close()?;
        }
        // Each learner takes what is queued and writes its last checkpoint.
        for a in self.arms.iter_mut() {
            if let Some(apart) = a.learning.as_mut().and_then(|l| l.apart.as_mut()) {
                apart.close();
            }
        }
        Ok(self.log_dir.clone())
    }
}

fn check_watch(w: Option<f64>) -> std::result::Result<(), ApiError> {
    match w {
        Some(x) if !x.is_finite() || !(0.0..=86_400.0).contains(&x) => {
            Err(ApiError::new(422, format!("watch_time_s = {x}: seconds between 0 and 86400")))
        }
        _ => Ok(()),
    }
}

/// Loads an arm's policy, made stochastic by its mixture if it has one (its version names
/// the mixture, so a restart with another is another experiment).
fn load_arm(spec: &ArmSpec, share: f64, config: &Checked, layout: &Layout) -> Result<Arm> {
    let mut arm = load_plain_arm(spec, share, config, layout)?;
    if spec.learn && !arm.kind.learns() {
        return Err(Error::Other(format!(
            "arm {}: `:learn` needs a trained DQN or bandit; {} does not learn",
            spec.name, arm.kind
        )));
    }
    if let (true, Source::Run(dir)) = (spec.learn, &spec.source) {
        let run = crate::experiment::run::config_of_run(dir)?;
        if run.policy == PolicyKind::Dqn && run.dqn.n_step > 1 {
            return Err(Error::Other(format!(
                "arm {}: a DQN with dqn.n_step = {} cannot learn while served: its n-step returns would join different \
                 users' steps, which interleave; serve it frozen, or train one with n_step = 1",
                spec.name, run.dqn.n_step
            )));
        }
    }
    if spec.mix != Mix::Plain {
        let mix = spec.mix.describe();
        let text = format!("{}@{mix}", describe(&spec.source));
        arm.policy = Box::new(SpecPolicy::wrap(arm.policy, spec.mix, text));
        let (name, digest) = arm.version.split_once('@').unwrap_or((&arm.version, ""));
        arm.version = format!("{name}@{mix}@{digest}");
    }
    if spec.learn {
        arm.version.push_str(":learn");
    }
    Ok(arm)
}

/// Loads an arm's policy as it is; a run folder's agent must see the world the service builds.
fn load_plain_arm(spec: &ArmSpec, share: f64, config: &Checked, layout: &Layout) -> Result<Arm> {
    if let Source::Baseline(kind) = &spec.source {
        refuse_truth_readers(*kind, &format!("arm {}", spec.name))?;
    }
    match &spec.source {
        Source::Baseline(kind) => Ok(Arm {
            name: spec.name.clone(),
            kind: *kind,
            version: format!("{}@fypsim-{}", kind.name(), env!("CARGO_PKG_VERSION")),
            share,
            policy: make_policy(*kind, config)?,
            learning: None,
        }),
        Source::Run(dir) => {
            let run = crate::experiment::run::config_of_run(dir)?;
            // The run's own policy: a folder of an oracle's run serves the truth too.
            refuse_truth_readers(run.policy, &format!("arm {} ({})", spec.name, dir.display()))?;
            crate::drive::preflight::check(&run)?;
            crate::experiment::run::require_finished(dir, &format!("arm {}", spec.name))?;
            let ck = crate::experiment::checkpoint::open(dir, &run)?;
            if !crate::experiment::run::agent_fits(&run, config) || &Layout::of(&run) != layout {
                return Err(Error::Other(format!(
                    "arm {}: the agent in {} was trained on another world or observation layout than the one served \
                     (world, seed, candidates and the dqn's inputs must match); serve it with its own run's config",
                    spec.name,
                    dir.display()
                )));
            }
            let mut policy = make_policy(run.policy, &run)?;
            policy.load(&ck.dir)?;
            let weights = ck.dir.join(if run.policy.is_bandit() { crate::agent::bandit::BANDIT_FILE } else { "agent.ot" });
            let digest = match std::fs::read(&weights) {
                Ok(bytes) => crate::files::sha256(&bytes)[..12].to_string(),
                Err(_) => crate::experiment::checkpoint::fingerprint(&run)[..12].to_string(),
            };
            Ok(Arm {
                name: spec.name.clone(),
                kind: run.policy,
                version: format!("{}@{digest}", run.policy.name()),
                share,
                policy,
                learning: None,
            })
        }
    }
}

/// The run folder's path as given, for messages.
pub fn describe(source: &Source) -> String {
    match source {
        Source::Run(d) => d.display().to_string(),
        Source::Baseline(k) => k.name().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::traffic::{rehearse, SimUser};
    use super::*;
    use crate::config::Config;
    use crate::rng::stream;

    fn options(toml: &str, arms: &[(&str, PolicyKind)]) -> ServeOptions {
        ServeOptions {
            arms: arms.iter().map(|(n, k)| ArmSpec::plain(n, Source::Baseline(*k))).collect(),
            shares: None,
            salt: "test".into(),
            config: Some(Config::from_toml_str(toml, &[]).unwrap()),
            log: None,
            learning_checkpoint_every: crate::serve::LEARNING_CHECKPOINT_EVERY,
        }
    }

    /// Feedback "watched" for request `id`.
    pub(in crate::serve) fn watched(id: &str, watch_time_s: Option<f64>) -> FeedbackRequest {
        FeedbackRequest {
            request_id: id.into(),
            response: Reported::Watched,
            watch_time_s,
            left: false,
            shared: false,
            followed: false,
        }
    }

    const SMALL: &str = "seed = 3\n[world]\nn_videos = 400\nn_users = 120\n[env]\nmax_steps = 12\n";

    #[test]
    fn users_stay_in_their_arm_and_every_decision_is_logged_with_its_outcome() {
        let opts = options(SMALL, &[("A", PolicyKind::Greedy), ("B", PolicyKind::Random)]);
        let mut service = Service::new(&opts).unwrap();
        let world = service.env().world.clone();
        let users: Vec<u32> = (0..120).collect();
        let records = rehearse(&mut service, &world, &users, 2, 9).unwrap();
        let mut arm_of_user: HashMap<u32, String> = HashMap::new();
        let (mut decisions, mut outcomes) = (HashSet::new(), HashSet::new());
        for r in &records {
            match r {
                Record::Decision(d) => {
                    let expected = if arm_of("test", d.user as u64, &[0.5, 0.5]) == 0 { "A" } else { "B" };
                    assert_eq!(d.arm, expected);
                    assert_eq!(arm_of_user.entry(d.user).or_insert_with(|| d.arm.clone()), &d.arm);
                    assert_eq!(d.candidates[d.slot], d.video);
                    assert_eq!(d.assignment_p, 0.5);
                    // Greedy shows slot 0 for sure; random one of the candidates uniformly.
                    let p = if d.arm == "A" { 1.0 } else { 1.0 / d.candidates.len().min(10) as f64 };
                    assert!((d.propensity - p).abs() < 1e-12, "{} {}", d.propensity, p);
                    assert!(decisions.insert(d.request_id.clone()));
                }
                Record::Outcome(o) => {
                    assert!(decisions.contains(&o.request_id), "an outcome follows its decision");
                    assert!(outcomes.insert(o.request_id.clone()));
                }
                Record::Start(_) | Record::LearningStopped(_) | Record::Swap(_) => panic!("only decisions and outcomes here"),
            }
        }
        assert_eq!(decisions, outcomes);
        assert_eq!(arm_of_user.len(), 120);
        let b = arm_of_user.values().filter(|a| *a == "B").count();
        assert!((40..=80).contains(&b), "{b} of 120 users in B");
        // Two sessions per user, numbered 0 and 1.
        let sessions: HashSet<(u32, u32)> =
            records.iter().filter_map(|r| if let Record::Decision(d) = r { Some((d.user, d.session)) } else { None }).collect();
        assert_eq!(sessions.len(), 240);
    }

    /// A served step changes the world exactly as a simulated one: the same matrix entry
    /// and view count, and the next observation is the same.
    #[test]
    fn feedback_updates_the_world_like_a_simulated_step() {
        let toml = "seed = 5\n[world]\nn_videos = 300\nn_users = 40\n[dynamics.behaviour]\nenabled = true\n\
                    duration_min_s = 5.0\nduration_max_s = 40.0\n";
        let opts = options(toml, &[("A", PolicyKind::Greedy)]);
        let mut service = Service::new(&opts).unwrap();
        let config = service.config().clone();
        let mut env = Env::new(&config, service.env().world.clone());
        let mut rng = stream(1, Stream::Responses);
        for user in [3u32, 3, 17] {
            let obs = env.reset(user).clone();
            let rec = service.recommend(&RecommendRequest { user: user as u64, new_session: true, recent: None }, 1).unwrap();
            assert_eq!(rec.video, obs.candidates[0].video, "greedy: slot 0 of the same candidates");
            let out = env.step(0, &mut rng);
            let fb = FeedbackRequest {
                request_id: rec.request_id.clone(),
                response: Reported::of(out.response),
                watch_time_s: Some(out.watch_s),
                left: out.terminal,
                shared: false,
                followed: false,
            };
            let ack = service.feedback(&fb, 2).unwrap();
            assert_eq!(ack.session_over, out.terminal);
            assert!(service.env().matrix == env.matrix);
            assert_eq!(service.env().sim().views, env.sim().views);
            if !out.terminal {
                // The session's features (and the video logs behind them) follow too.
                let served = service.env.observe_session(&service.live[&user].session, &mut service.generator);
                assert_eq!(format!("{:?}", served.state), format!("{:?}", env.observation().state));
                let next =
                    service.recommend(&RecommendRequest { user: user as u64, new_session: false, recent: None }, 3).unwrap();
                assert_eq!(next.candidates, env.observation().candidates.iter().map(|c| c.video).collect::<Vec<_>>());
                assert_eq!(next.step, 1);
                // Leave it unanswered: the next user's session is new anyway.
            }
        }
    }

    #[test]
    fn bad_requests_are_answered_with_what_is_wrong() {
        let opts = options(SMALL, &[("A", PolicyKind::Greedy)]);
        let mut service = Service::new(&opts).unwrap();
        let err = service.recommend(&RecommendRequest { user: 120, new_session: false, recent: None }, 1).unwrap_err();
        assert_eq!(err.status, 404);
        assert!(err.message.contains("unknown user 120") && err.message.contains("0..120"), "{}", err.message);
        let fb = |id: &str| watched(id, Some(3.0));
        let e = service.feedback(&fb("nope"), 1).unwrap_err();
        assert_eq!(e.status, 404);
        let rec = service.recommend(&RecommendRequest { user: 4, new_session: false, recent: None }, 1).unwrap();
        let e = service.feedback(&FeedbackRequest { watch_time_s: Some(f64::NAN), ..fb(&rec.request_id) }, 1).unwrap_err();
        assert_eq!(e.status, 422);
        // A skip that watched longer than the video is refused (it was taken as watch
        // time), and the decision still takes a corrected feedback.
        let skip = FeedbackRequest { response: Reported::Skipped, watch_time_s: Some(1e4), ..fb(&rec.request_id) };
        let e = service.feedback(&skip, 1).unwrap_err();
        assert_eq!(e.status, 422);
        assert!(e.message.contains("longer than the video"), "{}", e.message);
        service.feedback(&fb(&rec.request_id), 2).unwrap();
        let e = service.feedback(&fb(&rec.request_id), 3).unwrap_err();
        assert_eq!((e.status, e.message.contains("awaits no feedback")), (409, true));
        let recent = vec![RecentStep { video: 100_000, response: Reported::Skipped, watch_time_s: None }];
        let e = service.recommend(&RecommendRequest { user: 4, new_session: false, recent: Some(recent) }, 4).unwrap_err();
        assert_eq!(e.status, 422);
        assert!(e.message.contains("unknown video 100000"));
        // A decision left without feedback for over an hour is forgotten.
        let t0 = now_ms();
        let old = service.recommend(&RecommendRequest { user: 8, new_session: false, recent: None }, t0).unwrap();
        let later = t0 + PENDING_TTL_MS + 61_000;
        service.recommend(&RecommendRequest { user: 9, new_session: false, recent: None }, later).unwrap();
        let e = service.feedback(&fb(&old.request_id), later).unwrap_err();
        assert_eq!((e.status, e.message.contains("expired")), (409, true), "{}", e.message);
        // Two requests of one user in one batch: the second is refused, the first served.
        let r = RecommendRequest { user: 5, new_session: false, recent: None };
        let answers = service.recommend_batch(&[r.clone(), r], 5);
        assert!(answers[0].is_ok());
        assert_eq!(answers[1].as_ref().unwrap_err().status, 409);
        // Policies that read the simulator's truth cannot be served.
        let e = ArmSpec::parse("A=myopic_oracle").unwrap_err().to_string();
        assert!(e.contains("latent state"), "{e}");
        assert!(ArmSpec::parse("A=no/such/run").is_err());
        assert!(parse_split("50/50", 2).is_ok() && parse_split("50", 2).is_err() && parse_split("0/100", 2).is_err());
    }

    /// When the log cannot be written (a full disk), nothing is answered unlogged: the
    /// decision is refused with 503 and undone (the user may ask again), and feedback is
    /// refused without moving the world (the decision still awaits it).
    #[cfg(target_os = "linux")]
    #[test]
    fn a_full_disk_refuses_with_503_and_undoes_the_request() {
        let dir = tempfile::tempdir().unwrap();
        let mut service = Service::new(&options(SMALL, &[("A", PolicyKind::Greedy)])).unwrap();
        let req = RecommendRequest { user: 1, new_session: false, recent: None };
        let rec = service.recommend(&req, 1).unwrap();
        // The log's file is a device that is always full (never read it: it reads zeros
        // without end).
        std::os::unix::fs::symlink("/dev/full", dir.path().join(log::LOG)).unwrap();
        service.log = Some(log::Sink::open(dir.path()).unwrap());
        let matrix = format!("{:?}", service.env.matrix);
        let fb = watched(&rec.request_id, None);
        let e = service.feedback(&fb, 2).unwrap_err();
        assert_eq!(e.status, 503);
        assert!(e.message.contains("No space left") && e.message.contains("unlogged"), "{}", e.message);
        assert_eq!(format!("{:?}", service.env.matrix), matrix, "an unlogged outcome moved the world");
        assert_eq!(service.health().status, "log_failed");
        assert!(service.pending.contains_key(&rec.request_id));
        let e = service.recommend(&RecommendRequest { user: 2, ..req.clone() }, 3).unwrap_err();
        assert_eq!(e.status, 503);
        assert!(!service.awaiting.contains_key(&2) && service.pending.len() == 1, "the refused decision was not undone");
        // A refused new session leaves the old one, and its decision awaiting, as they were.
        let (live, sessions) = (format!("{:?}", service.live.get(&1)), service.sessions.get(&1).copied());
        let e = service.recommend(&RecommendRequest { new_session: true, ..req.clone() }, 3).unwrap_err();
        assert_eq!(e.status, 503);
        assert_eq!((format!("{:?}", service.live.get(&1)), service.sessions.get(&1).copied()), (live, sessions));
        assert_eq!(service.awaiting.get(&1), Some(&rec.request_id));
        // Room again (the log is a file again): both go through.
        std::fs::remove_file(dir.path().join(log::LOG)).unwrap();
        service.log = Some(log::Sink::open(dir.path()).unwrap());
        service.feedback(&fb, 4).unwrap();
        service.recommend(&RecommendRequest { user: 2, ..req }, 5).unwrap();
        assert_eq!(service.health().status, "ok");
        let text = std::fs::read_to_string(dir.path().join(log::LOG)).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
    }

    /// One owner of a user's in-flight decision and of a session's end: a second request
    /// while a decision awaits feedback is refused (409), a new session drops the old
    /// session's decision, and its late feedback is refused (409) instead of logged into
    /// a session that has ended.
    #[test]
    fn one_decision_in_flight_per_user_and_none_after_its_session_ended() {
        let mut service = Service::new(&options(SMALL, &[("A", PolicyKind::Greedy)])).unwrap();
        service.capture();
        let req = RecommendRequest { user: 3, new_session: false, recent: None };
        let first = service.recommend(&req, 1).unwrap();
        let e = service.recommend(&req, 2).unwrap_err();
        assert_eq!(e.status, 409);
        assert!(e.message.contains("awaiting its feedback") && e.message.contains(&first.request_id), "{}", e.message);
        let fb = |id: &str| watched(id, None);
        service.feedback(&fb(&first.request_id), 3).unwrap();
        let second = service.recommend(&req, 4).unwrap();
        assert_eq!((second.session, second.step), (first.session, first.step + 1));
        // A new session ends the old one and its decision with it.
        let third = service.recommend(&RecommendRequest { new_session: true, ..req.clone() }, 5).unwrap();
        assert_eq!((third.session, third.step), (first.session + 1, 0));
        let e = service.feedback(&fb(&second.request_id), 6).unwrap_err();
        assert_eq!(e.status, 409);
        assert!(e.message.contains("session ended"), "{}", e.message);
        // Nothing of the refused requests is in the log.
        let records = service.take_records();
        assert_eq!(records.len(), 4, "{records:?}");
    }

    /// A restart on the same log is the service it was: the matrix and each user's session
    /// counter come back from the log; another experiment's arms or world are refused,
    /// naming what differs; more than eight arms are refused.
    #[test]
    fn a_restart_replays_the_log_and_refuses_another_experiment() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = options(SMALL, &[("A", PolicyKind::Greedy), ("B", PolicyKind::Random)]);
        opts.log = Some(dir.path().to_path_buf());
        let mut service = Service::new(&opts).unwrap();
        let world = service.env().world.clone();
        let users: Vec<u32> = (0..30).collect();
        // rehearse captures in memory too; the log gets every record as well.
        rehearse(&mut service, &world, &users, 2, 4).unwrap();
        let (matrix, sessions) = (format!("{:?}", service.env.matrix), service.sessions.clone());
        service.close().unwrap();
        let again = Service::new(&opts).unwrap();
        assert_eq!(format!("{:?}", again.env.matrix), matrix);
        assert_eq!(again.sessions, sessions);
        drop(again);
        let other = |arms: &[(&str, PolicyKind)], toml: &str| {
            let mut o = options(toml, arms);
            o.log = Some(dir.path().to_path_buf());
            Service::new(&o).err().map(|e| e.to_string()).unwrap_or_default()
        };
        let e = other(&[("A", PolicyKind::Greedy), ("B", PolicyKind::MostViewed)], SMALL);
        assert!(e.contains("another experiment") && e.contains("arms"), "{e}");
        let e = other(&[("A", PolicyKind::Greedy), ("B", PolicyKind::Random)], &SMALL.replace("seed = 3", "seed = 4"));
        assert!(e.contains("another experiment") && e.contains("world"), "{e}");
        let names = ["A", "B", "C", "D", "E", "F", "G", "H", "I"];
        let nine: Vec<(&str, PolicyKind)> = names.iter().map(|n| (*n, PolicyKind::Greedy)).collect();
        let e = Service::new(&options(SMALL, &nine)).err().unwrap().to_string();
        assert!(e.contains("9 arms") && e.contains("to 8 arms"), "{e}");
    }

    /// A session ends after `env.max_steps` steps (the feedback says so and the next
    /// request opens a new one); `recent` starts a new session and ends the old one's
    /// decision; `recent` longer than the limit is refused.
    #[test]
    fn sessions_end_at_max_steps_and_recent_ends_the_old_decision() {
        let mut service = Service::new(&options(SMALL, &[("A", PolicyKind::Greedy)])).unwrap();
        let fb = |id: &str| watched(id, Some(1.0));
        let req = RecommendRequest { user: 5, new_session: true, recent: None };
        let mut over = false;
        let mut steps = 0;
        let first = service.recommend(&req, 1).unwrap();
        let mut rec = first.clone();
        while !over {
            over = service.feedback(&fb(&rec.request_id), 2).unwrap().session_over;
            steps += 1;
            if !over {
                rec = service.recommend(&RecommendRequest { new_session: false, ..req.clone() }, 3).unwrap();
                assert_eq!(rec.session, first.session);
            }
        }
        assert_eq!(steps, 12, "env.max_steps = 12");
        let next = service.recommend(&RecommendRequest { new_session: false, ..req.clone() }, 4).unwrap();
        assert_eq!((next.session, next.step), (first.session + 1, 0));
        let rebuilt = service.recommend(&RecommendRequest { user: 5, new_session: false, recent: Some(Vec::new()) }, 5).unwrap();
        assert_eq!(rebuilt.session, next.session + 1);
        let e = service.feedback(&fb(&next.request_id), 6).unwrap_err();
        assert_eq!(e.status, 409);
        let long = vec![RecentStep { video: 1, response: Reported::Skipped, watch_time_s: None }; MAX_RECENT + 1];
        let e = service.recommend(&RecommendRequest { user: 6, new_session: false, recent: Some(long) }, 7).unwrap_err();
        assert_eq!(e.status, 422);
    }

    /// Time ends decisions when their feedback comes, not only when a later request
    /// notices: 30 minutes without a request end the session (its decision's feedback is
    /// 409), an hour ends a decision. After a restart, only each user's last decision
    /// awaits feedback, and not once it has expired. `recent` is checked as feedback is.
    #[test]
    fn time_and_restarts_end_decisions_and_recent_is_checked() {
        let fb = |id: &str| watched(id, Some(1.0));
        let dir = tempfile::tempdir().unwrap();
        let mut opts = options(SMALL, &[("A", PolicyKind::Greedy)]);
        opts.log = Some(dir.path().to_path_buf());
        let mut service = Service::new(&opts).unwrap();
        let t0 = now_ms();
        let req = |user| RecommendRequest { user, new_session: true, recent: None };
        let idle = service.recommend(&req(1), t0).unwrap();
        let e = service.feedback(&fb(&idle.request_id), t0 + SESSION_TIMEOUT_MS + 1).unwrap_err();
        assert_eq!(e.status, 409, "{}", e.message);
        // A superseded decision (user 2's first) and the last one (its second).
        let first = service.recommend(&req(2), t0).unwrap();
        let second = service.recommend(&req(2), t0 + 1).unwrap();
        let e = service.feedback(&fb(&first.request_id), t0 + 2).unwrap_err();
        assert_eq!(e.status, 409);
        // User 3's decision is two hours old when the service restarts.
        let old = service.recommend(&req(3), t0 - 2 * PENDING_TTL_MS).unwrap();
        let replayed = service.recommend(&req(5), t0).unwrap();
        service.close().unwrap();
        let mut service = Service::new(&opts).unwrap();
        assert_eq!(service.feedback(&fb(&first.request_id), t0 + 3).unwrap_err().status, 409);
        assert_eq!(service.feedback(&fb(&old.request_id), t0 + 3).unwrap_err().status, 409);
        service.feedback(&fb(&second.request_id), t0 + 3).unwrap();
        // Sessions are not kept across a restart: user 5's next request opens a new one,
        // which ends the decision replayed as awaiting.
        let next = service.recommend(&RecommendRequest { user: 5, new_session: false, recent: None }, t0 + 3).unwrap();
        assert_eq!((next.session, next.step), (replayed.session + 1, 0));
        assert_eq!(service.feedback(&fb(&replayed.request_id), t0 + 3).unwrap_err().status, 409);
        let step = |response, watch| RecentStep { video: 1, response, watch_time_s: watch };
        for recent in [vec![step(Reported::Skipped, Some(1e5))], vec![step(Reported::Left, None), step(Reported::Watched, None)]]
        {
            let e =
                service.recommend(&RecommendRequest { user: 4, new_session: false, recent: Some(recent) }, t0 + 4).unwrap_err();
            assert_eq!(e.status, 422, "{}", e.message);
        }
    }

    /// A session rebuilt from the steps a client reports observes what the session the
    /// service kept observed.
    #[test]
    fn a_session_is_rebuilt_from_recent_steps() {
        let opts = options(SMALL, &[("A", PolicyKind::Greedy)]);
        let mut service = Service::new(&opts).unwrap();
        let world = service.env().world.clone();
        let mut u = SimUser::new(&world, 7, 1);
        let mut recent = Vec::new();
        let mut last = None;
        for k in 0..3 {
            let rec = service.recommend(&u.request(&world), k).unwrap();
            let (fb, _) = u.respond(&world, &crate::config::EnvConfig { max_steps: 1000, ..Default::default() }, &rec);
            if fb.left {
                break;
            }
            recent.push(RecentStep { video: rec.video, response: fb.response, watch_time_s: fb.watch_time_s });
            service.feedback(&fb, k).unwrap();
            last = Some(rec.step);
        }
        let Some(_) = last else { return };
        let kept = service.live[&7].session.clone();
        service.recommend(&RecommendRequest { user: 7, new_session: false, recent: Some(recent) }, 10).unwrap();
        let rebuilt = &service.live[&7].session;
        assert_eq!(rebuilt.t, kept.t);
        assert_eq!(format!("{:?}", rebuilt), format!("{kept:?}"));
    }

    /// Counts a policy's `act_batch` calls (and any `act`), delegating the choice.
    struct Counting {
        inner: Box<dyn Policy>,
        calls: std::sync::Arc<std::sync::Mutex<Vec<usize>>>,
    }

    impl Policy for Counting {
        fn kind(&self) -> PolicyKind {
            self.inner.kind()
        }
        fn act(&mut self, obs: &Observation, explore: bool, rng: &mut SimRng) -> Result<usize> {
            self.calls.lock().unwrap().push(0);
            self.inner.act(obs, explore, rng)
        }
        fn act_batch(&mut self, obs: &[&Observation], explore: bool, rng: &mut SimRng) -> Result<Vec<usize>> {
            self.calls.lock().unwrap().push(obs.len());
            self.inner.act_batch(obs, explore, rng)
        }
        fn propensity(&self, obs: &Observation, slot: usize, index: usize) -> f64 {
            self.inner.propensity(obs, slot, index)
        }
    }

    /// docs/serving.md: the engine answers the requests waiting in one batch with one
    /// `act_batch` (one forward pass of a network) per arm, not one per request.
    #[test]
    fn a_batch_of_requests_is_one_act_batch_per_arm() {
        let opts = options(SMALL, &[("A", PolicyKind::Greedy), ("B", PolicyKind::Random)]);
        let mut service = Service::new(&opts).unwrap();
        let calls: Vec<_> = (0..2).map(|_| std::sync::Arc::new(std::sync::Mutex::new(Vec::new()))).collect();
        for (arm, c) in service.arms.iter_mut().zip(&calls) {
            let inner = std::mem::replace(&mut arm.policy, Box::new(crate::agent::baselines::RandomPolicy));
            arm.policy = Box::new(Counting { inner, calls: std::sync::Arc::clone(c) });
        }
        let reqs: Vec<RecommendRequest> =
            (0..60u64).map(|user| RecommendRequest { user, new_session: true, recent: None }).collect();
        let answers = service.recommend_batch(&reqs, 1);
        let in_arm = |name: &str| answers.iter().filter(|a| a.as_ref().unwrap().arm == name).count();
        let (a, b) = (in_arm("A"), in_arm("B"));
        assert!(a > 0 && b > 0 && a + b == 60, "{a} + {b}");
        assert_eq!(*calls[0].lock().unwrap(), vec![a], "arm A: one act_batch for its {a} requests");
        assert_eq!(*calls[1].lock().unwrap(), vec![b], "arm B: one act_batch for its {b} requests");
    }

    /// An arm served with a mixture draws its choices and logs each one's exact
    /// propensity, so its log supports off-policy evaluation; the mixture is part of the
    /// arm's version; truth readers stay refused with a mixture too.
    #[test]
    fn mixture_arms_draw_and_log_exact_propensities() {
        let mut opts = options(SMALL, &[]);
        opts.arms = vec![ArmSpec::parse("A=greedy").unwrap(), ArmSpec::parse("B=greedy@epsilon=0.5").unwrap()];
        let mut service = Service::new(&opts).unwrap();
        let meta = service.arm_meta();
        assert!(meta[1].version.starts_with("greedy@epsilon=0.5@fypsim-"), "{}", meta[1].version);
        assert!(meta[0].version.starts_with("greedy@fypsim-"), "{}", meta[0].version);
        let world = service.env().world.clone();
        let users: Vec<u32> = (0..120).collect();
        let records = rehearse(&mut service, &world, &users, 2, 4).unwrap();
        let (mut off_top, mut in_b) = (0, 0);
        for r in &records {
            if let Record::Decision(d) = r {
                let n = d.candidates.len().min(10) as f64;
                if d.arm == "A" {
                    assert_eq!((d.slot, d.propensity), (0, 1.0));
                    continue;
                }
                in_b += 1;
                let p = if d.slot == 0 { 0.5 + 0.5 / n } else { 0.5 / n };
                assert!((d.propensity - p).abs() < 1e-12, "slot {} of {n}: {} against {p}", d.slot, d.propensity);
                off_top += (d.slot != 0) as usize;
            }
        }
        // About half the choices are uniform: (n - 1) / n of those leave slot 0.
        assert!(in_b > 200 && off_top * 10 > in_b * 3 && off_top * 10 < in_b * 6, "{off_top} of {in_b}");
        for bad in ["A=greedy@epsilon=2", "A=greedy@softmax=0", "A=greedy@temperature=1", "A=greedy@", "A=oracle@epsilon=0.1"] {
            let e = ArmSpec::parse(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
        assert!(ArmSpec::parse("A=myopic_oracle@softmax=1").unwrap_err().to_string().contains("latent state"));
        assert_eq!(ArmSpec::parse("A=random@softmax=2").unwrap().mix, Mix::Softmax(2.0));
        // An `@` that starts no mixture belongs to the run folder's path.
        let e = ArmSpec::parse("A=/no/such/run@home").unwrap_err().to_string();
        assert!(e.contains("neither a servable baseline") && !e.contains("mixture"), "{e}");
    }

    /// docs/serving.md: with `dynamics.behaviour` on, the service pays the watch-time,
    /// share and follow terms as the user model does (`rehearse` fails on any difference).
    #[test]
    fn with_behaviour_on_the_service_pays_what_the_user_model_pays() {
        let toml = "seed = 8\n[world]\nn_videos = 400\nn_users = 150\n[env]\nmax_steps = 12\n[dynamics.behaviour]\n\
                    enabled = true\nshare_rate = 0.2\nfollow_rate = 0.2\nreward_watch_s = 0.05\nreward_share = 2.0\n\
                    reward_follow = 3.0\n";
        let mut service = Service::new(&options(toml, &[("A", PolicyKind::Greedy)])).unwrap();
        let world = service.env().world.clone();
        let users: Vec<u32> = (0..150).collect();
        let records = rehearse(&mut service, &world, &users, 2, 5).unwrap();
        let outcomes: Vec<&Outcome> =
            records.iter().filter_map(|r| if let Record::Outcome(o) = r { Some(o) } else { None }).collect();
        assert!(outcomes.iter().any(|o| o.shared) && outcomes.iter().any(|o| o.followed), "no share or follow to pay");
        assert!(outcomes.iter().any(|o| o.watch_time_s > 0.0 && o.reward.fract() != 0.0));
    }

    /// docs/serving.md: a learning arm whose update fails (a non-finite reward, say) stops
    /// learning, keeps its last good parameters and says why; it serves on. A bandit
    /// learns where it serves; a DQN on a learner of its own, whose stop the engine learns
    /// between two batches.
    #[test]
    fn a_diverging_learning_arm_stops_learning_and_keeps_its_last_parameters() {
        for kind in [PolicyKind::LinUcb, PolicyKind::Dqn] {
            let mut service = Service::new(&options(SMALL, &[("A", PolicyKind::Greedy)])).unwrap();
            let config = service.config().clone();
            let mut c: crate::config::Config = (*config).clone();
            c.dqn.learning_starts = 1;
            c.dqn.batch_size = 1;
            let c = c.check().unwrap();
            service.arms[0].policy = make_policy(kind, &c).unwrap();
            let apart = (kind == PolicyKind::Dqn).then(|| {
                learner::Apart::inline(learner::Core::new(make_policy(kind, &c).unwrap(), stream(1, Stream::ServeLearn)))
            });
            service.arms[0].learning =
                Some(Learning { rng: stream(1, Stream::ServeLearn), transitions: 0, stopped: None, apart });
            service.start_learning().unwrap();
            service.capture();
            // Two good steps of user 3, learnt.
            let fb = |id: &str| watched(id, Some(1.0));
            for now in [1, 3] {
                service.swap_in(now);
                let rec = service.recommend(&RecommendRequest { user: 3, new_session: now == 1, recent: None }, now).unwrap();
                service.feedback(&fb(&rec.request_id), now + 1).unwrap();
            }
            let rec = service.recommend(&RecommendRequest { user: 3, new_session: false, recent: None }, 5).unwrap();
            let good = service.learning_status(true)[0].clone();
            // A bandit learnt from each outcome; the DQN each step once the next decision
            // of the session gave its next state.
            assert!(good.transitions == 2 && good.stopped.is_none(), "{kind}: {good:?}");
            // A transition with a reward that is not a number.
            let state = service.live[&3].session.clone();
            let obs = service.env.observe_session(&state, &mut service.generator);
            let t = crate::agent::Transition {
                state: obs.state.clone(),
                action: 0,
                reward: f64::NAN,
                next_state: obs.state,
                terminal: true,
                episode_end: true,
                discount: 1.0,
            };
            service.take_records();
            service.learn_queue.push((0, t));
            service.learn(6);
            let bad = service.learning_status(true)[0].clone();
            service.swap_in(6);
            let said: Vec<Record> =
                service.take_records().into_iter().filter(|r| matches!(r, Record::LearningStopped(_))).collect();
            assert!(
                matches!(&said[..], [Record::LearningStopped(s)] if s.arm == "A" && s.transitions == 2 && s.why.contains("finite")),
                "{kind}: {said:?}"
            );
            let report = crate::serve::report::analyse(&service.experiment(), &said, 0);
            assert!(crate::serve::report::markdown(&report).contains("arm A stopped learning"), "{kind}");
            assert!(bad.stopped.is_some(), "{kind}: {bad:?}");
            assert_eq!(
                (bad.transitions, &bad.state_sha256),
                (good.transitions, &good.state_sha256),
                "{kind}: the last good state"
            );
            assert!(!service.health_with(false).learning[0].stopped.as_ref().unwrap().is_empty());
            // It serves on and learns no more.
            service.feedback(&fb(&rec.request_id), 6).unwrap();
            service.recommend(&RecommendRequest { user: 3, new_session: false, recent: None }, 7).unwrap();
            assert_eq!(service.learning_status(true)[0].transitions, good.transitions);
        }
    }
}
