//! The agent's world (docs/model.md: Episodes): an episode is one session of one user; each step
//! shows one of the user's candidates, draws the response, pays the reward and adds the
//! interaction to the matrix at once, so the next candidates already reflect it.

use rand::Rng;

use crate::candidates::{Candidate, CandidateGenerator, NeighbourIndex};
use crate::config::{CandidateSource, Checked};
use crate::matrix::InteractionMatrix;
use crate::rng::SimRng;
use crate::world::response::draw_session_response;
use crate::world::{Action, User, World};

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
    /// Then one entry per candidate slot: its category + 1, 0 for an empty slot.
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
    /// the candidates), views / 100, interest match (0 or 1).
    pub const SLOTS: usize = 3;
    pub const PER_SLOT: usize = 4;
    /// Offsets within a slot's features.
    pub const FINAL: usize = 0;
    pub const RAW: usize = 1;
    pub const VIEWS: usize = 2;
    pub const INTEREST: usize = 3;
}

/// What the agent sees: numerical features and categorical ids, plus which slots hold a
/// candidate (fewer than r when the user has seen almost everything).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct State {
    pub numeric: Vec<f32>,
    pub categorical: Vec<i64>,
    pub valid: Vec<bool>,
}

impl State {
    pub fn n_numeric(slots: usize) -> usize {
        num::SLOTS + num::PER_SLOT * slots
    }
    pub fn n_categorical(slots: usize) -> usize {
        cat::CANDIDATES + slots
    }
}

/// Everything a policy may look at: the state and, for baselines, the raw candidates.
#[derive(Debug, Clone)]
pub struct Observation {
    pub user: User,
    pub candidates: Vec<Candidate>,
    pub state: State,
}

impl Observation {
    /// The user has seen every video the feed could offer: there is nothing left to show,
    /// so the session ends here (see "When the feed runs dry" in the README). Policies
    /// are never asked to act on such an observation.
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
    /// The session ended (a terminal state: no bootstrapping).
    pub terminal: bool,
    /// The step budget ran out (not terminal: the user would have gone on).
    pub truncated: bool,
}

/// What simulation changed in the world: enough to rebuild an environment exactly.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EnvState {
    pub views: Vec<u64>,
    pub clock: Vec<f64>,
    pub next_session: Vec<u32>,
    /// Every (video, user, score) added to the matrix, in order: replaying them onto the
    /// history's matrix reproduces it bit for bit (norms included).
    pub adds: Vec<(u32, u32, f64)>,
}

/// The environment over one mutable copy of the world.
#[derive(Debug, Clone)]
pub struct Env {
    config: Checked,
    pub world: World,
    pub matrix: InteractionMatrix,
    generator: CandidateGenerator,
    /// The neighbour lists, with `candidates.source = "neighbours"`.
    index: Option<NeighbourIndex>,
    adds_since_refresh: usize,
    session: Session,
    obs: Option<Observation>,
    adds: Vec<(u32, u32, f64)>,
}

/// One user's session in progress: what the state needs besides the world. The
/// environment runs one through `reset`/`step`; lockstep training runs many over one
/// shared world through `start_session`/`observe_session`/`apply`.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub user: u32,
    /// Steps taken so far.
    pub t: usize,
    watched: usize,
    session_len_s: f64,
    last_category: Option<u16>,
    last_response: Option<Action>,
}

impl Session {
    fn new(user: u32) -> Session {
        Session { user, t: 0, watched: 0, session_len_s: 0.0, last_category: None, last_response: None }
    }
}

impl Env {
    /// Builds the matrix from the world's history.
    pub fn new(config: &Checked, world: World) -> Env {
        let matrix = InteractionMatrix::from_triplets(
            world.videos.len(),
            world.users.len(),
            world.history.iter().map(|i| (i.video, i.user, i.score)),
        );
        let generator = CandidateGenerator::new(world.videos.len());
        let index = (config.candidates.source == CandidateSource::Neighbours)
            .then(|| NeighbourIndex::build(&matrix, config.candidates.neighbours, crate::cores()));
        Env {
            config: config.clone(),
            world,
            matrix,
            generator,
            index,
            adds_since_refresh: 0,
            session: Session::new(0),
            obs: None,
            adds: Vec::new(),
        }
    }

    /// The neighbour lists in use (with `candidates.source = "neighbours"`).
    pub fn index(&self) -> Option<&NeighbourIndex> {
        self.index.as_ref()
    }

    /// What simulation has changed so far.
    pub fn state(&self) -> EnvState {
        EnvState {
            views: self.world.videos.iter().map(|v| v.views).collect(),
            clock: self.world.clock.clone(),
            next_session: self.world.next_session.clone(),
            adds: self.adds.clone(),
        }
    }

    /// Re-applies a saved state to an environment fresh from the same world.
    pub fn restore(&mut self, s: &EnvState) -> Result<(), String> {
        if s.views.len() != self.world.videos.len() || s.clock.len() != self.world.users.len() {
            return Err("the saved environment is of another world (sizes differ)".into());
        }
        for &(video, user, score) in &s.adds {
            if video as usize >= self.world.videos.len() || user as usize >= self.world.users.len() {
                return Err(format!("saved interaction ({video}, {user}) is outside the world"));
            }
            self.matrix.add(video, user, score);
            self.after_add();
        }
        for (v, &views) in self.world.videos.iter_mut().zip(&s.views) {
            v.views = views;
        }
        self.world.clock = s.clock.clone();
        self.world.next_session = s.next_session.clone();
        self.adds = s.adds.clone();
        Ok(())
    }

    pub fn n_slots(&self) -> usize {
        self.config.candidates.count
    }

    /// Starts a session of `user` and returns the first observation.
    pub fn reset(&mut self, user: u32) -> &Observation {
        self.session = self.start_session(user);
        self.observe();
        self.obs.as_ref().expect("observe sets it")
    }

    /// Picks a user uniformly and starts their session.
    pub fn reset_random(&mut self, rng: &mut SimRng) -> &Observation {
        let user = rng.random_range(0..self.world.users.len()) as u32;
        self.reset(user)
    }

    pub fn observation(&self) -> &Observation {
        self.obs.as_ref().expect("reset() before observation()")
    }

    pub fn user(&self) -> u32 {
        self.session.user
    }

    /// A new session of `user` (the user's session counter moves on), for
    /// [`Env::observe_session`] and [`Env::apply`].
    pub fn start_session(&mut self, user: u32) -> Session {
        self.world.next_session[user as usize] += 1;
        Session::new(user)
    }

    /// What the agent sees in `session` now: its candidates from the live matrix, made
    /// with the scratch space `g`. Reads the world only, so many sessions can be observed
    /// at once from several threads.
    pub fn observe_session(&self, session: &Session, g: &mut CandidateGenerator) -> Observation {
        let user = &self.world.users[session.user as usize];
        let candidates = g.candidates(&self.matrix, self.index.as_ref(), user, &self.world.videos, &self.config.candidates);
        let state = self.state_of(session, user, &candidates);
        Observation { user: user.clone(), candidates, state }
    }

    fn observe(&mut self) {
        // The scratch space is lent out for the call (an empty generator allocates nothing).
        let mut g = std::mem::replace(&mut self.generator, CandidateGenerator::new(0));
        self.obs = Some(self.observe_session(&self.session, &mut g));
        self.generator = g;
    }

    fn state_of(&self, session: &Session, user: &User, candidates: &[Candidate]) -> State {
        let c = &self.config;
        let r = c.candidates.count;
        let mut numeric = vec![0.0f32; State::n_numeric(r)];
        numeric[num::AGE] = (user.age - c.world.age_min) as f32 / (c.world.age_max - c.world.age_min) as f32;
        numeric[num::WATCHED] = session.watched as f32 / c.env.max_steps as f32;
        numeric[num::SESSION_LENGTH] = (session.session_len_s / (c.env.max_steps as f64 * c.world.video_duration_s)) as f32;
        let mut categorical = vec![0i64; State::n_categorical(r)];
        categorical[cat::GENDER] = user.gender as i64;
        categorical[cat::REGION] = user.region as i64;
        categorical[cat::INTEREST_1] = user.interests[0] as i64;
        categorical[cat::INTEREST_2] = user.interests[1] as i64;
        categorical[cat::LAST_CATEGORY] = session.last_category.map_or(0, |x| x as i64 + 1);
        categorical[cat::LAST_ACTION] = match session.last_response {
            None | Some(Action::SessionEnd) | Some(Action::Done) => 0,
            Some(Action::Watched) => 1,
            Some(Action::Skipped) => 2,
            Some(Action::Liked) => 3,
        };
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
        for (k, cand) in candidates.iter().enumerate().take(r) {
            let f = &mut numeric[num::SLOTS + num::PER_SLOT * k..num::SLOTS + num::PER_SLOT * (k + 1)];
            f[num::FINAL] = (cand.final_score * final_scale) as f32;
            f[num::RAW] = (cand.raw * raw_scale) as f32;
            f[num::VIEWS] = cand.views as f32 / 100.0;
            f[num::INTEREST] = if cand.interest_match { 1.0 } else { 0.0 };
            categorical[cat::CANDIDATES + k] = cand.category as i64 + 1;
            valid[k] = true;
        }
        State { numeric, categorical, valid }
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
        }
    }

    /// Shows the candidate in `slot`, draws the response from `rng`, pays the reward and
    /// updates the world, then prepares the next observation.
    ///
    /// An empty slot (there are fewer candidates than slots) falls back to slot 0.
    pub fn step(&mut self, slot: usize, rng: &mut SimRng) -> StepOutcome {
        let obs = self.obs.take().expect("reset() before step()");
        let mut session = std::mem::replace(&mut self.session, Session::new(0));
        let out = self.apply(&mut session, &obs, slot, rng);
        self.session = session;
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

        let vi = video as usize;
        let user = &self.world.users[session.user as usize];
        // Always three draws per step (p, response, skip time), so that two policies fed
        // the same stream see the same numbers at every step (common random numbers).
        let p = self.world.response.draw_p(user, &self.world.videos[vi], rng);
        let response = draw_session_response(p, rng);
        let skip_time = rng.random_range(c.env.skip_time_min_s..c.env.skip_time_max_s);
        let reward = match response {
            Action::Watched => c.env.reward_watched,
            Action::Liked => c.env.reward_liked,
            Action::Skipped => c.env.reward_skipped,
            Action::SessionEnd | Action::Done => c.env.reward_session_end,
        };
        let dt = match response {
            Action::Watched | Action::Liked => self.world.videos[vi].duration_s,
            _ => skip_time,
        };
        // Showing the video counts a view (docs/model.md: Episodes).
        self.world.videos[vi].views += 1;
        let score = response.score(&c.scores);
        self.matrix.add(video, session.user, score);
        self.adds.push((video, session.user, score));
        self.after_add();
        self.world.clock[session.user as usize] += dt;
        session.session_len_s += dt;
        if response.counts_view() {
            session.watched += 1;
        }
        session.last_category = Some(category);
        session.last_response = Some(response);
        session.t += 1;
        let terminal = response == Action::SessionEnd;
        let truncated = !terminal && session.t >= self.config.env.max_steps;
        StepOutcome { video, category, slot, response, reward, terminal, truncated }
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
        let views = env.world.videos[video as usize].views;
        let before = env.matrix.get(video, 3);
        assert_eq!(before, None);
        let mut rng = stream(1, Stream::Responses);
        let out = env.step(2, &mut rng);
        assert_eq!(out.video, video);
        assert_eq!(env.world.videos[video as usize].views, views + 1);
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
}
