//! fypsim: a reinforcement-learning recommendation simulator for short-video feeds.
//!
//! Data flows one way: a validated [`config::Checked`] config generates a
//! [`world::World`] (users, videos, logged history); the history fills the sparse
//! [`matrix::InteractionMatrix`]; [`candidates`] turns it into each user's candidates with
//! business rescoring; a [`agent::Policy`] (the DQN or a baseline) picks what to show in
//! the [`env::Env`]; the response model answers, and the matrix is updated online.
//! [`run::run`] writes everything a run produces.

pub mod abtest;
pub mod agent;
pub mod bench;
pub mod candidates;
pub mod checkpoint;
pub mod config;
pub mod env;
mod error;
pub mod inspect;
pub mod learn;
pub mod matrix;
pub mod multiseed;
pub mod plot;
pub mod population;
pub mod records;
pub mod report;
pub mod rng;
pub mod run;
pub mod serve;
pub mod state;
pub mod sweep;
pub mod train;
pub mod user;
pub mod world;

pub use error::{Error, Result};

/// The cores this process may use (1 when the platform cannot tell): the default for every
/// "one per core" setting.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
