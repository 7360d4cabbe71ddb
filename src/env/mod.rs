//! The agent's world (docs/model.md: Episodes): an episode is one session of one user; each step
//! shows one of the user's candidates, draws the response, pays the reward and adds the
//! interaction to the matrix at once, so the next candidates already reflect it.

use rand::Rng;

use crate::config::{CandidateSource, Checked};
use crate::model::state::SimState;
use crate::model::user::{Latent, UserModel};
use crate::platform::candidates::{Candidate, CandidateGenerator, NeighbourIndex};
use crate::platform::matrix::InteractionMatrix;
use crate::rng::SimRng;
use crate::world::{Action, User, World};
use std::sync::Arc;

/// Index layout of [`State::categorical`].
pub mod cat {
    pub const GENDER: usize = 0;
    pub const REGION: usize = 1;
    pub const INTEREST_1: usize = 2;
    pub const INTEREST_2: usize = 3;
    /// The category of the last shown video + 1; 0 before the first.
    pub const LAST_CATEGORY: usize = 4;
    /// The last response: 0 none, 1 watched, 2 skipped, 3 liked.
    pub const LAST_ACTION: usize = 5;
    /// Then one entry per candidate slot: its category + 1, 0 for an empty slot; then,
    /// with `dqn.embeddings.video` > 0, one more per slot: its video id, capped at
    /// `world.n_videos` (every later upload, and an empty slot, reads `n_videos`).
    pub const CANDIDATES: usize = 6;
}

/// Index layout of [`State::numeric`].
pub mod num {
    /// (age - age_min) / (age_max - age_min).
    pub const AGE: usize = 0;
    /// Videos watched or liked this session / max_steps.
    pub const WATCHED: usize = 1;
    /// Session length in seconds / (max_steps * video duration).
    pub const SESSION_LENGTH: usize = 2;
    /// Then, per candidate slot, `PER_SLOT` features (all 0 for an empty slot):
    /// final score and raw similarity score (each divided by the largest magnitude among
    /// the candidates), views / 100, interest match (0 or 1); then the logged features the
    /// [`super::Layout`] adds.
    pub const SLOTS: usize = crate::config::features::USER.len();
    pub const PER_SLOT: usize = crate::config::features::BASE.len();
    /// Offsets within a slot's features.
    pub const FINAL: usize = 0;
    pub const RAW: usize = 1;
    pub const VIEWS: usize = 2;
    pub const INTEREST: usize = 3;
}

/// What the agent sees: numerical features and categorical ids, plus which slots hold a
/// candidate (fewer than r when the user has seen almost everything).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct State {
    pub numeric: Vec<f32>,
    pub categorical: Vec<i64>,
    pub valid: Vec<bool>,
}

impl State {
    /// Numbers in the state of the base layout (no logged features).
    pub fn n_numeric(slots: usize) -> usize {
        num::SLOTS + num::PER_SLOT * slots
    }
    pub fn n_categorical(slots: usize) -> usize {
        cat::CANDIDATES + slots
    }
}

/// The divisor of ln(1 + views) in [`Logged::LogViews`].
pub const LOG_VIEWS_SCALE: f64 = 10.0;

/// Per step, a session's exposure counts are multiplied by this before the shown
/// category's gains 1.
pub const EXPOSURE_DECAY: f32 = 0.75;

/// The observation layout, declared once: the state builder writes by it and the
/// Q-network reads by it. User numbers ([`num`]), then per slot the four base numbers
/// and the logged ones named in `dqn.candidate_features`, in [`Logged::ALL`] order;
/// categorical ids as in [`cat`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub slots: usize,
    pub logged: Vec<Logged>,
    /// With `dqn.session_encoder = "gru"`: the session's last steps, each
    /// [`HISTORY_FEATURES`] numbers for the given number of categories, after the slots.
    pub history_steps: usize,
    pub history_features: usize,
    /// With `dqn.embeddings.video` > 0: the ids of the videos of the starting catalogue
    /// (`world.n_videos` of them) are in the state, one per slot after the slots' categories.
    pub video_ids: Option<usize>,
}

/// A response as the state codes it (the last action, the session history): 1 watched,
/// 2 skipped, 3 liked, 0 anything else.
fn response_code(action: Action) -> u8 {
    match action {
        Action::Watched => 1,
        Action::Skipped => 2,
        Action::Liked => 3,
        Action::SessionEnd | Action::Done => 0,
    }
}

/// Numbers per step of the session history (`dqn.session_encoder = "gru"`): the
/// category (one-hot), the response (watched, skipped, liked: one-hot), the watch time
/// (ln(1 + s) / 5) and 1 for a step that happened (0 for the padding before the session's
/// first step).
pub fn history_features(categories: usize) -> usize {
    categories + 3 + 1 + 1
}

impl Layout {
    pub fn of(config: &crate::config::Config) -> Layout {
        let named = |l: Logged| config.dqn.candidate_features.iter().any(|f| f == l.name());
        let gru = config.dqn.session_encoder == crate::config::SessionEncoder::Gru;
        Layout {
            slots: config.candidates.count,
            logged: Logged::ALL.into_iter().filter(|&l| named(l)).collect(),
            history_steps: if gru { config.dqn.session_window } else { 0 },
            history_features: if gru { history_features(config.world.categories.len()) } else { 0 },
            video_ids: (config.dqn.embeddings.video > 0).then_some(config.world.n_videos),
        }
    }
    /// The base layout with `slots` slots.
    pub fn base(slots: usize) -> Layout {
        Layout { slots, logged: Vec::new(), history_steps: 0, history_features: 0, video_ids: None }
    }
    /// Where the session history starts in the numbers (after the slots).
    pub fn history_start(&self) -> usize {
        num::SLOTS + self.per_slot() * self.slots
    }
    pub fn per_slot(&self) -> usize {
        num::PER_SLOT + self.logged.len()
    }
    pub fn n_numeric(&self) -> usize {
        num::SLOTS + self.per_slot() * self.slots + self.history_steps * self.history_features
    }
    pub fn n_categorical(&self) -> usize {
        State::n_categorical(self.slots) + if self.video_ids.is_some() { self.slots } else { 0 }
    }
    /// Where slot `k`'s video id is among the categorical ids (with `video_ids` only).
    pub fn video_column(&self, k: usize) -> usize {
        cat::CANDIDATES + self.slots + k
    }
    /// Where slot `k`'s numbers start.
    pub fn slot(&self, k: usize) -> usize {
        num::SLOTS + self.per_slot() * k
    }
}

pub use crate::config::features::Logged;
pub use crate::model::state::{Session, VideoLog};

/// Everything a policy may look at: the state and, for baselines, the raw candidates;
/// for the baselines that know the model (the oracles, the planner), the truth.
#[derive(Debug, Clone)]
pub struct Observation {
    pub user: User,
    pub candidates: Vec<Candidate>,
    pub state: State,
    pub truth: Truth,
}

/// What only the simulator knows: the user model, the user's latent state, and where the
/// session stands. The DQN never reads it (it sees [`State`] only).
#[derive(Debug, Clone)]
pub struct Truth {
    pub model: Arc<UserModel>,
    pub latent: Latent,
    /// Steps taken in this session so far.
    pub t: usize,
    /// The user's clock.
    pub now: f64,
    /// On a calendar (population runs): the user's satisfaction and the return of the
    /// session so far, which the return model reads (docs/model.md: Days and weeks).
    pub calendar: Option<CalendarTruth>,
}

/// What a population run knows of a user beyond the session: see [`Truth::calendar`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CalendarTruth {
    pub satisfaction: f64,
    pub session_return: f64,
}

impl Observation {
    /// The user has seen every video the feed could offer: there is nothing left to show,
    /// so the session ends here (see "When the feed runs dry" in docs/model.md). Policies
    /// are never asked to act on such an observation.
    #[inline]
    pub fn exhausted(&self) -> bool {
        self.candidates.is_empty()
    }
}

/// The result of one step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutcome {
    pub video: u32,
    pub category: u16,
    pub slot: usize,
    pub response: Action,
    pub reward: f64,
    /// Seconds of the video watched.
    pub watch_s: f64,
    /// The expected reward of the shown video just before the step's draws.
    pub expected_reward: f64,
    /// Exposure to the shown category just before the step (0 without satiation).
    pub satiation: f64,
    /// E[p] of the shown video just before the step's draws.
    pub expected_p: f64,
    /// The videos on offer (filled only with a dynamic on or `output.step_detail`, for
    /// steps.parquet's detail columns).
    pub offered: Vec<u32>,
    /// The user's clock when the video was shown.
    pub time_s: f64,
    /// The true outcome probabilities before the step's draws: watched, skipped, liked,
    /// left ([`crate::model::user::UserModel::outcome_probabilities`]; with the detail only).
    pub outcome_p: [f64; 4],
    /// The probability with which the policy chose this slot (set by the training loop
    /// from [`crate::agent::Policy::propensity`]; 1 until then).
    pub propensity: f64,
    /// `propensity` is an estimate (Thompson sampling's Monte Carlo), not exact.
    pub propensity_estimated: bool,
    /// The session ended (a terminal state: no bootstrapping).
    pub terminal: bool,
    /// The step budget ran out (not terminal: the user would have gone on).
    pub truncated: bool,
}

/// The environment: a simulation state over an immutable world, with the caches that
/// state implies (the interaction matrix, the neighbour lists, the current observation).
#[derive(Debug, Clone)]
pub struct Env {
    config: Checked,
    /// The world, shared by every environment of a run.
    pub world: Arc<World>,
    /// Everything simulation has changed ([`SimState`]).
    sim: SimState,
    /// The world's history plus `sim.adds`.
    pub matrix: InteractionMatrix,
    generator: CandidateGenerator,
    /// The neighbour lists, with `candidates.source = "neighbours"`.
    index: Option<NeighbourIndex>,
    adds_since_refresh: usize,
    /// Whether `sim.adds` lists every interaction ([`Env::stop_listing_interactions`]).
    list_adds: bool,
    obs: Option<Observation>,
    layout: Layout,
    /// What changed since this environment was last made equal to the starting point of
    /// its episodes ([`Env::reset_to`], [`Env::track_changes`]); None when nothing is
    /// tracked (an evolving world never goes back, and its steps record nothing).
    journal: Option<Journal>,
}

/// The users and videos whose rows an environment has changed, and whether its neighbour
/// lists were rebuilt.
#[derive(Debug, Clone, Default)]
struct Journal {
    users: Vec<u32>,
    videos: Vec<u32>,
    index_rebuilt: bool,
}

impl Env {
    /// An environment at the world's starting point ([`World::start`]): builds the matrix
    /// from the world's history.
    pub fn new(config: &Checked, world: impl Into<Arc<World>>) -> Env {
        let world = world.into();
        // The matrix holds the users and videos that have arrived (sign-ups and uploads of
        // a calendar arrive later: [`Env::sign_up`], [`Env::upload`]).
        let matrix = InteractionMatrix::from_triplets(
            world.initial_videos() + world.start.uploaded as usize,
            world.initial_users() + world.start.signed_up as usize,
            world.history.iter().map(|i| (i.video, i.user, i.score)),
        );
        let generator = CandidateGenerator::new(world.videos.len());
        let index = (config.candidates.source == CandidateSource::Neighbours)
            .then(|| NeighbourIndex::build(&matrix, config.candidates.neighbours, crate::cores()));
        Env {
            config: config.clone(),
            sim: world.start.clone(),
            world,
            matrix,
            generator,
            index,
            adds_since_refresh: 0,
            list_adds: true,
            obs: None,
            layout: Layout::of(config),
            journal: None,
        }
    }

    /// From here on, records which users and videos change, so that [`Env::reset_to`] can
    /// bring this environment back to what it is now (it must equal the `base` given
    /// there).
    pub fn track_changes(&mut self) {
        self.journal = Some(Journal::default());
    }

    /// Makes this environment equal to `base`, the starting point of its episodes. When
    /// it has tracked its changes since it last equalled `base` ([`Env::track_changes`],
    /// or an earlier `reset_to`), only the users and videos those changes touched are
    /// copied back, so starting an episode afresh costs its own steps, not a copy of a
    /// matrix of millions of entries; otherwise (the first call, or after a restore) it is
    /// `clone_from(base)`. Either way the result is the same, bit for bit, and changes are
    /// tracked from then on.
    pub fn reset_to(&mut self, base: &Env) {
        match self.journal.take() {
            Some(j) => {
                self.matrix.copy_rows_from(&base.matrix, &j.videos, &j.users);
                let (mine, theirs) = (&mut self.sim, &base.sim);
                for &v in &j.videos {
                    let v = v as usize;
                    mine.views[v] = theirs.views[v];
                    if let (Some(m), Some(t)) = (mine.logs.get_mut(v), theirs.logs.get(v)) {
                        *m = *t;
                    }
                }
                for &u in &j.users {
                    let u = u as usize;
                    mine.clock[u] = theirs.clock[u];
                    mine.next_session[u] = theirs.next_session[u];
                    mine.latent[u].clone_from(&theirs.latent[u]);
                }
                if j.index_rebuilt {
                    self.index.clone_from(&base.index);
                }
                mine.adds.truncate(theirs.adds.len());
                mine.session.clone_from(&theirs.session);
                self.adds_since_refresh = base.adds_since_refresh;
                self.obs.clone_from(&base.obs);
            }
            None => self.clone_from(base),
        }
        self.journal = Some(Journal::default());
    }

    /// The neighbour lists in use (with `candidates.source = "neighbours"`).
    pub fn index(&self) -> Option<&NeighbourIndex> {
        self.index.as_ref()
    }

    /// The live simulation state.
    pub fn sim(&self) -> &SimState {
        &self.sim
    }

    /// The simulation state to save: everything simulation has changed so far, the
    /// current session included (with every dynamic off, `latent` is left empty: it
    /// holds nothing but defaults).
    pub fn state(&self) -> SimState {
        let s = &self.sim;
        SimState {
            views: s.views.clone(),
            clock: s.clock.clone(),
            next_session: s.next_session.clone(),
            adds: s.adds.clone(),
            // Not copied only to be dropped (a million users' worth at platform scale).
            latent: if self.world.model.dynamics().is_off() { Vec::new() } else { s.latent.clone() },
            logs: s.logs.clone(),
            session: s.session.clone(),
            signed_up: s.signed_up,
            uploaded: s.uploaded,
            fresh_from: s.fresh_from,
        }
    }

    /// Makes this environment, fresh from its world ([`Env::new`]), equal to the one
    /// whose [`Env::state`] was saved: the matrix and the neighbour lists replay the saved
    /// interactions, and a session in flight is observed again.
    pub fn restore(&mut self, s: &SimState) -> Result<(), String> {
        // Everything may change: the next `reset_to` copies the whole starting point.
        self.journal = None;
        s.check_fits(self.world.users.len(), self.world.videos.len())?;
        if !self.sim.adds.is_empty() || self.sim.signed_up != 0 || self.sim.uploaded != 0 {
            return Err("a saved state can only be restored onto an environment at the world's start".into());
        }
        for _ in 0..s.signed_up {
            self.matrix.push_user();
        }
        for _ in 0..s.uploaded {
            self.matrix.push_item();
        }
        let (n_items, n_users) = (self.matrix.n_items(), self.matrix.n_users());
        if let Some(&(video, user, _)) = s.adds.iter().find(|&&(v, u, _)| v as usize >= n_items || u as usize >= n_users) {
            return Err(format!("saved interaction ({video}, {user}) is with a user or video not yet arrived"));
        }
        for &(video, user, score) in &s.adds {
            self.matrix.add(video, user, score);
            self.after_add();
        }
        let latent = if s.latent.is_empty() { std::mem::take(&mut self.sim.latent) } else { s.latent.clone() };
        let logs = if s.logs.is_empty() { std::mem::take(&mut self.sim.logs) } else { s.logs.clone() };
        self.sim = SimState { latent, logs, ..s.clone() };
        self.obs = None;
        if self.sim.session.is_some() {
            self.observe();
        }
        Ok(())
    }

    pub fn n_slots(&self) -> usize {
        self.config.candidates.count
    }

    /// Starts a session of `user` and returns the first observation.
    pub fn reset(&mut self, user: u32) -> &Observation {
        self.sim.session = Some(self.start_session(user));
        self.observe();
        self.obs.as_ref().expect("observe sets it")
    }

    /// Picks a user uniformly (among those who have arrived) and starts their session.
    pub fn reset_random(&mut self, rng: &mut SimRng) -> &Observation {
        let user = rng.random_range(0..self.matrix.n_users()) as u32;
        self.reset(user)
    }

    pub fn observation(&self) -> &Observation {
        self.obs.as_ref().expect("reset() before observation()")
    }

    /// The user of the current session.
    pub fn user(&self) -> u32 {
        self.sim.session.as_ref().expect("reset() before user()").user
    }

    /// A new session of `user` (the user's session counter moves on), for
    /// [`Env::observe_session`] and [`Env::apply`].
    pub fn start_session(&mut self, user: u32) -> Session {
        let s = self.open_session(user);
        self.world.model.begin_session(&mut self.sim.latent[user as usize]);
        s
    }

    /// A new session of `user` that opens at `at` on the user's clock (a calendar's time,
    /// never before the user's last step): satiation decays over the real gap since the
    /// last session rather than the fixed `satiation.session_gap_s`.
    pub fn start_session_at(&mut self, user: u32, at: f64) -> Session {
        let u = user as usize;
        self.sim.clock[u] = self.sim.clock[u].max(at);
        self.open_session(user)
    }

    /// What every new session of `user` does: the user's session counter moves on (and
    /// is journalled), and the session starts empty.
    fn open_session(&mut self, user: u32) -> Session {
        if let Some(j) = &mut self.journal {
            j.users.push(user);
        }
        self.sim.next_session[user as usize] += 1;
        let mut s = Session::new(user);
        if self.layout.logged.contains(&Logged::Exposure) {
            s.exposure = vec![0.0; self.config.world.categories.len()];
        }
        s
    }

    /// The observation layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// What the agent sees in `session` now: its candidates from the live matrix, made
    /// with the scratch space `g`. Only reads, so many sessions can be observed at once
    /// from several threads.
    pub fn observe_session(&self, session: &Session, g: &mut CandidateGenerator) -> Observation {
        let user = &self.world.users[session.user as usize];
        let candidates = self.candidates_of(user, g);
        let state = self.state_of(session, user, &candidates);
        let u = session.user as usize;
        let truth = Truth {
            model: Arc::clone(&self.world.model),
            latent: self.sim.latent[u].clone(),
            t: session.t,
            now: self.sim.clock[u],
            calendar: None,
        };
        Observation { user: user.clone(), candidates, state, truth }
    }

    /// A user's candidates now (docs/model.md: Candidate generation; Days and weeks): by
    /// similarity and the business weights; for a sign-up with nothing watched yet, the
    /// catalogue's best by the business weights; with `calendar.fresh_slots`, fresh uploads
    /// in up to that many slots.
    fn candidates_of(&self, user: &User, g: &mut CandidateGenerator) -> Vec<Candidate> {
        let (w, s, c) = (&self.world, &self.sim, &self.config.candidates);
        let history = self.matrix.user_row(user.id);
        let mut list = if history.is_empty() && user.id as usize >= w.initial_users() {
            crate::platform::candidates::cold_start(self.matrix.n_items(), user, &w.videos, &s.views, c)
        } else {
            g.candidates(&self.matrix, self.index.as_ref(), user, &w.videos, &s.views, c)
        };
        let slots = self.config.calendar.fresh_slots;
        if slots > 0 && s.uploaded > s.fresh_from {
            let first = w.initial_videos() as u32;
            let fresh = first + s.fresh_from..first + s.uploaded;
            let score = |new: &[(u32, f64)]| crate::platform::candidates::rescore(new, user, &w.videos, &s.views, c);
            crate::platform::candidates::add_fresh(&mut list, fresh, history, (slots, c.count), score);
        }
        list
    }

    /// A user signs up (the next of the world's [`crate::world::Arrivals`]); returns their id.
    ///
    /// # Panics
    /// When every sign-up of the world has arrived.
    pub fn sign_up(&mut self) -> u32 {
        assert!((self.sim.signed_up as usize) < self.world.arrivals.user_at.len(), "no sign-up left");
        self.sim.signed_up += 1;
        self.matrix.push_user()
    }

    /// The next of the world's uploads arrives; returns the video's id.
    ///
    /// # Panics
    /// When every upload of the world has arrived.
    pub fn upload(&mut self) -> u32 {
        assert!((self.sim.uploaded as usize) < self.world.arrivals.video_at.len(), "no upload left");
        self.sim.uploaded += 1;
        self.matrix.push_item()
    }

    /// Uploads before the `k`-th are no longer fresh.
    pub fn set_fresh_from(&mut self, k: u32) {
        self.sim.fresh_from = k.min(self.sim.uploaded);
    }

    fn observe(&mut self) {
        // The scratch space is lent out for the call (an empty generator allocates nothing).
        let mut g = std::mem::replace(&mut self.generator, CandidateGenerator::new(0));
        let session = self.sim.session.as_ref().expect("a session is in flight");
        self.obs = Some(self.observe_session(session, &mut g));
        self.generator = g;
    }

    fn state_of(&self, session: &Session, user: &User, candidates: &[Candidate]) -> State {
        let c = &self.config;
        let r = c.candidates.count;
        let layout = &self.layout;
        let mut numeric = vec![0.0f32; layout.n_numeric()];
        numeric[num::AGE] = (user.age - c.world.age_min) as f32 / (c.world.age_max - c.world.age_min) as f32;
        numeric[num::WATCHED] = session.watched as f32 / c.env.max_steps as f32;
        numeric[num::SESSION_LENGTH] = (session.session_len_s / (c.env.max_steps as f64 * c.world.video_duration_s)) as f32;
        let mut categorical = vec![0i64; layout.n_categorical()];
        categorical[cat::GENDER] = user.gender as i64;
        categorical[cat::REGION] = user.region as i64;
        let interests = match c.dqn.interests {
            crate::config::InterestSource::Profile => user.interests,
            crate::config::InterestSource::Predicted => self.predicted_interests(session.user),
        };
        categorical[cat::INTEREST_1] = interests[0] as i64;
        categorical[cat::INTEREST_2] = interests[1] as i64;
        categorical[cat::LAST_CATEGORY] = session.last_category.map_or(0, |x| x as i64 + 1);
        categorical[cat::LAST_ACTION] = session.last_response.map_or(0, response_code) as i64;
        let gru = layout.history_steps > 0;
        if gru {
            // The GRU reads the session instead of the hand-built session features.
            numeric[num::WATCHED] = 0.0;
            numeric[num::SESSION_LENGTH] = 0.0;
            categorical[cat::LAST_CATEGORY] = 0;
            categorical[cat::LAST_ACTION] = 0;
            let (steps, per) = (layout.history_steps, layout.history_features);
            let n_cat = c.world.categories.len();
            let start = layout.history_start();
            let recent = &session.recent[session.recent.len().saturating_sub(steps)..];
            // Right-aligned: the last step in the last row, padding (all 0) before the first.
            let first_row = steps - recent.len();
            for (k, &(category, code, watch_s)) in recent.iter().enumerate() {
                let row = &mut numeric[start + (first_row + k) * per..start + (first_row + k + 1) * per];
                row[category as usize] = 1.0;
                if code > 0 {
                    row[n_cat + code as usize - 1] = 1.0;
                }
                row[n_cat + 3] = (watch_s as f64).ln_1p() as f32 / 5.0;
                row[n_cat + 4] = 1.0;
            }
        }
        let mut valid = vec![false; r];
        // Raw and final scores grow with the user's history; the agent sees them relative
        // to the largest among the candidates, so their scale stays the same all run long.
        let scale = |f: fn(&Candidate) -> f64| {
            let m = candidates.iter().map(|c| f(c).abs()).fold(0.0, f64::max);
            if m > 0.0 {
                1.0 / m
            } else {
                1.0
            }
        };
        let (raw_scale, final_scale) = (scale(|c| c.raw), scale(|c| c.final_score));
        let affinity = layout.logged.contains(&Logged::Affinity).then(|| self.affinity(session.user));
        let followed: &[u32] = self.sim.latent.get(session.user as usize).map_or(&[], |l| &l.followed);
        for (k, cand) in candidates.iter().enumerate().take(r) {
            let f = &mut numeric[layout.slot(k)..layout.slot(k + 1)];
            f[num::FINAL] = (cand.final_score * final_scale) as f32;
            f[num::RAW] = (cand.raw * raw_scale) as f32;
            f[num::VIEWS] = cand.views as f32 / 100.0;
            let interest_match = match c.dqn.interests {
                crate::config::InterestSource::Profile => cand.interest_match,
                crate::config::InterestSource::Predicted => interests.contains(&cand.category),
            };
            f[num::INTEREST] = if interest_match { 1.0 } else { 0.0 };
            for (j, l) in layout.logged.iter().enumerate() {
                let log = self.sim.logs.get(cand.video as usize).copied().unwrap_or_default();
                f[num::PER_SLOT + j] = match l {
                    Logged::WatchRate => log.watch_rate() as f32,
                    Logged::Completion => log.completion() as f32,
                    Logged::MeanCompletion => log.mean_completion() as f32,
                    Logged::LoggedViews => log.logged_views() as f32,
                    Logged::ExitRate => log.exit_rate() as f32,
                    Logged::Exposure if gru => 0.0,
                    Logged::Exposure => session.exposure.get(cand.category as usize).copied().unwrap_or(0.0),
                    Logged::Duration => (self.world.videos[cand.video as usize].duration_s / 60.0) as f32,
                    Logged::LogViews => ((cand.views as f64).ln_1p() / LOG_VIEWS_SCALE) as f32,
                    Logged::Affinity => affinity.as_ref().map_or(0.0, |a| a[cand.category as usize]),
                    Logged::Followed => {
                        let creator = self.world.videos[cand.video as usize].creator;
                        f32::from(u8::from(followed.binary_search(&creator).is_ok()))
                    }
                };
            }
            categorical[cat::CANDIDATES + k] = cand.category as i64 + 1;
            valid[k] = true;
        }
        if let Some(n_videos) = layout.video_ids {
            for k in 0..r {
                let id = candidates.get(k).map_or(n_videos, |cand| (cand.video as usize).min(n_videos));
                categorical[layout.video_column(k)] = id as i64;
            }
        }
        State { numeric, categorical, valid }
    }

    /// The user's interests as predicted from their history (`dqn.interests =
    /// "predicted"`): the two categories with the largest summed scores in the user's
    /// row of the matrix, ties to the lower category; categories 0 and 1 for a user with
    /// no row yet.
    pub fn predicted_interests(&self, user: u32) -> [u16; 2] {
        let n = self.config.world.categories.len();
        let mut sum = vec![0.0f64; n];
        let mut seen = false;
        for (video, score) in self.matrix.user_row(user).iter() {
            sum[self.world.videos[video as usize].category as usize] += score;
            seen = true;
        }
        if !seen || n < 2 {
            return [0, 1.min(n.saturating_sub(1)) as u16];
        }
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| sum[b].total_cmp(&sum[a]).then(a.cmp(&b)));
        [order[0] as u16, order[1] as u16]
    }

    /// The user's logged taste per category ([`Logged::Affinity`]), from the matrix.
    fn affinity(&self, user: u32) -> Vec<f32> {
        let n = self.config.world.categories.len();
        let (mut sum, mut count) = (vec![0.0f64; n], vec![0u32; n]);
        for (video, score) in self.matrix.user_row(user).iter() {
            let c = self.world.videos[video as usize].category as usize;
            sum[c] += score;
            count[c] += 1;
        }
        sum.iter().zip(&count).map(|(s, &k)| (s / (2.0 * (k as f64 + 1.0))) as f32).collect()
    }

    /// Rebuilds the neighbour lists when `candidates.refresh_every` interactions arrived.
    fn after_add(&mut self) {
        let every = self.config.candidates.refresh_every;
        if self.index.is_none() || every == 0 {
            return;
        }
        self.adds_since_refresh += 1;
        if self.adds_since_refresh >= every {
            self.index = Some(NeighbourIndex::build(&self.matrix, self.config.candidates.neighbours, crate::cores()));
            self.adds_since_refresh = 0;
            if let Some(j) = &mut self.journal {
                j.index_rebuilt = true;
            }
        }
    }

    /// Shows the candidate in `slot`, draws the response from `rng`, pays the reward and
    /// updates the world, then prepares the next observation.
    ///
    /// An empty slot (there are fewer candidates than slots) falls back to slot 0.
    pub fn step(&mut self, slot: usize, rng: &mut SimRng) -> StepOutcome {
        let obs = self.obs.take().expect("reset() before step()");
        let mut session = self.sim.session.take().expect("reset() before step()");
        let out = self.apply(&mut session, &obs, slot, rng);
        self.sim.session = Some(session);
        self.observe();
        out
    }

    /// Shows the candidate in `slot` of `obs` (the session's current observation) to the
    /// session's user, draws the response from `rng`, pays the reward and updates the
    /// world and the session. The next observation is the caller's to make.
    pub fn apply(&mut self, session: &mut Session, obs: &Observation, slot: usize, rng: &mut SimRng) -> StepOutcome {
        let slot = if slot < obs.candidates.len() { slot } else { 0 };
        let cand = &obs.candidates[slot];
        let (video, category) = (cand.video, cand.category);
        let c = &self.config;

        let u = session.user as usize;
        if let Some(j) = &mut self.journal {
            j.users.push(session.user);
            j.videos.push(video);
        }
        let user = &self.world.users[u];
        let model = &self.world.model;
        let now = self.sim.clock[u];
        let latent = &self.sim.latent[u];
        let expected_reward = model.expected_reward(user, latent, video, now);
        let satiation = model.satiation(latent, category, now);
        let expected_p = model.expected_p(user, latent, video, now);
        let detail = !model.dynamics().is_off() || c.output.step_detail;
        let offered = if detail { obs.candidates.iter().map(|c| c.video).collect() } else { Vec::new() };
        let outcome_p = if detail { model.outcome_probabilities(user, latent, session.t, video, now) } else { [0.0; 4] };
        let r = model.respond(user, latent, session.t, video, now, rng);
        model.update(&mut self.sim.latent[u], video, r.action, r.followed, now);
        let (response, reward) = (r.action, r.reward);
        let model_fraction = model.watch_fraction(video);
        let seen = Seen { video, response, watch_s: r.watch_s, dt: r.dt, fraction: model_fraction, left: r.left };
        let user = session.user;
        self.record(Some(session), user, seen);
        let terminal = r.left;
        let truncated = !terminal && self.config.env.budget_spent(session.t);
        StepOutcome {
            video,
            category,
            slot,
            response,
            reward,
            watch_s: r.watch_s,
            expected_reward,
            satiation,
            expected_p,
            offered,
            time_s: now,
            outcome_p,
            propensity: 1.0,
            propensity_estimated: false,
            terminal,
            truncated,
        }
    }
}

/// A response as the platform sees it: what [`Env::record`] needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Seen {
    pub video: u32,
    pub response: Action,
    /// Seconds of the video watched.
    pub watch_s: f64,
    /// Seconds the user's clock moves on.
    pub dt: f64,
    /// The share of the video watched, for its logged completion.
    pub fraction: f64,
    /// The session ended after this step.
    pub left: bool,
}

impl Env {
    /// The platform's side of a step: the shown video counts a view, the response lands
    /// in the matrix (and the neighbour lists, on their cadence), the user's clock and the
    /// video's log move on, and the session (when given: a response that arrives after
    /// its session was replaced only updates the world) records it. [`Env::apply`] calls
    /// it after drawing the response; a served policy calls it with the response a client
    /// reported.
    pub fn record(&mut self, session: Option<&mut Session>, user: u32, seen: Seen) {
        let Seen { video, response, watch_s, dt, fraction, left } = seen;
        let (vi, u) = (video as usize, user as usize);
        // Showing the video counts a view (docs/model.md: Episodes).
        self.sim.views[vi] += 1;
        let score = response.score(&self.config.scores);
        self.matrix.add(video, user, score);
        if self.list_adds {
            self.sim.adds.push((video, user, score));
        }
        self.after_add();
        self.sim.clock[u] += dt;
        if let Some(log) = self.sim.logs.get_mut(vi) {
            log.record(response.counts_view(), fraction, left);
        }
        if let Some(session) = session {
            self.follow_session(session, video, response, watch_s, dt);
        }
    }

    /// The session's own record of a step (its features), without touching the world:
    /// part of [`Env::record`], and how a served session is rebuilt from the steps a
    /// client reports.
    pub fn follow_session(&self, session: &mut Session, video: u32, response: Action, watch_s: f64, dt: f64) {
        let category = self.world.videos[video as usize].category;
        session.session_len_s += dt;
        if response.counts_view() {
            session.watched += 1;
        }
        if !session.exposure.is_empty() {
            for e in &mut session.exposure {
                *e *= EXPOSURE_DECAY;
            }
            session.exposure[category as usize] += 1.0;
        }
        if self.layout.history_steps > 0 {
            session.recent.push((category, response_code(response), watch_s as f32));
        }
        session.last_category = Some(category);
        session.last_response = Some(response);
        session.t += 1;
    }

    /// From here on `sim.adds` no longer lists the interactions (16 bytes each): for an
    /// environment that lives long and is never saved nor reset (a served experiment,
    /// whose decision log is its record). The matrix holds them as before.
    pub fn stop_listing_interactions(&mut self) {
        self.list_adds = false;
        self.sim.adds = Vec::new();
    }

    /// A new session of `user` that a service opens: like [`Env::start_session`], but
    /// the user's latent state (the simulator's truth) is left alone.
    pub fn open_served_session(&mut self, user: u32) -> Session {
        self.open_session(user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::rng::{stream, Stream};

    #[test]
    fn a_step_updates_matrix_views_and_state() {
        let c = Config::default().check().unwrap();
        let mut env = Env::new(&c, World::generate(&c));
        let obs = env.reset(3).clone();
        assert_eq!(obs.candidates.len(), 10);
        assert!(obs.state.valid.iter().all(|&v| v));
        // Slot 0 has the largest final score: it reads 1.
        assert_eq!(obs.state.numeric[num::SLOTS + num::FINAL], 1.0);
        let max_raw = obs.candidates.iter().map(|c| c.raw.abs()).fold(0.0, f64::max);
        assert_eq!(obs.state.numeric[num::SLOTS + num::PER_SLOT + num::RAW], (obs.candidates[1].raw / max_raw) as f32);
        let video = obs.candidates[2].video;
        let views = env.sim().views[video as usize];
        let before = env.matrix.get(video, 3);
        assert_eq!(before, None);
        let mut rng = stream(1, Stream::Responses);
        let out = env.step(2, &mut rng);
        assert_eq!(out.video, video);
        assert_eq!(env.sim().views[video as usize], views + 1);
        assert_eq!(env.matrix.get(video, 3), Some(out.response.score(&c.scores)));
        // The shown video is now in the history, so it is no longer a candidate.
        assert!(env.observation().candidates.iter().all(|x| x.video != video));
        let s = &env.observation().state;
        assert_eq!(s.categorical[cat::LAST_CATEGORY], out.category as i64 + 1);
        let expected = match out.response {
            Action::Watched => 1,
            Action::Skipped => 2,
            Action::Liked => 3,
            _ => 0,
        };
        assert_eq!(s.categorical[cat::LAST_ACTION], expected);
    }

    #[test]
    fn neighbour_lists_see_interactions_at_once_and_refresh_on_cadence() {
        let c = Config::from_toml_str(
            "[world]\nn_videos = 400\nn_users = 60\n[candidates]\nsource = \"neighbours\"\nneighbours = 20\nrefresh_every = 3\n",
            &[],
        )
        .unwrap();
        let mut env = Env::new(&c, World::generate(&c));
        let mut rng = stream(4, Stream::Responses);
        let before = env.index().unwrap().lists.clone();
        env.reset(7);
        for _ in 0..3 {
            let shown = env.observation().candidates[0].video;
            let o = env.step(0, &mut rng);
            // The user's history is live: the shown video is never offered again.
            assert!(env.observation().candidates.iter().all(|x| x.video != shown));
            if o.terminal || o.truncated {
                env.reset(7);
            }
        }
        // Three interactions: the lists were rebuilt from the updated matrix.
        let after = &env.index().unwrap().lists;
        let rebuilt = NeighbourIndex::build(&env.matrix, 20, 1).lists;
        assert_eq!(after, &rebuilt);
        assert_ne!(after, &before, "the interactions changed some neighbour lists");
    }

    #[test]
    fn episodes_end_at_session_end_or_the_step_budget() {
        let c = Config::from_toml_str("[env]\nmax_steps = 5\n", &[]).unwrap();
        let mut env = Env::new(&c, World::generate(&c));
        let mut rng = stream(2, Stream::Responses);
        for u in 0..20 {
            env.reset(u);
            let mut steps = 0;
            loop {
                let o = env.step(0, &mut rng);
                steps += 1;
                assert_eq!(o.terminal, o.response == Action::SessionEnd);
                if o.terminal || o.truncated {
                    assert!(o.terminal || steps == 5);
                    break;
                }
            }
            assert!(steps <= 5);
        }
    }

    /// With `log_views` in place of `views`, every number the network sees stays of order
    /// 1 however many views videos have (a million each here), so the TD loss cannot be
    /// dominated by one input's scale.
    #[test]
    fn every_input_stays_of_order_one_at_platform_view_counts() {
        let features = |f: &str| {
            let c = Config::from_toml_str(
                &format!(
                    "[world]\ninitial_views_mean = 1000000.0\ninitial_views_std = 300000.0\n[dqn]\ncandidate_features = {f}\n"
                ),
                &[],
            )
            .unwrap();
            let mut env = Env::new(&c, World::generate(&c));
            let layout = env.layout().clone();
            // The base numbers a config does not name reach the network as 0.
            let named = |j: usize| c.dqn.candidate_features.iter().any(|f| f == crate::config::CANDIDATE_FEATURES[j]);
            let seen = |i: usize| {
                i < num::SLOTS
                    || (i - num::SLOTS) % layout.per_slot() >= num::PER_SLOT
                    || named((i - num::SLOTS) % layout.per_slot())
            };
            (0..20u32)
                .flat_map(|u| env.reset(u).state.numeric.clone().into_iter().enumerate())
                .filter(|&(i, _)| seen(i))
                .fold(0.0f32, |m, (_, x)| m.max(x.abs()))
        };
        let scaled = features(r#"["final", "raw", "interest", "log_views"]"#);
        assert!(scaled <= 1.5, "largest input {scaled}");
        // The prototype's views / 100 is in the thousands there.
        assert!(features(r#"["final", "raw", "views", "interest"]"#) > 1000.0);
    }

    /// Starting an episode afresh by undoing the last one's changes equals copying the
    /// whole starting point, with every dynamic on and neighbour lists rebuilt mid-episode.
    #[test]
    fn reset_to_equals_a_whole_copy_of_the_starting_point() {
        let c = Config::from_toml_str(
            "[world]\nn_videos = 300\nn_users = 40\n[candidates]\nsource = \"neighbours\"\nrefresh_every = 7\n\
             [dynamics.satiation]\nstrength = 0.2\n[dynamics.fatigue]\nrate = 0.05\n[dynamics.drift]\nrate = 0.1\n\
             [dynamics.quality]\nsd = 1.0\nclickbait = 0.1\nleave = 0.3\nwatch = 1.0\n\
             [dynamics.behaviour]\nenabled = true\nduration_min_s = 5.0\nduration_max_s = 40.0\n",
            &[],
        )
        .unwrap();
        let base = Env::new(&c, World::generate(&c));
        let (mut fast, mut whole) = (base.clone(), base.clone());
        fast.track_changes();
        let mut rng = stream(5, Stream::Responses);
        for episode in 0..30u32 {
            let user = episode * 7 % 40;
            let mut r2 = rng.clone();
            for (env, rng) in [(&mut fast, &mut rng), (&mut whole, &mut r2)] {
                env.reset(user);
                for t in 0..12 {
                    if env.observation().exhausted() || env.step(t % 3, rng).terminal {
                        break;
                    }
                }
            }
            assert_eq!(fast.state(), whole.state(), "episode {episode}");
            fast.reset_to(&base);
            whole.clone_from(&base);
            assert_eq!(fast.state(), base.state());
            assert!(fast.matrix == base.matrix, "episode {episode}: the matrix differs");
            assert_eq!(fast.index().map(|i| format!("{i:?}")), base.index().map(|i| format!("{i:?}")));
            assert_eq!(fast.adds_since_refresh, base.adds_since_refresh);
        }
        // After a restore nothing is known of what changed: a whole copy.
        let mut restored = base.clone();
        restored.reset(3);
        restored.step(0, &mut rng);
        let saved = restored.state();
        let mut again = base.clone();
        again.restore(&saved).unwrap();
        again.reset_to(&base);
        assert_eq!(again.state(), base.state());
        assert!(again.matrix == base.matrix);
    }

    #[test]
    fn mean_completion_and_logged_views_read_the_videos_logs_unsmoothed() {
        let c = Config::from_toml_str(
            "[world]\nn_videos = 300\nn_users = 40\n[dynamics.quality]\nsd = 1.0\nwatch = 1.5\n\
             [dynamics.behaviour]\nenabled = true\n\
             [dqn]\ncandidate_features = [\"completion\", \"mean_completion\", \"logged_views\"]\n",
            &[],
        )
        .unwrap();
        let mut env = Env::new(&c, World::generate(&c));
        let layout = env.layout().clone();
        assert_eq!(layout.logged, [Logged::Completion, Logged::MeanCompletion, Logged::LoggedViews]);
        let (mut viewed, mut unviewed) = (0, 0);
        for user in 0..40 {
            let obs = env.reset(user).clone();
            for (k, cand) in obs.candidates.iter().enumerate() {
                let f = &obs.state.numeric[layout.slot(k)..layout.slot(k + 1)];
                let log = env.sim.logs[cand.video as usize];
                assert_eq!(f[num::PER_SLOT], log.completion() as f32);
                assert_eq!(f[num::PER_SLOT + 2], ((log.watched as f64).ln_1p() / 3.0) as f32);
                if log.watched == 0 {
                    assert_eq!(f[num::PER_SLOT + 1], 0.5);
                    unviewed += 1;
                } else {
                    // Watch fractions are the video's own: one logged view tells it exactly,
                    // where the smoothed completion still leans toward 1/2.
                    let truth = env.world.model.watch_fraction(cand.video) as f32;
                    assert!((f[num::PER_SLOT + 1] - truth).abs() < 1e-5, "{} against {truth}", f[num::PER_SLOT + 1]);
                    viewed += 1;
                }
            }
        }
        assert!(viewed > 0 && unviewed > 0, "{viewed} viewed, {unviewed} not");
    }

    /// The simulation state is one value: saved in the middle of a session (through its
    /// JSON form) and restored onto a fresh environment of the same world, it goes on
    /// exactly as the original, sessions after it included.
    #[test]
    fn a_state_saved_mid_session_goes_on_as_the_original() {
        let c = Config::from_toml_str(
            "[world]\nn_videos = 300\nn_users = 40\n[candidates]\nsource = \"neighbours\"\nrefresh_every = 5\n\
             [dynamics.satiation]\nstrength = 0.2\n[dynamics.fatigue]\nrate = 0.02\n[dynamics.drift]\nrate = 0.1\n\
             [dynamics.quality]\nsd = 1.0\nclickbait = 0.1\nleave = 0.1\nwatch = 1.0\n\
             [dynamics.behaviour]\nenabled = true\nduration_min_s = 5.0\nduration_max_s = 40.0\n\
             [dqn]\ncandidate_features = [\"final\", \"exposure\", \"exit_rate\"]\n",
            &[],
        )
        .unwrap();
        let mut a = Env::new(&c, World::generate(&c));
        let mut rng = stream(9, Stream::Responses);
        a.reset(5);
        let mut steps_in_session = 0;
        for t in 0..40 {
            if a.observation().exhausted() || a.step(t % 3, &mut rng).terminal {
                a.reset(t as u32 % 40);
                steps_in_session = 0;
            } else {
                steps_in_session += 1;
            }
        }
        if steps_in_session == 0 {
            a.step(0, &mut rng);
        }
        let saved = a.state();
        assert!(saved.session.as_ref().is_some_and(|s| s.t > 0), "the state is saved mid-session");
        let back: SimState = serde_json::from_str(&serde_json::to_string(&saved).unwrap()).unwrap();
        assert_eq!(back, saved);
        let mut b = Env::new(&c, Arc::clone(&a.world));
        b.restore(&back).unwrap();
        assert_eq!(a.observation().state, b.observation().state);
        assert_eq!(a.observation().candidates, b.observation().candidates);
        let mut r2 = rng.clone();
        for t in 0..60 {
            if a.observation().exhausted() {
                a.reset(t % 40);
                b.reset(t % 40);
                continue;
            }
            let (oa, ob) = (a.step(t as usize % 4, &mut rng), b.step(t as usize % 4, &mut r2));
            assert_eq!(oa, ob, "step {t}");
            assert_eq!(a.observation().state, b.observation().state, "step {t}");
            if oa.terminal || oa.truncated {
                a.reset(t * 3 % 40);
                b.reset(t * 3 % 40);
            }
        }
        assert_eq!(a.state(), b.state());
        assert!(a.matrix == b.matrix);
        // A state of another world is refused by name.
        let other = Config::from_toml_str("[world]\nn_videos = 200\nn_users = 40\n", &[]).unwrap();
        let err = Env::new(&other, World::generate(&other)).restore(&saved).unwrap_err();
        assert!(err.contains("another world") && err.contains("300 videos"), "{err}");
    }

    #[test]
    fn the_environments_mean_reward_converges_to_the_models_expected_reward() {
        let c = Config::from_toml_str(
            "[dynamics.satiation]\nstrength = 0.2\n[dynamics.fatigue]\nrate = 0.05\n[dynamics.drift]\nrate = 0.1\n\
             [dynamics.quality]\nsd = 1.0\nclickbait = 0.1\nleave = 0.3\nwatch = 1.0\n\
             [dynamics.behaviour]\nenabled = true\nduration_min_s = 5.0\nduration_max_s = 40.0\nshare_rate = 0.2\n\
             follow_rate = 0.1\nreward_watch_s = 0.05\nreward_share = 1.0\nreward_follow = 1.0\n",
            &[],
        )
        .unwrap();
        let mut env = Env::new(&c, World::generate(&c));
        let mut rng = stream(3, Stream::Responses);
        // A fixed state some steps into a session (the latent state has moved).
        env.reset(11);
        for _ in 0..3 {
            if env.step(0, &mut rng).terminal {
                env.reset(11);
            }
        }
        let obs = env.observation().clone();
        for slot in [0, 4] {
            let video = obs.candidates[slot].video;
            let t = &obs.truth;
            let exact = t.model.expected_reward(&obs.user, &t.latent, video, t.now);
            let n = 5_000;
            let (mut sum, mut sq) = (0.0, 0.0);
            for _ in 0..n {
                let mut e = env.clone();
                let o = e.step(slot, &mut rng);
                assert_eq!(o.expected_reward, exact);
                sum += o.reward;
                sq += o.reward * o.reward;
            }
            let mean = sum / n as f64;
            let se = ((sq / n as f64 - mean * mean) / n as f64).sqrt();
            assert!((mean - exact).abs() < 5.0 * se, "slot {slot}: {mean} vs {exact} (se {se})");
        }
    }

    #[test]
    fn affinity_and_followed_read_the_users_logged_actions() {
        let c = Config::from_toml_str(
            "[world]\nn_videos = 300\nn_users = 40\n[dynamics.behaviour]\nenabled = true\n\
             [dqn]\ncandidate_features = [\"interest\", \"affinity\", \"followed\"]\n",
            &[],
        )
        .unwrap();
        let world = Arc::new(World::generate(&c));
        let mut env = Env::new(&c, Arc::clone(&world));
        let obs = env.reset(6).clone();
        let (aff, fol) = (num::PER_SLOT, num::PER_SLOT + 1);
        // By hand: the user's summed scores per category over twice the number of videos
        // plus one (a video met twice is one matrix entry).
        let mut per_video = std::collections::BTreeMap::new();
        for h in world.history.iter().filter(|h| h.user == 6) {
            *per_video.entry(h.video).or_insert(0.0) += h.score;
        }
        for (k, cand) in obs.candidates.iter().enumerate() {
            let (mut sum, mut n) = (0.0, 0.0);
            for (&v, &score) in &per_video {
                if world.videos[v as usize].category == cand.category {
                    sum += score;
                    n += 1.0;
                }
            }
            let want = (sum / (2.0 * (n + 1.0))) as f32;
            let got = obs.state.numeric[env.layout().slot(k) + aff];
            assert!((got - want).abs() < 1e-6, "slot {k}: {got} vs {want}");
            assert_eq!(obs.state.numeric[env.layout().slot(k) + fol], 0.0, "nobody is followed yet");
        }
        // Once the user follows slot 2's creator, every candidate of that creator reads 1.
        let creator = world.videos[obs.candidates[2].video as usize].creator;
        let mut state = env.state();
        state.latent[6].followed = vec![creator];
        let mut env = Env::new(&c, Arc::clone(&world));
        env.restore(&state).unwrap();
        let obs = env.reset(6).clone();
        for (k, cand) in obs.candidates.iter().enumerate() {
            let want = f32::from(u8::from(world.videos[cand.video as usize].creator == creator));
            assert_eq!(obs.state.numeric[env.layout().slot(k) + fol], want);
        }
    }
}

#[cfg(test)]
mod interest_tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn predicted_interests_come_from_the_history_and_only_change_the_interest_inputs() {
        let c = Config::default().check().unwrap();
        let env = Env::new(&c, World::generate(&c));
        let users = &env.world.users;
        // The logged history leans toward the profile's interests: most predictions
        // recover at least one, and many both.
        let (mut one, mut both) = (0, 0);
        for u in users {
            let p = env.predicted_interests(u.id);
            let hits = p.iter().filter(|x| u.interests.contains(x)).count();
            one += usize::from(hits >= 1);
            both += usize::from(hits == 2);
        }
        let n = users.len();
        assert!(one * 10 >= n * 7, "{one} of {n} with one interest right");
        assert!(both * 10 >= n, "{both} of {n} with both right");
        eprintln!("predicted interests: {one} of {n} users with one right, {both} with both");
        // The predicted state differs from the profile's only in the interest inputs.
        let p = Config::from_toml_str("[dqn]\ninterests = \"predicted\"\n", &[]).unwrap();
        let mut a = Env::new(&c, World::generate(&c));
        let mut b = Env::new(&p, World::generate(&p));
        let (sa, sb) = (a.reset(5).state.clone(), b.reset(5).state.clone());
        let pred = b.predicted_interests(5);
        assert_eq!(sb.categorical[cat::INTEREST_1], pred[0] as i64);
        assert_eq!(sb.categorical[cat::INTEREST_2], pred[1] as i64);
        for (k, (x, y)) in sa.categorical.iter().zip(&sb.categorical).enumerate() {
            if k != cat::INTEREST_1 && k != cat::INTEREST_2 {
                assert_eq!(x, y, "categorical {k}");
            }
        }
        let layout = Layout::of(&c);
        for (j, (x, y)) in sa.numeric.iter().zip(&sb.numeric).enumerate() {
            let in_slot = j >= num::SLOTS && (j - num::SLOTS) % layout.per_slot() == num::INTEREST;
            if !in_slot {
                assert_eq!(x, y, "numeric {j}");
            }
        }
    }

    #[test]
    fn video_ids_join_the_state_after_the_slots_and_change_nothing_else() {
        let c = Config::from_toml_str("[world]\nn_videos = 300\n", &[]).unwrap();
        let v = Config::from_toml_str("[world]\nn_videos = 300\n[dqn.embeddings]\nvideo = 8\n", &[]).unwrap();
        let mut a = Env::new(&c, World::generate(&c));
        let mut b = Env::new(&v, World::generate(&v));
        let layout = b.layout().clone();
        assert_eq!(layout.video_ids, Some(300));
        assert_eq!(layout.n_categorical(), State::n_categorical(10) + 10);
        for user in [0, 7, 42] {
            let (oa, ob) = (a.reset(user).clone(), b.reset(user).clone());
            assert_eq!(oa.state.numeric, ob.state.numeric);
            assert_eq!(&ob.state.categorical[..oa.state.categorical.len()], &oa.state.categorical[..]);
            for k in 0..10 {
                let want = ob.candidates.get(k).map_or(300, |c| c.video as i64);
                assert_eq!(ob.state.categorical[layout.video_column(k)], want, "user {user}, slot {k}");
            }
        }
        // A video the starting catalogue did not have (an upload) reads the shared id.
        let mut s = b.observation().clone();
        s.candidates.truncate(1);
        s.candidates[0].video = 300 + 5;
        let state = b.state_of(b.sim.session.as_ref().unwrap(), &s.user, &s.candidates);
        assert_eq!(state.categorical[layout.video_column(0)], 300);
        assert_eq!(state.categorical[layout.video_column(1)], 300, "an empty slot");
    }
}

#[cfg(test)]
mod session_gru_tests {
    use super::*;
    use crate::config::Config;
    use crate::rng::{stream, Stream};

    #[test]
    fn the_gru_encoder_sees_the_session_history_instead_of_the_hand_built_features() {
        let c = Config::from_toml_str(
            "[dqn]\nsession_encoder = \"gru\"\nsession_window = 4\ncandidate_features = [\"final\", \"exposure\"]\n",
            &[],
        )
        .unwrap();
        let mut env = Env::new(&c, World::generate(&c));
        let layout = env.layout().clone();
        let n_cat = c.world.categories.len();
        let per = history_features(n_cat);
        assert_eq!((layout.history_steps, layout.history_features), (4, per));
        assert_eq!(layout.n_numeric(), layout.history_start() + 4 * per);
        let start = layout.history_start();
        let s0 = env.reset(3).state.clone();
        assert_eq!(s0.numeric.len(), layout.n_numeric());
        assert!(s0.numeric[start..].iter().all(|&x| x == 0.0), "no step yet: all padding");
        let mut rng = stream(1, Stream::Responses);
        let mut shown = Vec::new();
        for _ in 0..6 {
            let out = env.step(0, &mut rng);
            shown.push((out.category, out.response));
            if out.terminal {
                break;
            }
        }
        let s = env.obs.as_ref().map(|o| o.state.clone()).unwrap();
        assert_eq!(s.numeric[num::WATCHED], 0.0);
        assert_eq!(s.numeric[num::SESSION_LENGTH], 0.0);
        assert_eq!(s.categorical[cat::LAST_CATEGORY], 0);
        assert_eq!(s.categorical[cat::LAST_ACTION], 0);
        // Exposure (a hand-built session feature) reads 0 in every slot.
        for k in 0..layout.slots {
            assert_eq!(s.numeric[layout.slot(k) + num::PER_SLOT], 0.0);
        }
        // The last min(4, steps) steps, right-aligned, in order.
        let recent = &shown[shown.len().saturating_sub(4)..];
        let first = 4 - recent.len();
        for (k, &(category, response)) in recent.iter().enumerate() {
            let row = &s.numeric[start + (first + k) * per..start + (first + k + 1) * per];
            assert_eq!(row[category as usize], 1.0);
            assert_eq!(row[n_cat + 4], 1.0, "a step that happened");
            let code = match response {
                Action::Watched => Some(0),
                Action::Skipped => Some(1),
                Action::Liked => Some(2),
                _ => None,
            };
            if let Some(j) = code {
                assert_eq!(row[n_cat + j], 1.0);
            }
        }
        for row in 0..first {
            assert!(s.numeric[start + row * per..start + (row + 1) * per].iter().all(|&x| x == 0.0));
        }
    }
}
