//! fypsim: a reinforcement-learning recommendation simulator for short-video feeds.
//!
//! Data flows one way, and the modules are layered the same way: each imports only from
//! the layers listed before it (a test, `tests/layers.rs`, checks every path).
//!
//! - base: [`error`], [`rng`], [`stop`] (the signal flag), [`stats`] (confidence
//!   intervals), [`files`] (durable writes);
//! - [`config`]: a raw TOML config validated once, purely, into a [`config::Checked`] one;
//! - [`model`]: the entities (users, videos), the user model (response, reward, latent
//!   state, leaving, returning) and the simulation state that moves;
//! - [`world`]: the generated world and its logged history;
//! - [`platform`]: the interaction matrix, candidate generation and business rescoring;
//! - [`env`]: the environment, its observation layout and its step;
//! - [`agent`]: the [`agent::Policy`] seam, the DQN, its replay buffer, the baselines;
//! - [`drive`]: the session driver, training and evaluation loops, calendar (days and
//!   weeks) runs, the public reset/step API, and the preflight (memory and device checks);
//! - [`output`]: typed records to tables, and plots;
//! - `experiment`: a run, checkpoints, multi-seed runs, sweeps, reports;
//! - [`tools`]: `bench` and `inspect`;
//! - side systems on top: `learn` (sequence models on the logs), `serve` (policies
//!   behind HTTP as an A/B experiment) and `ope` (off-policy estimators measured against
//!   the simulator's truth).
//!
//! The core (base through `drive`, without the DQN) builds with `--no-default-features`:
//! no libtorch, no polars, no HTTP stack. The `torch` feature adds the DQN and the
//! sequence models, `tables` the tables and plots, `serve` the server; `output`,
//! `experiment`, `tools`, `learn` and `serve` need them.

pub mod error;
pub mod files;
pub mod rng;
pub mod stats;
pub mod stop;

pub mod config;

pub mod model;

pub mod world;

pub mod platform;

pub mod env;

pub mod agent;

pub mod drive;

#[cfg(feature = "tables")]
pub mod output;

#[cfg(all(feature = "tables", feature = "torch"))]
pub mod experiment;

#[cfg(all(feature = "tables", feature = "torch"))]
pub mod tools;

#[cfg(all(feature = "tables", feature = "torch"))]
pub mod learn;
#[cfg(all(feature = "tables", feature = "torch"))]
pub mod ope;
#[cfg(all(feature = "serve", feature = "tables", feature = "torch"))]
pub mod serve;

pub use error::{panic_message, Error, Result};

/// The cores this process may use (1 when the platform cannot tell): the default for every
/// "one per core" setting.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
