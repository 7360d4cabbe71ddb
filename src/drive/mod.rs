//! The loops that drive sessions, all built from the one [`session`] driver:
//! single-session [`train`]ing and evaluation, and [`calendar`] runs (days and weeks of a
//! whole population); the public reset/step [`api`] and the [`steplog`] columns both
//! `steps.parquet` and the API's step log use.

pub mod api;
pub mod calendar;
pub mod preflight;
pub mod session;
pub mod steplog;
pub mod train;
