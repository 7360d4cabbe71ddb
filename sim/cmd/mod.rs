//! One module per sub-command.

pub(crate) mod bench;
pub(crate) mod check;
pub(crate) mod eval;
pub(crate) mod inspect;
pub(crate) mod learn;
pub(crate) mod ope;
pub(crate) mod report;
pub(crate) mod run;
pub(crate) mod serve;
pub(crate) mod sweep;
