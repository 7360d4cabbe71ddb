//! Tools around a config: [`bench`] (speed and memory figures) and [`inspect`] (one
//! user's candidates and one session, step by step).

pub mod bench;
pub mod inspect;
