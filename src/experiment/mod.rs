//! The experiment around the simulation: a [`run`] and what it writes (after the
//! preflight, `drive::preflight`), [`checkpoint`]s, [`multiseed`] runs,
//! [`sweep`]s and the [`report`] that compares runs.

pub mod checkpoint;
pub mod fade;
pub mod multiseed;
pub mod report;
pub mod run;
pub mod sweep;
