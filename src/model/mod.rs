//! The model of the people on the platform: who they are ([`entities`]), how they respond
//! to a video and what it earns ([`response`], [`user`]), when they come back
//! ([`returns`]), and everything about them that moves during a simulation ([`state`]).

pub mod entities;
pub mod response;
pub mod returns;
pub mod state;
pub mod user;
