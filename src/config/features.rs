//! The observation's per-candidate features, declared once: the base ones every state
//! has, then the logged ones a config may add. The state builder and the network's input
//! layout (`env::Layout`), the allowed `dqn.candidate_features` and their order in the
//! state all derive from these lists.

/// The user's numbers at the head of every state (`env::num` gives their offsets): age,
/// videos watched this session, session length.
pub const USER: [&str; 3] = ["age", "watched", "session_length"];

/// The largest feature dimension a bandit may have (its model is d x d, updated every step).
pub const BANDIT_MAX_DIM: usize = 64;

/// The bandits' feature dimension (docs/model.md: Contextual bandits): a constant 1, the
/// user's numbers, the slot's numbers (`per_slot` of them), the candidate's category
/// one-hot, the same one-hot where the category is one of the user's interests (interest x
/// category), the region x category one-hot, and 1 where the category is the last shown
/// one.
pub const fn bandit_dimension(per_slot: usize, categories: usize, regions: usize) -> usize {
    1 + USER.len() + per_slot + 2 * categories + regions * categories + 1
}

/// The numbers every candidate slot has, in state order (`env::num` gives their
/// offsets): the final score and the raw similarity score (each divided by the largest
/// magnitude among the candidates), views / 100, and the interest match (0 or 1). Those
/// not named in `dqn.candidate_features` read as 0.
pub const BASE: [&str; 4] = ["final", "raw", "views", "interest"];

/// A per-candidate number that a platform computes from its own logs, which a state
/// carries only when `dqn.candidate_features` names it (so that a layout without them is
/// the base layout, number for number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logged {
    /// The share of the video's logged showings that were watched (its click-through rate,
    /// smoothed toward 1/2 by two pseudo-showings).
    WatchRate,
    /// The video's mean watch fraction over its logged views (smoothed toward 1/2 by two
    /// pseudo-views).
    Completion,
    /// The share of the video's logged showings after which the session ended (smoothed
    /// toward 1/10 by two pseudo-showings).
    ExitRate,
    /// How often this session has shown the candidate's category lately: a count that
    /// decays by `env::EXPOSURE_DECAY` per step.
    Exposure,
    /// The video's duration in minutes (public: every platform knows it).
    Duration,
    /// The video's views on a log scale, ln(1 + views) / 10 (about 1 at 22,000 views,
    /// 1.4 at a million): unlike `views` (views / 100, the prototype's input) it stays of
    /// order 1 at any world size and under power-law popularity.
    LogViews,
    /// The user's logged taste for the candidate's category: the summed matrix scores of
    /// the user's interactions with that category (watched 1, liked 2, skipped -2 by
    /// default) over twice the number of videos plus one, in about [-1, 1]. A platform logs it;
    /// it follows the drift of the user's interests, which the profile does not.
    Affinity,
    /// 1 when the user follows the candidate's creator (a logged action), else 0.
    Followed,
    /// The video's mean watch fraction over its logged views, unsmoothed (1/2 before its
    /// first logged view): with [`Logged::LoggedViews`], how sure it is.
    MeanCompletion,
    /// The number of the video's logged views on a log scale, ln(1 + views) / 3 (about 1
    /// at 19 views): how much [`Logged::MeanCompletion`] rests on.
    LoggedViews,
}

impl Logged {
    pub const fn name(self) -> &'static str {
        match self {
            Logged::WatchRate => "watch_rate",
            Logged::Completion => "completion",
            Logged::ExitRate => "exit_rate",
            Logged::Exposure => "exposure",
            Logged::Duration => "duration",
            Logged::LogViews => "log_views",
            Logged::Affinity => "affinity",
            Logged::Followed => "followed",
            Logged::MeanCompletion => "mean_completion",
            Logged::LoggedViews => "logged_views",
        }
    }
    pub const ALL: [Logged; 10] = [
        Logged::WatchRate,
        Logged::Completion,
        Logged::ExitRate,
        Logged::Exposure,
        Logged::Duration,
        Logged::LogViews,
        Logged::Affinity,
        Logged::Followed,
        Logged::MeanCompletion,
        Logged::LoggedViews,
    ];
}

/// Every name `dqn.candidate_features` accepts, in state order: [`BASE`], then
/// [`Logged::ALL`].
pub const CANDIDATE_FEATURES: [&str; BASE.len() + Logged::ALL.len()] = {
    let mut names = [""; BASE.len() + Logged::ALL.len()];
    let mut i = 0;
    while i < BASE.len() {
        names[i] = BASE[i];
        i += 1;
    }
    while i < names.len() {
        names[i] = Logged::ALL[i - BASE.len()].name();
        i += 1;
    }
    names
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_names_are_distinct_and_in_state_order() {
        assert_eq!(&CANDIDATE_FEATURES[..4], &BASE);
        assert_eq!(CANDIDATE_FEATURES[4], "watch_rate");
        assert_eq!(CANDIDATE_FEATURES[13], "logged_views");
        for (i, a) in CANDIDATE_FEATURES.iter().enumerate() {
            assert!(!CANDIDATE_FEATURES[..i].contains(a), "{a} twice");
        }
    }
}
