//! The mutable simulation state (docs/model.md: World and state): everything simulation
//! changes, apart from the immutable [`crate::world::World`] it runs on. A run's state at
//! any moment, its session in flight included, is one serialisable value; the
//! interaction matrix and the neighbour lists are caches rebuilt from the world's history
//! and [`SimState::adds`].

use serde::{Deserialize, Serialize};

use super::response::Action;
use super::user::Latent;

/// What the platform has logged of one video (kept when the dynamics are on).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct VideoLog {
    pub shows: u32,
    pub watched: u32,
    pub watch_fraction_sum: f64,
    pub exits: u32,
}

impl VideoLog {
    pub fn record(&mut self, watched: bool, fraction: f64, exit: bool) {
        self.shows += 1;
        if watched {
            self.watched += 1;
            self.watch_fraction_sum += fraction;
        }
        if exit {
            self.exits += 1;
        }
    }
    pub fn watch_rate(&self) -> f64 {
        (self.watched as f64 + 1.0) / (self.shows as f64 + 2.0)
    }
    pub fn completion(&self) -> f64 {
        (self.watch_fraction_sum + 1.0) / (self.watched as f64 + 2.0)
    }
    /// The mean watch fraction over the logged views, 1/2 before the first.
    pub fn mean_completion(&self) -> f64 {
        if self.watched == 0 {
            0.5
        } else {
            self.watch_fraction_sum / self.watched as f64
        }
    }
    /// The logged views on a log scale, ln(1 + views) / 3 (about 1 at 19 views).
    pub fn logged_views(&self) -> f64 {
        (self.watched as f64).ln_1p() / 3.0
    }
    pub fn exit_rate(&self) -> f64 {
        (self.exits as f64 + 0.2) / (self.shows as f64 + 2.0)
    }
}

/// The simulation state over one world: per video its view count and log, per user the
/// clock, the next session id and the latent state, every interaction added to the
/// matrix since the logged history, and the session in flight. The world's
/// [`crate::world::World::start`] is the state its logged history leaves; an environment
/// starts from a copy of it.
///
/// Serialised, `latent` and `logs` are left out when empty (every dynamic off: the
/// environment's [`crate::env::Env::state`] empties `latent`, which then holds nothing but
/// defaults) and `session` when no session is in flight, so states saved before these
/// fields existed still load.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SimState {
    pub views: Vec<u64>,
    pub clock: Vec<f64>,
    pub next_session: Vec<u32>,
    /// Every (video, user, score) added to the matrix, in order: replaying them onto the
    /// history's matrix reproduces it bit for bit (norms included).
    pub adds: Vec<(u32, u32, f64)>,
    /// Each user's latent state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub latent: Vec<Latent>,
    /// What the platform has logged per video (empty when every dynamic is off).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<VideoLog>,
    /// The session in flight, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<Session>,
    /// How many of the world's sign-ups and uploads ([`crate::world::Arrivals`]) have
    /// arrived: the matrix holds the initial users and videos and these.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub signed_up: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub uploaded: u32,
    /// The first upload still fresh (candidate slots kept for fresh videos offer uploads
    /// `fresh_from..uploaded`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub fresh_from: u32,
}

fn is_zero(x: &u32) -> bool {
    *x == 0
}

impl SimState {
    /// Checks that a saved state fits a world of `n_users` users and `n_videos` videos
    /// (`latent` and `logs` may be empty: see the type's docs).
    pub fn check_fits(&self, n_users: usize, n_videos: usize) -> Result<(), String> {
        if self.views.len() != n_videos || self.clock.len() != n_users || self.next_session.len() != n_users {
            return Err(format!(
                "the saved state is of another world: {} videos and {} users, where this world has {n_videos} and {n_users}",
                self.views.len(),
                self.clock.len()
            ));
        }
        if let Some(&(video, user, _)) = self.adds.iter().find(|&&(v, u, _)| v as usize >= n_videos || u as usize >= n_users) {
            return Err(format!("saved interaction ({video}, {user}) is outside the world"));
        }
        if !self.latent.is_empty() && self.latent.len() != n_users {
            return Err("the saved latent states are of another world (sizes differ)".into());
        }
        if !self.logs.is_empty() && self.logs.len() != n_videos {
            return Err("the saved video logs are of another world (sizes differ)".into());
        }
        if self.signed_up as usize > n_users || self.uploaded as usize > n_videos || self.fresh_from > self.uploaded {
            return Err("the saved sign-ups and uploads are of another world".into());
        }
        if let Some(s) = &self.session {
            if s.user as usize >= n_users {
                return Err(format!("the saved session's user {} is outside the world", s.user));
            }
        }
        Ok(())
    }
}

/// One user's session in progress: what the state needs besides the world. The
/// environment runs one through `reset`/`step` (it is part of its [`SimState`]); lockstep
/// training runs many over one shared world through `start_session`/`observe_session`/`apply`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub user: u32,
    /// Steps taken so far.
    pub t: usize,
    pub(crate) watched: usize,
    pub(crate) session_len_s: f64,
    pub(crate) last_category: Option<u16>,
    pub(crate) last_response: Option<Action>,
    /// Per category, the decayed count of recent showings (with the exposure feature).
    pub(crate) exposure: Vec<f32>,
    /// With the GRU session encoder: the session's steps so far (category, response:
    /// 1 watched, 2 skipped, 3 liked, 0 other; watch seconds).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) recent: Vec<(u16, u8, f32)>,
}

impl Session {
    pub(crate) fn new(user: u32) -> Session {
        Session {
            user,
            t: 0,
            watched: 0,
            session_len_s: 0.0,
            last_category: None,
            last_response: None,
            exposure: Vec::new(),
            recent: Vec::new(),
        }
    }
}
