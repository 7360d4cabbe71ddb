//! The library's error type: every failure a user can cause names what is wrong.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[cfg(feature = "tables")]
    #[error("cannot {action} table {path}: {source}")]
    Table {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: polars::error::PolarsError,
    },
    #[error("cannot draw {path}: {message}")]
    Plot { path: PathBuf, message: String },
    #[cfg(feature = "torch")]
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    #[error("{0}")]
    Device(String),
    #[error("user {user} does not exist: the world has users 0..{n_users}")]
    UnknownUser { user: u64, n_users: usize },
    /// A learner's loss stopped being a finite number: nothing after it means anything.
    #[error(
        "training diverged: the TD loss became {loss} at update {update} (training episode {episode}); \
         a run whose loss is not finite has learnt nothing, so it stops here. Lower dqn.lr, or clip \
         gradients with dqn.grad_clip"
    )]
    Diverged { loss: f64, update: u64, episode: u32 },
    /// A checkpoint that is missing, damaged, or of another config.
    #[error("{0}")]
    Checkpoint(String),
    /// Another process holds the run folder's lock.
    #[error("another fypsim process is working in {dir} ({holder}); wait for it to finish, or use another folder")]
    Busy { dir: PathBuf, holder: String },
    /// The run was asked to stop (SIGINT or SIGTERM) and did, after a checkpoint.
    #[error("interrupted")]
    Interrupted,
    #[error("{0}")]
    Other(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { action, path, source }
    }
}

/// Everything that can be wrong with a config: each names the key, the value and what is
/// allowed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {reason}")]
    Read { path: String, reason: String },
    /// An error of the file at `path` (not a `source`, so the message shows once).
    #[error("{path}: {inner}")]
    InFile { path: String, inner: Box<ConfigError> },
    #[error("malformed config: {0}")]
    Parse(String),
    #[error("bad override `{assignment}`: {reason}")]
    Override { assignment: String, reason: String },
    #[error("invalid value for `{key}`: {value} (allowed: {allowed})")]
    Invalid { key: String, value: String, allowed: String },
    #[error(
        "this run would need about {estimate} of memory, more than this machine's {physical}: \
         reduce the sizes named (how the estimate is made: \"Sizes are checked\" in docs/run-folder.md)"
    )]
    TooLarge { estimate: String, physical: String },
}

impl ConfigError {
    pub(crate) fn in_file(self, path: &Path) -> ConfigError {
        match self {
            e @ ConfigError::Read { .. } => e,
            e => ConfigError::InFile { path: path.display().to_string(), inner: Box::new(e) },
        }
    }
}

/// The text of a panic's payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}
