//! Experiment configuration: serde structs whose defaults are `configs/default.toml` (the
//! `instatok` world with the tuned DQN; a test keeps the two equal, and the prototype's
//! agent lives in `configs/prototype.toml`), dotted `--set` overrides, and validation of a
//! raw [`Config`] into a [`Checked`] one.
//!
//! Only a [`Checked`] config reaches the simulator, so every number used downstream has
//! been range-checked once, and every error names the TOML key, the bad value and what is
//! allowed.

pub mod features;
mod validate;

use std::fmt;
use std::ops::Deref;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub use crate::error::ConfigError;

/// A whole experiment: the world, the response model, the agent and the training budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Experiment name; results go to `results/<name>/`.
    pub name: String,
    /// The seed every random draw of the run derives from.
    pub seed: u64,
    /// The policy that is trained and recorded.
    pub policy: PolicyKind,
    pub world: WorldConfig,
    pub response: ResponseConfig,
    pub history: HistoryConfig,
    pub scores: ScoreConfig,
    pub candidates: CandidateConfig,
    pub env: EnvConfig,
    pub train: TrainConfig,
    pub dqn: DqnConfig,
    pub output: OutputConfig,
    /// Users with memory (docs/model.md: Users with memory). All off (the default) is the
    /// `instatok` preset, and then the section is left out of resolved configs, so configs
    /// written before it existed keep their fingerprint.
    #[serde(skip_serializing_if = "DynamicsConfig::is_off")]
    pub dynamics: DynamicsConfig,
    /// The `planner` baseline's search (left out of resolved configs at its defaults).
    #[serde(skip_serializing_if = "PlannerConfig::is_default")]
    pub planner: PlannerConfig,
    /// The contextual bandits (`linucb`, `thompson`, `epsilon_greedy`; left out of
    /// resolved configs at its defaults).
    #[serde(skip_serializing_if = "BanditConfig::is_default")]
    pub bandit: BanditConfig,
    /// Days and weeks: a population run on the calendar after training (docs/model.md:
    /// Days and weeks). Off (`days = 0`, the default) it is left out of resolved configs.
    #[serde(skip_serializing_if = "CalendarConfig::is_off")]
    pub calendar: CalendarConfig,
    /// Written by fypsim beside results (crate version, git revision); ignored on input.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Provenance>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            name: "default".into(),
            seed: 42,
            policy: PolicyKind::Dqn,
            world: WorldConfig::default(),
            response: ResponseConfig::default(),
            history: HistoryConfig::default(),
            scores: ScoreConfig::default(),
            candidates: CandidateConfig::default(),
            env: EnvConfig::default(),
            train: TrainConfig::default(),
            dqn: DqnConfig::default(),
            output: OutputConfig::default(),
            dynamics: DynamicsConfig::default(),
            planner: PlannerConfig::default(),
            bandit: BanditConfig::default(),
            calendar: CalendarConfig::default(),
            provenance: None,
        }
    }
}

/// What world each evaluation episode runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvalWorld {
    /// One copy of the generated world for the whole evaluation: every shown video stays
    /// in the matrix, so later episodes see what earlier ones did (a feed that moves).
    Evolving,
    /// Every episode starts from the generated world: episodes are independent draws,
    /// and the result does not depend on how many are run.
    Fresh,
}

impl EvalWorld {
    pub fn is_evolving(&self) -> bool {
        *self == EvalWorld::Evolving
    }
}

/// Which policy chooses the video to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyKind {
    /// The deep Q-network agent.
    Dqn,
    /// A uniformly random candidate.
    Random,
    /// The candidate with the highest final (business) score: always slot 0.
    Greedy,
    /// The candidate with the most views.
    MostViewed,
    /// Knows the response model (interests and regional taste, not the latent state): the
    /// candidate with the highest expected reward.
    Oracle,
    /// Knows the whole user model and the user's current latent state: the candidate with
    /// the highest expected immediate reward.
    MyopicOracle,
    /// Knows the whole model and plans ahead by Monte Carlo rollouts from a copy of the
    /// current state (`[planner]`).
    Planner,
    /// The planner, retention-aware: a candidate's value also prices the chance that the
    /// user churns after the session, from the return model (`planner.churn_weight`;
    /// docs/model.md: Baselines).
    RetentionPlanner,
    /// A contextual bandit: one ridge regression of the immediate reward on the
    /// candidate's features ([`BanditConfig`]), shared by every slot; shows the candidate
    /// with the highest upper confidence bound (`bandit.alpha`).
    #[serde(rename = "linucb")]
    LinUcb,
    /// Linear Thompson sampling over the same model: scores with parameters drawn from the
    /// posterior N(theta, prior_variance A^-1).
    Thompson,
    /// Epsilon-greedy over the same model: a uniformly random candidate with probability
    /// `bandit.epsilon`, else the best predicted reward.
    EpsilonGreedy,
}

impl PolicyKind {
    /// The name used in configs, file names and tables.
    pub fn name(self) -> &'static str {
        match self {
            PolicyKind::Dqn => "dqn",
            PolicyKind::Random => "random",
            PolicyKind::Greedy => "greedy",
            PolicyKind::MostViewed => "most_viewed",
            PolicyKind::Oracle => "oracle",
            PolicyKind::MyopicOracle => "myopic_oracle",
            PolicyKind::Planner => "planner",
            PolicyKind::RetentionPlanner => "retention_planner",
            PolicyKind::LinUcb => "linucb",
            PolicyKind::Thompson => "thompson",
            PolicyKind::EpsilonGreedy => "epsilon_greedy",
        }
    }
}

impl PolicyKind {
    /// Every policy, in the order of their names in docs.
    pub const ALL: [PolicyKind; 11] = [
        PolicyKind::Dqn,
        PolicyKind::Random,
        PolicyKind::Greedy,
        PolicyKind::MostViewed,
        PolicyKind::Oracle,
        PolicyKind::MyopicOracle,
        PolicyKind::Planner,
        PolicyKind::RetentionPlanner,
        PolicyKind::LinUcb,
        PolicyKind::Thompson,
        PolicyKind::EpsilonGreedy,
    ];

    /// The contextual bandits.
    pub const BANDITS: [PolicyKind; 3] = [PolicyKind::LinUcb, PolicyKind::Thompson, PolicyKind::EpsilonGreedy];

    /// Whether the policy learns from its own feedback (it is trained before it is
    /// evaluated, and what it learnt is saved).
    pub fn learns(self) -> bool {
        self == PolicyKind::Dqn || self.is_bandit()
    }

    pub fn is_bandit(self) -> bool {
        PolicyKind::BANDITS.contains(&self)
    }

    /// The policy of a name (as in configs).
    pub fn from_name(name: &str) -> Option<PolicyKind> {
        PolicyKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Users and videos (docs/model.md: World).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorldConfig {
    /// Video categories; user interests are drawn from these.
    pub categories: Vec<String>,
    pub regions: Vec<String>,
    pub genders: Vec<String>,
    pub n_videos: usize,
    pub n_creators: usize,
    /// Length of every video in seconds: the clock advances by this on watched or liked.
    pub video_duration_s: f64,
    /// Starting view counts are round(Normal(mean, std)), floored at 0.
    pub initial_views_mean: f64,
    pub initial_views_std: f64,
    pub n_users: usize,
    /// Ages are uniform integers in [age_min, age_max).
    pub age_min: u32,
    pub age_max: u32,
    /// Draw each user's two interest categories without replacement (the prototype drew
    /// with replacement, so a user could get the same one twice).
    pub distinct_interests: bool,
}

impl Default for WorldConfig {
    fn default() -> Self {
        WorldConfig {
            categories: ["comedy", "educational", "news", "food", "politics", "animals", "tech", "fashion"]
                .map(String::from)
                .to_vec(),
            regions: ["west", "mid", "east"].map(String::from).to_vec(),
            genders: ["m", "f"].map(String::from).to_vec(),
            n_videos: 3000,
            n_creators: 20,
            video_duration_s: 6.0,
            initial_views_mean: 50.0,
            initial_views_std: 10.0,
            n_users: 200,
            age_min: 18,
            age_max: 30,
            distinct_interests: true,
        }
    }
}

/// One entry of the regional taste table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionalTaste {
    pub category: String,
    pub region: String,
    pub delta: f64,
}

/// How a user reacts to a video (docs/model.md: Response model).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResponseConfig {
    /// Added to p when the video's category is one of the user's interests.
    pub interest_boost: f64,
    /// Added to p for (category, region) pairs.
    pub regional_taste: Vec<RegionalTaste>,
}

impl Default for ResponseConfig {
    fn default() -> Self {
        let t =
            |category: &str, region: &str, delta: f64| RegionalTaste { category: category.into(), region: region.into(), delta };
        ResponseConfig {
            interest_boost: 0.3,
            regional_taste: vec![
                t("tech", "west", 0.1),
                t("animals", "mid", 0.1),
                t("food", "east", 0.1),
                t("educational", "west", -0.2),
                t("news", "mid", -0.2),
                t("tech", "east", -0.2),
            ],
        }
    }
}

/// The logged history the world starts with (docs/model.md: Logged history).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryConfig {
    /// Interactions per user: max(min, round(Normal(mean, std))).
    pub interactions_mean: f64,
    pub interactions_std: f64,
    pub interactions_min: usize,
    /// p is nudged up by this after a like for the end-of-session test.
    pub like_boost: f64,
    /// p is nudged down by this after a skip for the end-of-session test.
    pub skip_penalty: f64,
    /// The clock jumps by Normal(mean, std) seconds between sessions.
    pub session_gap_mean_s: f64,
    pub session_gap_std_s: f64,
    /// How logged-history videos are drawn: `uniform` (the prototype) or `zipf`
    /// (power-law popularity over a random ranking of the catalogue).
    pub popularity: Popularity,
    /// The Zipf exponent s for `popularity = "zipf"` (P(rank k) ~ 1 / k^s).
    pub zipf_exponent: f64,
}

/// The popularity of videos in the logged history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Popularity {
    Uniform,
    Zipf,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            interactions_mean: 30.0,
            interactions_std: 10.0,
            interactions_min: 5,
            like_boost: 0.05,
            skip_penalty: 0.3,
            session_gap_mean_s: 3600.0,
            session_gap_std_s: 400.0,
            popularity: Popularity::Uniform,
            zipf_exponent: 1.0,
        }
    }
}

/// Interaction scores summed into the item-user matrix (docs/model.md: Item-user matrix).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScoreConfig {
    pub watched: f64,
    pub liked: f64,
    pub skipped: f64,
    /// `done` (history) and `session_end` (simulation).
    pub other: f64,
}

impl Default for ScoreConfig {
    fn default() -> Self {
        ScoreConfig { watched: 1.0, liked: 2.0, skipped: -2.0, other: -0.5 }
    }
}

/// Candidate generation and business rescoring (docs/model.md: Candidates).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CandidateConfig {
    /// r: how many candidates the agent chooses among.
    pub count: usize,
    /// w1: weight of the raw similarity score.
    pub w_similarity: f64,
    /// w2: weight of the popularity term `popularity_scale * views`.
    pub w_popularity: f64,
    /// w3: weight of the interest match (1 if the category is an interest of the user).
    pub w_interest: f64,
    pub popularity_scale: f64,
    /// `exact`: raw scores over every co-occurring video, from the live matrix;
    /// `neighbours`: over precomputed top-`neighbours` lists per video (fast at platform
    /// scale; approximate, and stale between refreshes).
    pub source: CandidateSource,
    /// Neighbours kept per video for `source = "neighbours"`.
    pub neighbours: usize,
    /// Rebuild the neighbour lists every this many simulated interactions; 0 never
    /// rebuilds after the start.
    pub refresh_every: usize,
}

/// Where candidate raw scores come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CandidateSource {
    Exact,
    Neighbours,
}

impl Default for CandidateConfig {
    fn default() -> Self {
        CandidateConfig {
            count: 10,
            w_similarity: 0.5,
            w_popularity: 0.1,
            w_interest: 0.3,
            popularity_scale: 0.1,
            source: CandidateSource::Exact,
            neighbours: 50,
            refresh_every: 0,
        }
    }
}

/// The agent's episodes (docs/model.md: Episodes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnvConfig {
    /// Steps per episode at most (the episode also ends at session_end).
    pub max_steps: usize,
    pub reward_watched: f64,
    pub reward_liked: f64,
    pub reward_skipped: f64,
    pub reward_session_end: f64,
    /// The clock advances Uniform(skip_time_min_s, skip_time_max_s) on skipped and
    /// session_end (and on skipped in the history).
    pub skip_time_min_s: f64,
    pub skip_time_max_s: f64,
}

impl EnvConfig {
    /// Whether a session that has taken `steps` steps has spent its budget (`max_steps`):
    /// the one rule by which the environment, the planner, the server and the traffic
    /// driver truncate a session.
    #[inline]
    pub fn budget_spent(&self, steps: usize) -> bool {
        steps >= self.max_steps
    }
}

impl Default for EnvConfig {
    fn default() -> Self {
        EnvConfig {
            max_steps: 50,
            reward_watched: 1.0,
            reward_liked: 2.0,
            reward_skipped: -2.0,
            reward_session_end: -0.5,
            skip_time_min_s: 1.0,
            skip_time_max_s: 5.0,
        }
    }
}

/// The training budget and the baseline comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub episodes: usize,
    /// Train one independent run per seed (each in `seed<s>/`) and aggregate them with
    /// 95% intervals across seeds; empty trains once with `seed`.
    pub seeds: Vec<u64>,
    /// Episodes each baseline (and the trained policy, exploration off) is evaluated on,
    /// from the same starting world and the same random numbers.
    pub eval_episodes: usize,
    /// Evaluate the trained policy every this many training episodes (and always at the
    /// end); 0 evaluates only at the end.
    pub eval_every: usize,
    /// Save the agent and the training state every this many episodes (and always at
    /// the end); 0 saves only at the end.
    pub checkpoint_every: usize,
    /// Baselines every run is compared with.
    pub baselines: Vec<PolicyKind>,
    /// Window of the moving average in the reward plot and the progress bar.
    pub moving_average: usize,
    /// Training sessions run at once over the one shared world, in lockstep: each tick
    /// observes every session (in parallel), picks every action with one batched forward
    /// pass, then applies the steps in session order. 1 is the plain episode loop.
    pub sessions: usize,
    /// Threads that observe sessions in parallel (with `sessions` > 1); 0 = one per core.
    /// Results do not depend on it.
    pub threads: usize,
    /// The world of evaluation episodes: `evolving` (one copy for all) or `fresh` (each
    /// episode from the generated world).
    pub eval_world: EvalWorld,
    /// The world of training episodes: `evolving` (one world all run long: the matrix,
    /// views and users' latent states carry over from episode to episode) or `fresh`
    /// (each episode from the generated world, as evaluation episodes with
    /// `eval_world = "fresh"`). Left out of resolved configs at its default.
    #[serde(skip_serializing_if = "EvalWorld::is_evolving")]
    pub train_world: EvalWorld,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            episodes: 5000,
            seeds: Vec::new(),
            eval_episodes: 1000,
            eval_every: 1000,
            checkpoint_every: 1000,
            baselines: vec![PolicyKind::Random, PolicyKind::Greedy, PolicyKind::MostViewed, PolicyKind::Oracle],
            moving_average: 200,
            sessions: 1,
            threads: 0,
            eval_world: EvalWorld::Fresh,
            train_world: EvalWorld::Evolving,
        }
    }
}

/// How often epsilon decays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecayUnit {
    /// After every learning update (the prototype's choice).
    Update,
    /// After every environment step.
    Step,
    /// After every episode.
    Episode,
}

/// The shape of epsilon's decay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecayShape {
    /// epsilon <- max(end, epsilon * rate) per unit.
    Exponential,
    /// From start to end in a straight line over `linear_units` units.
    Linear,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossKind {
    Mse,
    Huber,
}

/// The shape of the Q-network's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QHead {
    /// The prototype's: one output per candidate slot over the whole state.
    Slots,
    /// One shared scorer applied to [user state ‖ each candidate's features]: it
    /// generalises over videos and over the number of candidates.
    Items,
}

/// Where the interests in the agent's state come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InterestSource {
    /// The profile's two interests, as drawn with the world (what the prototype let the
    /// agent see).
    #[default]
    Profile,
    /// Predicted from the user's logged history: the two categories with the largest
    /// summed scores in the user's row of the item-user matrix (the interest prediction
    /// layer of the prototype's design, which its code skipped).
    Predicted,
}

impl InterestSource {
    pub fn is_profile(&self) -> bool {
        *self == InterestSource::Profile
    }
}

/// How the agent's state describes the session so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionEncoder {
    /// Hand-built features: videos watched, session length, the last category and
    /// response, and (when named) each candidate's exposure this session.
    #[default]
    Features,
    /// A GRU, trained with the Q-network, over the session's last `dqn.session_window`
    /// steps (each step's category, response and watch time) in place of those features.
    Gru,
}

impl SessionEncoder {
    pub fn is_features(&self) -> bool {
        *self == SessionEncoder::Features
    }
}

fn is_16(v: &usize) -> bool {
    *v == 16
}

fn is_32(v: &usize) -> bool {
    *v == 32
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    Cpu,
    Cuda,
    /// CUDA when available, else CPU.
    Auto,
}

/// Epsilon-greedy exploration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EpsilonConfig {
    pub start: f64,
    pub end: f64,
    pub decay: DecayShape,
    pub per: DecayUnit,
    /// Multiplier per unit, for exponential decay.
    pub rate: f64,
    /// Units to go from start to end, for linear decay.
    pub linear_units: usize,
}

impl Default for EpsilonConfig {
    fn default() -> Self {
        EpsilonConfig {
            start: 1.0,
            end: 0.01,
            decay: DecayShape::Exponential,
            per: DecayUnit::Episode,
            rate: 0.998,
            linear_units: 400,
        }
    }
}

/// Embedding sizes of the categorical state features (docs/model.md: Episodes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddingConfig {
    pub gender: usize,
    pub region: usize,
    /// Shared by interest 1 and interest 2.
    pub interest: usize,
    pub last_category: usize,
    /// The last response (none, watched, skipped, liked).
    pub last_action: usize,
    /// Each candidate's category; 0 leaves candidate categories out of the state.
    pub candidate_category: usize,
    /// Each candidate's (user region, candidate category) pair, a crossed feature as in
    /// wide-and-deep recommenders: one vector per pair, so an effect of the pair needs no
    /// hidden unit to combine the two; 0 leaves it out.
    pub region_category: usize,
    /// Each candidate's video id: one learnt vector per video of the catalogue the world
    /// starts with (later uploads share one), so the network can learn from its own
    /// training what each video does to a session, as a platform's item embeddings do;
    /// 0 (the default) leaves video ids out of the state.
    #[serde(skip_serializing_if = "is_zero_usize")]
    pub video: usize,
}

fn is_zero_usize(x: &usize) -> bool {
    *x == 0
}

impl Default for EmbeddingConfig {
    fn default() -> Self {
        EmbeddingConfig {
            gender: 1,
            region: 2,
            interest: 4,
            last_category: 4,
            last_action: 2,
            candidate_category: 4,
            region_category: 0,
            video: 0,
        }
    }
}

/// The deep Q-network (docs/model.md: DQN; with the target network the prototype lacked).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DqnConfig {
    /// `slots` (the prototype's head) or `items` (a shared per-candidate scorer).
    pub head: QHead,
    /// Double DQN: the online network picks the next action, the target network values it.
    pub double: bool,
    /// Dueling: Q = V(state) + A(state, slot) - mean over slots of A.
    pub dueling: bool,
    /// n-step returns: sum n discounted rewards before bootstrapping (1 = plain DQN).
    pub n_step: usize,
    /// Gradient steps per training event.
    pub gradient_steps: usize,
    pub hidden: Vec<usize>,
    pub lr: f64,
    /// Learning-rate decay over training episodes; none keeps `lr` all run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lr_decay: Option<LrDecayConfig>,
    pub gamma: f64,
    pub batch_size: usize,
    pub replay_capacity: usize,
    /// Environment steps before the first update.
    pub learning_starts: usize,
    /// An update every this many environment steps.
    pub train_every: usize,
    /// Update the target network every this many updates.
    pub target_update_every: usize,
    /// target <- tau * online + (1 - tau) * target at each target update; 1 is a hard copy.
    pub tau: f64,
    pub loss: LossKind,
    /// Clip the gradient's global norm to this; 0 turns clipping off.
    pub grad_clip: f64,
    pub device: DeviceKind,
    /// libtorch CPU threads; 1 is fastest for a network this small and keeps runs
    /// bit-reproducible.
    pub threads: usize,
    pub epsilon: EpsilonConfig,
    pub embeddings: EmbeddingConfig,
    /// The per-candidate numbers the network sees, from "final", "raw", "views",
    /// "interest" (the others read 0), and the logged "watch_rate", "completion",
    /// "exit_rate" and "exposure" (the first three need a dynamic on), "duration" and
    /// "log_views" (ln(1 + views) / 10: views on a scale that holds at any world size),
    /// the user's own logged "affinity" (taste for the category) and "followed", and the
    /// logged "mean_completion" (unsmoothed) and "logged_views" (both need a dynamic on).
    /// Each candidate's category is always embedded.
    pub candidate_features: Vec<String>,
    /// The interests the state holds (the two interest embeddings and each candidate's
    /// "interest" number): the profile's, or predicted from the user's history. Written
    /// to config.toml only when not the profile's.
    #[serde(skip_serializing_if = "InterestSource::is_profile")]
    pub interests: InterestSource,
    /// The session so far as hand-built features, or encoded by a GRU. The three session
    /// keys are written to config.toml only when not at their defaults.
    #[serde(skip_serializing_if = "SessionEncoder::is_features")]
    pub session_encoder: SessionEncoder,
    /// With the GRU: how many of the session's last steps it reads.
    #[serde(skip_serializing_if = "is_16")]
    pub session_window: usize,
    /// With the GRU: the width of its state.
    #[serde(skip_serializing_if = "is_32")]
    pub session_hidden: usize,
}

/// A linear learning-rate decay: `dqn.lr` until episode `from_episode`, then linearly
/// down to `end` over the next `episodes` training episodes, then `end`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LrDecayConfig {
    pub end: f64,
    #[serde(default)]
    pub from_episode: usize,
    pub episodes: usize,
}

impl LrDecayConfig {
    /// The learning rate after `episode` training episodes, for a base rate `lr`.
    pub fn lr_at(&self, lr: f64, episode: u64) -> f64 {
        let from = self.from_episode as u64;
        if episode <= from {
            return lr;
        }
        let frac = ((episode - from) as f64 / self.episodes.max(1) as f64).min(1.0);
        lr + (self.end - lr) * frac
    }
}

pub use features::CANDIDATE_FEATURES;

impl Default for DqnConfig {
    fn default() -> Self {
        DqnConfig {
            head: QHead::Items,
            double: true,
            dueling: false,
            n_step: 1,
            gradient_steps: 1,
            hidden: vec![64, 64],
            lr: 5e-5,
            lr_decay: None,
            gamma: 0.95,
            batch_size: 50,
            replay_capacity: 50_000,
            learning_starts: 200,
            train_every: 2,
            target_update_every: 200,
            tau: 1.0,
            loss: LossKind::Mse,
            grad_clip: 10.0,
            device: DeviceKind::Cpu,
            threads: 1,
            epsilon: EpsilonConfig::default(),
            embeddings: EmbeddingConfig::default(),
            candidate_features: vec!["interest".to_string()],
            interests: InterestSource::Profile,
            session_encoder: SessionEncoder::Features,
            session_window: 16,
            session_hidden: 32,
        }
    }
}

/// The dynamics of users with memory (docs/model.md: Users with memory). Each one is off
/// at its default, and with all of them off the user model is exactly the `instatok` one
/// (the same draws, the same numbers).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DynamicsConfig {
    pub satiation: SatiationConfig,
    pub fatigue: FatigueConfig,
    pub drift: DriftConfig,
    pub quality: QualityConfig,
    pub behaviour: BehaviourConfig,
}

impl DynamicsConfig {
    /// Every dynamic is off: the `instatok` user model.
    pub fn is_off(&self) -> bool {
        *self == DynamicsConfig::default()
    }
}

/// Satiation: recent exposure to a category lowers its pull.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SatiationConfig {
    /// Pull lost per unit of exposure: p's shift for category c falls by strength * s_c.
    /// 0 = off.
    pub strength: f64,
    /// Exposure halves every this many seconds of the user's clock.
    pub half_life_s: f64,
    /// Seconds between two simulated sessions of a user, over which exposure decays.
    pub session_gap_s: f64,
}

impl Default for SatiationConfig {
    fn default() -> Self {
        SatiationConfig { strength: 0.0, half_life_s: 60.0, session_gap_s: 3600.0 }
    }
}

/// Fatigue: the chance to go on falls with the session's length.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FatigueConfig {
    /// After step t (counted from 1) the user leaves with hazard rate * t on top of any
    /// other: P(leave) = 1 - exp(-(rate * t + ...)). 0 = off.
    pub rate: f64,
}

/// Interest drift: interests move toward what the user enjoyed and away from what they
/// skipped.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DriftConfig {
    /// Each category's interest weight w_c (1 for the profile's two interests, 0 for the
    /// others at the start) moves by this share of the way toward 1 after a watched or
    /// liked video of c, and toward 0 after a skipped one. 0 = off.
    pub rate: f64,
}

/// Hidden video quality: it decides watch time and whether the user stays, not whether
/// they start watching, except through clickbait.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QualityConfig {
    /// Each video's quality q ~ Normal(0, sd). 0 = off (every q is 0).
    pub sd: f64,
    /// Clickbait: p's shift gains clickbait * (-q), so poor videos pull more clicks.
    pub clickbait: f64,
    /// After a watched or liked video the user leaves with hazard leave * max(0, -q)
    /// (on top of fatigue).
    pub leave: f64,
    /// The watch fraction's logit gains watch * q (with `behaviour.enabled`).
    pub watch: f64,
}

/// The multi-behaviour response (docs/model.md: Users with memory): the user starts
/// watching with probability p or skips; a watched video is watched in part (its quality
/// decides how much), may be liked, shared and its creator followed; after every step the
/// user may leave. The reward weighs these: env.reward_watched / reward_liked /
/// reward_skipped per response, plus the terms below (env.reward_session_end is not
/// used: leaving is not a response any more).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BehaviourConfig {
    /// Watch time, shares and follows; off = every watched video is watched to the end.
    pub enabled: bool,
    /// Video durations ~ Uniform(min, max) seconds; both 0 (the default): every video
    /// lasts `world.video_duration_s`.
    pub duration_min_s: f64,
    pub duration_max_s: f64,
    /// The watch fraction of a watched video: sigmoid(watch_base + quality.watch * q).
    pub watch_base: f64,
    /// P(like) = like_rate * watch fraction, for a watched video.
    pub like_rate: f64,
    /// The leave hazard after every step, and its extra after a skip: the user leaves
    /// with probability 1 - exp(-(leave_base + leave_skip [skipped] + fatigue + quality)).
    pub leave_base: f64,
    pub leave_skip: f64,
    /// P(share) = share_rate * watch fraction, for a watched video.
    pub share_rate: f64,
    /// P(follow the creator) = follow_rate * watch fraction, if not followed yet.
    pub follow_rate: f64,
    /// p's shift gains this for videos of a creator the user follows.
    pub follow_boost: f64,
    /// Reward per second watched, per share and per follow, added to env.reward_*.
    pub reward_watch_s: f64,
    pub reward_share: f64,
    pub reward_follow: f64,
}

impl Default for BehaviourConfig {
    fn default() -> Self {
        BehaviourConfig {
            enabled: false,
            duration_min_s: 0.0,
            duration_max_s: 0.0,
            watch_base: 2.0,
            like_rate: 0.0,
            leave_base: 0.0,
            leave_skip: 0.0,
            share_rate: 0.0,
            follow_rate: 0.0,
            follow_boost: 0.0,
            reward_watch_s: 0.0,
            reward_share: 0.0,
            reward_follow: 0.0,
        }
    }
}

/// The `planner` baseline (docs/model.md: Baselines): for each candidate, `rollouts`
/// simulated continuations of `depth` steps over the true model from a copy of the user's
/// latent state, the later steps chosen by the myopic oracle among videos like the current
/// candidates; it shows the candidate with the best mean return.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlannerConfig {
    pub depth: usize,
    pub rollouts: usize,
    /// Discount per step inside a rollout.
    pub gamma: f64,
    /// Evaluation episodes for the planner (it is slow); 0 = train.eval_episodes. Fewer
    /// episodes widen its interval, and its paired comparisons use the episodes it shares
    /// with the others.
    pub eval_episodes: usize,
    /// The retention planner's price of a churn, in reward units: a candidate's value
    /// loses this times the chance that the user churns after the session (the return
    /// model's, at the satisfaction the sampled rollouts leave).
    pub churn_weight: f64,
}

impl Default for PlannerConfig {
    fn default() -> Self {
        PlannerConfig { depth: 10, rollouts: 16, gamma: 1.0, eval_episodes: 0, churn_weight: 10.0 }
    }
}

impl PlannerConfig {
    pub fn is_default(&self) -> bool {
        *self == PlannerConfig::default()
    }
}

/// The contextual bandits (docs/model.md: Contextual bandits): one ridge regression of the
/// immediate reward on a candidate's features, shared by every slot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BanditConfig {
    /// LinUCB's width multiplier: a candidate's score is its predicted reward plus alpha
    /// times the standard deviation of that prediction (in units of the reward noise).
    pub alpha: f64,
    /// The ridge penalty lambda: A starts as lambda I (the prior precision).
    pub ridge: f64,
    /// Thompson sampling's posterior scale v^2: parameters are drawn from N(theta, v^2 A^-1).
    pub prior_variance: f64,
    /// Epsilon-greedy's rate of uniformly random choices while learning.
    pub epsilon: f64,
    /// Monte Carlo draws per decision for Thompson sampling's propensity (it has no closed
    /// form); 0 = not estimated (logged as NaN, like the planner's). Drawn from their own
    /// stream, so they change no choice.
    pub propensity_draws: usize,
}

impl Default for BanditConfig {
    fn default() -> Self {
        BanditConfig { alpha: 1.0, ridge: 1.0, prior_variance: 1.0, epsilon: 0.1, propensity_draws: 0 }
    }
}

impl BanditConfig {
    pub fn is_default(&self) -> bool {
        *self == BanditConfig::default()
    }
}

/// Days and weeks (docs/model.md: Days and weeks): after training, the whole population
/// lives through `days` simulated days under each policy, sessions interleaved step by
/// step in time order on one shared matrix. After a session ends, a return model decides
/// when the user opens the app again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CalendarConfig {
    /// Simulated days; 0 = no population run.
    pub days: usize,
    /// Sessions per day of a user whose satisfaction is at `reference` (the base rate of
    /// the return hazard, averaged over the day's rhythm).
    pub sessions_per_day: f64,
    /// How strongly satisfaction moves the return hazard: the rate is multiplied by
    /// exp(coupling * (satisfaction - reference)). 0 = policies cannot change returns.
    pub coupling: f64,
    /// The satisfaction (a session's return) at which a user returns at the base rate.
    pub reference: f64,
    /// Satisfaction after a session = memory * satisfaction + (1 - memory) * the session's
    /// return: how long a good or bad session is remembered.
    pub memory: f64,
    /// Daily rhythm: the hazard is multiplied by 1 + rhythm * cos(2 pi (hour - peak) / 24),
    /// with each user's peak hour drawn once; 0 = flat, 1 = no use of the app at the
    /// opposite hour.
    pub rhythm: f64,
    /// Mean and spread of the users' peak hours (Normal, wrapped to [0, 24)).
    pub peak_hour: f64,
    pub peak_hour_sd: f64,
    /// No new session within this many seconds of the last one's end.
    pub min_gap_s: f64,
    /// A user who has not returned for this many days has churned.
    pub churn_days: usize,
    /// A churned user's chance per day to come back (a reactivation); 0 = never.
    pub reactivation_per_day: f64,
    /// The policies besides the run's own that live through the calendar (baseline names).
    pub baselines: Vec<PolicyKind>,
    /// New users per day (a Poisson count, at uniform times of the day); 0 = none.
    pub signups_per_day: f64,
    /// New videos per creator per day (a Poisson count, at uniform times); 0 = none.
    pub uploads_per_creator_day: f64,
    /// Candidate slots kept for fresh videos (uploaded within `fresh_days`), the best of
    /// them by the business weights; 0 = none (new videos then enter only through
    /// co-views, which they cannot get without being shown).
    pub fresh_slots: usize,
    /// How long a new video counts as fresh, in days.
    pub fresh_days: f64,
    /// What the platform pays a creator per view (for the creators' earnings).
    pub pay_per_view: f64,
    /// Learning across sessions: after its training episodes the DQN lives this many
    /// population runs of `days` days, exploring and learning from every step, with a
    /// session's last step leading to the user's next session; 0 = none.
    pub train_runs: usize,
    /// The discount per day of the time between a session's end and the user's next
    /// session, on top of `dqn.gamma` (the bootstrap of a session's last step is
    /// multiplied by discount_per_day^(gap in days)).
    pub discount_per_day: f64,
    /// The retention reward: added to a session's last step when the user comes back.
    pub return_reward: f64,
}

impl Default for CalendarConfig {
    fn default() -> Self {
        CalendarConfig {
            days: 0,
            sessions_per_day: 1.5,
            coupling: 0.0,
            reference: 0.0,
            memory: 0.5,
            rhythm: 0.5,
            peak_hour: 20.0,
            peak_hour_sd: 3.0,
            min_gap_s: 600.0,
            churn_days: 7,
            reactivation_per_day: 0.0,
            baselines: Vec::new(),
            signups_per_day: 0.0,
            uploads_per_creator_day: 0.0,
            fresh_slots: 0,
            fresh_days: 3.0,
            pay_per_view: 0.001,
            train_runs: 0,
            discount_per_day: 0.9,
            return_reward: 0.0,
        }
    }
}

impl CalendarConfig {
    /// No population run and every other key at its default.
    pub fn is_off(&self) -> bool {
        *self == CalendarConfig::default()
    }

    /// Users who sign up and videos uploaded during the calendar (drawn with the world).
    pub fn has_arrivals(&self) -> bool {
        self.days > 0 && (self.signups_per_day > 0.0 || self.uploads_per_creator_day > 0.0)
    }
}

/// What a run writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// Folder under which `<name>/<run-id>/` is created.
    pub results_dir: String,
    /// Record every step in steps.parquet.
    pub steps: bool,
    /// Also put wall-clock figures into the result tables: a `wall_s` column in
    /// `episodes.*` and `steps_per_second`, `training_s` in `summary.json` (the layout of
    /// earlier versions). Off by default, so that a seed's result files are byte-identical
    /// from run to run; the wall-clock figures are always in `timing.json`.
    pub wall_time: bool,
    /// Record steps.parquet's detail columns (watch time, the true expected response and
    /// outcome probabilities, the offered videos, the clock) even with every dynamic off:
    /// the logs `fypsim learn` needs. Written to config.toml only when on, so configs of
    /// earlier runs keep their fingerprint.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub step_detail: bool,
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig { results_dir: "results".into(), steps: true, wall_time: false, step_detail: false }
    }
}

/// Where a result came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    pub crate_version: String,
    pub git_revision: String,
}

/// A config that passed validation. Only this type reaches the simulator.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked(Config);

impl Deref for Checked {
    type Target = Config;
    fn deref(&self) -> &Config {
        &self.0
    }
}

impl Checked {
    /// The validated config, e.g. to serialise it.
    pub fn inner(&self) -> &Config {
        &self.0
    }

    /// A copy with a different seed (still valid: any u64 is a seed).
    pub fn with_seed(&self, seed: u64) -> Checked {
        let mut c = self.0.clone();
        c.seed = seed;
        Checked(c)
    }
}

impl Config {
    /// Parses a TOML document, applies `key=value` overrides and validates.
    pub fn from_toml_str(text: &str, overrides: &[String]) -> Result<Checked, ConfigError> {
        let config: Config = if overrides.is_empty() {
            toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string().trim_end().to_string()))?
        } else {
            let file: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))?;
            // Overrides land on the defaults merged with the file, so a key path is
            // checked against the real shape of the config (`seed.x` is not a section).
            let mut table = toml::Table::try_from(Config::default()).expect("the default config serialises to a table");
            merge(&mut table, file);
            for o in overrides {
                apply_override(&mut table, o)?;
            }
            Config::deserialize(toml::Value::Table(table)).map_err(|e| {
                let msg = e.to_string().trim_end().replace('\n', " ");
                ConfigError::Parse(format!("after --set overrides: {msg}"))
            })?
        };
        config.check()
    }

    /// Reads a TOML file, applies overrides and validates.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Checked, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Read { path: path.display().to_string(), reason: e.to_string() })?;
        Config::from_toml_str(&text, overrides).map_err(|e| e.in_file(path))
    }

    /// Validates every value once.
    pub fn check(self) -> Result<Checked, ConfigError> {
        validate::validate(&self)?;
        Ok(Checked(self))
    }

    /// The resolved config as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a Config always serialises to TOML")
    }
}

/// Deep-merges `over` into `base`: tables merge key by key, any other value replaces.
pub(crate) fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Sets `section.key=value` in a TOML table. The value is read as TOML (`0.5`, `true`,
/// `[64, 64]`, `"text"`); a bare word that is not valid TOML is taken as a string.
pub fn apply_override(table: &mut toml::Table, assignment: &str) -> Result<(), ConfigError> {
    let bad = |why: &str| ConfigError::Override { assignment: assignment.to_string(), reason: why.to_string() };
    let (key, raw) = assignment.split_once('=').ok_or_else(|| bad("expected section.key=value"))?;
    let key = key.trim();
    let raw = raw.trim();
    if key.is_empty() || key.split('.').any(|p| p.is_empty()) {
        return Err(bad("the key is empty or has an empty part"));
    }
    let value = match format!("v = {raw}").parse::<toml::Table>() {
        Ok(mut t) => t.remove("v").expect("the key v was just parsed"),
        Err(_) => toml::Value::String(raw.to_string()),
    };
    let parts: Vec<&str> = key.split('.').collect();
    let mut cur = table;
    for (i, part) in parts.iter().enumerate() {
        if i + 1 == parts.len() {
            cur.insert(part.to_string(), value);
            return Ok(());
        }
        let entry = cur.entry(part.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = entry.as_table_mut().ok_or_else(|| bad(&format!("`{}` is a value, not a section", parts[..=i].join("."))))?;
    }
    unreachable!("the loop returns at the last part")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_instatok_preset_and_valid() {
        let c = Config::default().check().unwrap();
        assert_eq!(c.world.n_videos, 3000);
        assert_eq!(c.world.n_users, 200);
        assert_eq!(c.world.categories.len(), 8);
        assert_eq!(c.candidates.count, 10);
        assert_eq!(c.dqn.gamma, 0.95);
        assert_eq!(c.env.max_steps, 50);
        assert_eq!(c.train.episodes, 5000);
    }

    #[test]
    fn round_trips_through_toml() {
        let c = Config::default();
        let back = Config::from_toml_str(&c.to_toml(), &[]).unwrap();
        assert_eq!(back.inner(), &c);
    }

    #[test]
    fn overrides_set_nested_values_of_any_type() {
        let c = Config::from_toml_str(
            "",
            &[
                "dqn.lr=0.01".into(),
                "dqn.hidden=[32, 16]".into(),
                "policy=random".into(),
                "dqn.epsilon.per=step".into(),
                "output.steps=false".into(),
            ],
        )
        .unwrap();
        assert_eq!(c.dqn.lr, 0.01);
        assert_eq!(c.dqn.hidden, vec![32, 16]);
        assert_eq!(c.policy, PolicyKind::Random);
        assert_eq!(c.dqn.epsilon.per, DecayUnit::Step);
        assert!(!c.output.steps);
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let e = Config::from_toml_str("[dqn]\nlearning_rate = 0.1\n", &[]).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("learning_rate"), "{msg}");
        let e = Config::from_toml_str("", &["dqn.lrr=0.1".into()]).unwrap_err();
        assert!(e.to_string().contains("lrr"), "{e}");
    }

    #[test]
    fn malformed_overrides_are_explained() {
        let e = Config::from_toml_str("", &["dqn.lr".into()]).unwrap_err();
        assert!(e.to_string().contains("section.key=value"), "{e}");
        let e = Config::from_toml_str("", &["seed.x=1".into()]).unwrap_err();
        assert!(e.to_string().contains("not a section"), "{e}");
    }
}
