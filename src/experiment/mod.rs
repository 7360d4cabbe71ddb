//! The experiment around the simulation: a [`run`] and what it writes, its [`preflight`]
//! (the checks that depend on this machine), [`checkpoint`]s, [`multiseed`] runs,
//! [`sweep`]s and the [`report`] that compares runs.

pub mod checkpoint;
pub mod multiseed;
pub mod preflight;
pub mod report;
pub mod run;
pub mod sweep;
