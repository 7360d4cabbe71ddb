//! What the platform does with the logs: the sparse item-user [`matrix`], and
//! [`candidates`] from item-item cosine similarity, rescored by business weights.

pub mod candidates;
pub mod matrix;
