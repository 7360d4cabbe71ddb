//! The process-wide stop flag: SIGINT and SIGTERM set it, and every long loop (training,
//! calendar runs, sweeps, sequence models) checks it at its next safe boundary.

use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

/// Asks every run of this process to stop at its next episode boundary, after a
/// checkpoint (the CLI calls this on SIGINT and SIGTERM).
pub fn request_stop() {
    STOP.store(true, Ordering::SeqCst);
}

/// Whether [`request_stop`] was called.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}
