//! The loops that drive sessions, all built from the one [`session`] driver:
//! single-session [`train`]ing and evaluation, and [`calendar`] runs (days and weeks of a
//! whole population).

pub mod api;
pub mod calendar;
pub mod preflight;
pub mod session;
pub mod train;
