//! The entities of the world: users, videos, what a user did with a video, and the
//! interactions that record it.

use serde::Serialize;

use crate::config::ScoreConfig;

/// A user of the app. Categorical fields are indices into the config's name lists.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct User {
    pub id: u32,
    pub age: u32,
    pub gender: u16,
    pub region: u16,
    /// Two interest categories (distinct unless `world.distinct_interests` is false).
    pub interests: [u16; 2],
}

impl User {
    pub fn is_interested_in(&self, category: u16) -> bool {
        self.interests.contains(&category)
    }
}

/// A video of the catalogue.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Video {
    pub id: u32,
    pub category: u16,
    pub creator: u32,
    pub duration_s: f64,
    pub views: u64,
    /// Hidden quality (docs/model.md: Users with memory); 0 unless `dynamics.quality.sd` > 0.
    pub quality: f64,
}

/// One logged or simulated interaction.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Interaction {
    pub user: u32,
    pub video: u32,
    pub session: u32,
    pub action: Action,
    pub score: f64,
    /// Seconds since the user's first session began.
    pub timestamp: f64,
}

/// What a user did with a shown video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Watched,
    Skipped,
    Liked,
    /// A logged-history interaction that ended its session.
    Done,
    /// The user left during a simulated episode.
    SessionEnd,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Watched => "watched",
            Action::Skipped => "skipped",
            Action::Liked => "liked",
            Action::Done => "done",
            Action::SessionEnd => "session_end",
        }
    }

    /// The score this interaction adds to the item-user matrix (docs/model.md: Item-user matrix).
    pub fn score(self, s: &ScoreConfig) -> f64 {
        match self {
            Action::Watched => s.watched,
            Action::Liked => s.liked,
            Action::Skipped => s.skipped,
            Action::Done | Action::SessionEnd => s.other,
        }
    }

    /// Whether the video's view count goes up.
    pub fn counts_view(self) -> bool {
        matches!(self, Action::Watched | Action::Liked)
    }
}
