//! Every random draw in fypsim comes from a [`SimRng`] seeded from the run's seed and a
//! named stream, so that adding draws to one part of the simulator never shifts another
//! part's numbers, and the same seed always gives the same run.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The generator used everywhere: ChaCha8, portable and reproducible across platforms.
pub type SimRng = ChaCha8Rng;

/// The independent random streams of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum Stream {
    /// Users and videos.
    World = 1,
    /// The logged history.
    History = 2,
    /// Which user starts each training episode.
    EpisodeUsers = 3,
    /// The users' responses during training.
    Responses = 4,
    /// The policy's own draws (exploration, random baseline).
    Policy = 5,
    /// Replay-buffer sampling.
    Replay = 6,
    /// Evaluation episodes: users and responses shared by every evaluated policy.
    Eval = 7,
    /// The seed handed to libtorch for weight initialisation.
    Torch = 8,
    /// Hidden video quality and varied durations (users with memory).
    VideoTraits = 9,
    /// The calendar: users' peak hours and when they return (population runs).
    Calendar = 10,
    /// The users' responses in population runs, one sub-stream per user and session.
    CalendarResponses = 11,
    /// The policy's draws in population runs, one sub-stream per user and session.
    CalendarPolicy = 12,
    /// The users who sign up and the videos uploaded during a calendar.
    Arrivals = 13,
    /// `fypsim learn`: the user split, batch order and the bootstrap.
    Learn = 14,
    /// `fypsim serve`: a served policy's own draws (a random arm).
    Serve = 15,
    /// `fypsim traffic` and the in-process A/B simulation: which users come, and their
    /// responses (one sub-stream per user).
    Traffic = 16,
    /// The contextual bandits' own draws (Thompson sampling's posterior draws,
    /// epsilon-greedy's random choices).
    Bandit = 17,
    /// Thompson sampling's Monte Carlo propensity estimates (never a choice).
    BanditPropensity = 18,
    /// Off-policy evaluation: the logging policy's draws, one sub-stream per session.
    OpeLogging = 19,
    /// Off-policy evaluation: the target's draws in its on-policy truth runs, one
    /// sub-stream per session.
    OpeTarget = 20,
    /// Off-policy evaluation: the cross-fitting folds and the bootstrap.
    OpeEstimate = 21,
    /// `fypsim serve`: a learning arm's own draws while it learns (replay sampling), one
    /// sub-stream per arm.
    ServeLearn = 22,
}

/// A generator for `stream` of the run seeded with `seed`.
pub fn stream(seed: u64, stream: Stream) -> SimRng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream as u64);
    rng
}

/// A generator for a sub-stream of `stream`, e.g. one per evaluation episode.
pub fn substream(seed: u64, stream: Stream, index: u64) -> SimRng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    rng.set_stream(stream as u64);
    rng
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let a: Vec<u64> = (0..4).map(|_| 0).scan(stream(7, Stream::World), |r, _: u64| Some(r.random())).collect();
        let b: Vec<u64> = (0..4).map(|_| 0).scan(stream(7, Stream::World), |r, _: u64| Some(r.random())).collect();
        let c: Vec<u64> = (0..4).map(|_| 0).scan(stream(7, Stream::History), |r, _: u64| Some(r.random())).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        let s0: u64 = substream(7, Stream::Eval, 0).random();
        let s1: u64 = substream(7, Stream::Eval, 1).random();
        assert_ne!(s0, s1);
    }
}
