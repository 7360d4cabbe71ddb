//! The decision log (docs/serving.md: The decision log): a folder with `experiment.json`
//! (the arms, their shares and versions, the salt, the world) and `log.jsonl`, one JSON
//! record per line: every decision, and every outcome joined to it by request id.
//!
//! The service writes a decision's record before its answer leaves (a decision that
//! cannot be logged is not answered), and a syncer thread syncs the file to disk at least
//! every [`FLUSH_EVERY`]; a closed log is synced. A line cut short by a kill is skipped when the log is read
//! (and counted), and a restarted server goes on after it on a new line.

use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Reported;
use crate::config::Checked;
use crate::{Error, Result};

pub const EXPERIMENT: &str = "experiment.json";
pub const LOG: &str = "log.jsonl";
/// The longest a written record waits before the file is synced to disk.
pub const FLUSH_EVERY: Duration = Duration::from_millis(200);

/// An arm as the log records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArmMeta {
    pub name: String,
    pub policy: String,
    pub version: String,
    pub share: f64,
}

/// The reward weights the service pays outcomes with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RewardMeta {
    pub watched: f64,
    pub liked: f64,
    pub skipped: f64,
    pub left: f64,
    /// Per second watched, per share, per follow (0 unless `dynamics.behaviour` is on).
    pub watch_s: f64,
    pub share: f64,
    pub follow: f64,
}

impl RewardMeta {
    pub fn of(config: &Checked) -> RewardMeta {
        let (e, b) = (&config.env, &config.dynamics.behaviour);
        let on = |x: f64| if b.enabled { x } else { 0.0 };
        RewardMeta {
            watched: e.reward_watched,
            liked: e.reward_liked,
            skipped: e.reward_skipped,
            left: e.reward_session_end,
            watch_s: on(b.reward_watch_s),
            share: on(b.reward_share),
            follow: on(b.reward_follow),
        }
    }
}

/// `experiment.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Experiment {
    pub fypsim: String,
    pub salt: String,
    pub arms: Vec<ArmMeta>,
    /// The SHA-256 of the world's resolved config.
    pub world: String,
    pub reward: RewardMeta,
    pub max_steps: usize,
    pub session_timeout_s: u64,
}

/// A recommendation as logged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub request_id: String,
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    pub user: u32,
    pub session: u32,
    pub step: usize,
    pub arm: String,
    pub assignment_p: f64,
    pub policy: String,
    pub version: String,
    pub candidates: Vec<u32>,
    pub video: u32,
    pub slot: usize,
    pub propensity: f64,
}

/// A reported response, as logged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub request_id: String,
    pub time_ms: u64,
    pub user: u32,
    pub session: u32,
    pub arm: String,
    pub video: u32,
    pub response: Reported,
    pub left: bool,
    pub watch_time_s: f64,
    pub shared: bool,
    pub followed: bool,
    pub reward: f64,
}

/// One line of `log.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    Decision(Decision),
    Outcome(Outcome),
    /// A server began serving on the log: what it kept of the sessions before it (none)
    /// is what a replay of the log must repeat.
    Start(Start),
    /// A learning arm stopped learning (it serves its last good parameters on).
    LearningStopped(LearningStopped),
    /// A learning arm serves, from here on, the parameters its learner learnt from its
    /// first `transitions` transitions (docs/serving.md: Arms that learn).
    Swap(Swap),
}

/// A learning arm's swap to newly learnt parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Swap {
    pub time_ms: u64,
    pub arm: String,
    /// The arm's transitions (in log order) the parameters were learnt from.
    pub transitions: u64,
}

/// A learning arm's stop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LearningStopped {
    pub time_ms: u64,
    pub arm: String,
    /// Transitions it had learnt from.
    pub transitions: u64,
    pub why: String,
}

/// A server's start on the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Start {
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The prefix of the request ids it issues.
    pub run: String,
}

/// A log as read back.
#[derive(Debug, Clone)]
pub struct Contents {
    pub experiment: Experiment,
    pub records: Vec<Record>,
    /// Lines that are not records (a line cut short by a kill, say): skipped.
    pub damaged: usize,
}

fn read_experiment(dir: &Path) -> Result<Experiment> {
    let path = dir.join(EXPERIMENT);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::Other(format!(
                "{} is not a decision log: it has no {EXPERIMENT} (fypsim serve --log DIR writes one)",
                dir.display()
            ))
        } else {
            Error::Io { action: "read", path: path.clone(), source: e }
        }
    })?;
    serde_json::from_str(&text).map_err(|e| Error::Other(format!("{} is damaged: {e}", path.display())))
}

/// Reads a decision log, skipping (and counting) lines that are not records.
pub fn read(dir: &Path) -> Result<Contents> {
    let experiment = read_experiment(dir)?;
    let path = dir.join(LOG);
    let (mut records, mut damaged) = (Vec::new(), 0);
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Contents { experiment, records, damaged }),
        Err(e) => return Err(Error::Io { action: "read", path, source: e }),
    };
    if !file.metadata().map_err(Error::io("read", &path))?.is_file() {
        return Err(Error::Other(format!("{} is not a regular file", path.display())));
    }
    let mut reader = std::io::BufReader::with_capacity(1 << 16, file);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = std::io::BufRead::read_until(&mut reader, b'\n', &mut line).map_err(Error::io("read", &path))?;
        if n == 0 {
            break;
        }
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        match serde_json::from_slice::<Record>(&line) {
            Ok(r) => records.push(r),
            Err(_) => damaged += 1,
        }
    }
    Ok(Contents { experiment, records, damaged })
}

/// Opens `dir` for an experiment: creates it with `experiment.json`, or checks that the
/// log there is of the same experiment (same salt, arms, shares and world) and returns
/// its records for the service to replay.
pub fn open_dir(dir: &Path, meta: &Experiment) -> Result<Vec<Record>> {
    std::fs::create_dir_all(dir).map_err(Error::io("create", dir))?;
    let path = dir.join(EXPERIMENT);
    if !path.exists() {
        let json = serde_json::to_string_pretty(meta).expect("an experiment serialises");
        crate::files::write_file(&path, json.as_bytes())?;
        return Ok(Vec::new());
    }
    let earlier = read_experiment(dir)?;
    let mut diffs = Vec::new();
    if earlier.salt != meta.salt {
        diffs.push(format!("salt `{}` (now `{}`)", earlier.salt, meta.salt));
    }
    if earlier.arms != meta.arms {
        let show =
            |a: &[ArmMeta]| a.iter().map(|a| format!("{}={} {:.3}", a.name, a.version, a.share)).collect::<Vec<_>>().join(", ");
        diffs.push(format!("arms {} (now {})", show(&earlier.arms), show(&meta.arms)));
    }
    if earlier.world != meta.world || earlier.reward != meta.reward {
        diffs.push("another world or reward".to_string());
    }
    if !diffs.is_empty() {
        return Err(Error::Other(format!(
            "{} holds the log of another experiment: {}; give a new --log folder",
            dir.display(),
            diffs.join("; ")
        )));
    }
    let contents = read(dir)?;
    // A kill may have cut the last line short: later records start on a line of their own.
    let log = dir.join(LOG);
    if let Ok(mut f) = std::fs::OpenOptions::new().read(true).append(true).open(&log) {
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        if len > 0 {
            let mut last = [0u8; 1];
            let torn = f.seek(std::io::SeekFrom::Start(len - 1)).is_ok() && f.read_exact(&mut last).is_ok() && last[0] != b'\n';
            if torn {
                f.write_all(b"\n").map_err(Error::io("append to", &log))?;
            }
        }
    }
    Ok(contents.records)
}

/// The writer of `log.jsonl` (see the module docs). Records are written by the caller's
/// thread ([`Sink::write`]): when it returns Ok, the operating system holds them (a
/// process killed outright loses none). A syncer thread syncs the file to disk at least
/// every [`FLUSH_EVERY`] while there is something new.
pub struct Sink {
    file: std::fs::File,
    /// Bytes of whole records in the file: a failed write is cut back to it.
    len: u64,
    /// A failed write could not be cut back: the next record starts on a new line.
    torn: bool,
    /// Why the last write failed (cleared by the next one that succeeds).
    failed: Option<String>,
    path: PathBuf,
    dirty: Arc<AtomicBool>,
    sync_failed: Arc<Mutex<Option<String>>>,
    syncer: Option<(mpsc::Sender<()>, std::thread::JoinHandle<()>)>,
}

impl Sink {
    pub fn open(dir: &Path) -> Result<Sink> {
        let path = dir.join(LOG);
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(Error::io("open", &path))?;
        let len = file.metadata().map_err(Error::io("read", &path))?.len();
        let dirty = Arc::new(AtomicBool::new(false));
        let sync_failed = Arc::new(Mutex::new(None));
        let (stop, stopped) = mpsc::channel::<()>();
        let syncer = {
            let file = file.try_clone().map_err(Error::io("open", &path))?;
            let (dirty, failed, p) = (Arc::clone(&dirty), Arc::clone(&sync_failed), path.clone());
            std::thread::Builder::new()
                .name("decision-log-sync".into())
                .spawn(move || {
                    while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(FLUSH_EVERY) {
                        if dirty.swap(false, Ordering::AcqRel) {
                            let r = file.sync_data().err().map(|e| format!("cannot sync {} to disk: {e}", p.display()));
                            if r.is_some() {
                                dirty.store(true, Ordering::Release);
                            }
                            *failed.lock().unwrap_or_else(|p| p.into_inner()) = r;
                        }
                    }
                })
                .map_err(|e| Error::Other(format!("cannot start the decision log's syncer: {e}")))?
        };
        Ok(Sink { file, len, torn: false, failed: None, path, dirty, sync_failed, syncer: Some((stop, syncer)) })
    }

    /// Appends `records`, whole or not at all: on a failure (a full disk, say) the file is
    /// cut back to its last whole record and the error says why; a later write that
    /// succeeds (once there is room) goes on from there.
    pub fn write(&mut self, records: &[Record]) -> std::result::Result<(), String> {
        if records.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(256 * records.len());
        if self.torn {
            buf.push(b'\n');
        }
        for r in records {
            serde_json::to_writer(&mut buf, r).expect("a record serialises");
            buf.push(b'\n');
        }
        match self.file.write_all(&buf) {
            Ok(()) => {
                self.len += buf.len() as u64;
                self.torn = false;
                self.failed = None;
                self.dirty.store(true, Ordering::Release);
                Ok(())
            }
            Err(e) => {
                // Cut a partly written record off (an append-mode file writes at its end,
                // so the next write follows the last whole record).
                let cut = self.file.set_len(self.len).is_ok() && self.file.metadata().is_ok_and(|m| m.len() == self.len);
                self.torn = !cut;
                let why = format!("cannot write {}: {e}", self.path.display());
                self.failed = Some(why.clone());
                Err(why)
            }
        }
    }

    /// Why the log cannot be trusted now: the last write failed, or the last sync did.
    pub fn failure(&self) -> Option<String> {
        self.failed.clone().or_else(|| self.sync_failed.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }

    /// Stops the syncer and syncs the file to disk.
    pub fn close(mut self) -> Result<()> {
        self.stop_syncer();
        self.file.sync_data().map_err(Error::io("sync to disk", &self.path))
    }

    fn stop_syncer(&mut self) {
        if let Some((stop, thread)) = self.syncer.take() {
            drop(stop);
            let _ = thread.join();
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop_syncer();
        let _ = self.file.sync_data();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn experiment(salt: &str) -> Experiment {
        Experiment {
            fypsim: "0".into(),
            salt: salt.into(),
            arms: vec![ArmMeta { name: "A".into(), policy: "greedy".into(), version: "v".into(), share: 1.0 }],
            world: "w".into(),
            reward: RewardMeta { watched: 1.0, liked: 2.0, skipped: -2.0, left: -0.5, watch_s: 0.0, share: 0.0, follow: 0.0 },
            max_steps: 10,
            session_timeout_s: 1800,
        }
    }

    fn decision(k: u32) -> Record {
        Record::Decision(Decision {
            request_id: format!("x-{k}"),
            time_ms: k as u64,
            user: k,
            session: 0,
            step: 0,
            arm: "A".into(),
            assignment_p: 1.0,
            policy: "greedy".into(),
            version: "v".into(),
            candidates: vec![k, k + 1],
            video: k,
            slot: 0,
            propensity: 1.0,
        })
    }

    /// Records written and closed read back equal; a line cut short (a kill in the middle
    /// of a write) is skipped and counted, and a reopened log goes on after it on a line
    /// of its own; another experiment's log is refused.
    #[test]
    fn a_log_survives_a_torn_last_line_and_refuses_another_experiment() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("log");
        assert!(open_dir(&d, &experiment("s")).unwrap().is_empty());
        let mut sink = Sink::open(&d).unwrap();
        for k in 0..100 {
            sink.write(&[decision(k)]).unwrap();
        }
        sink.close().unwrap();
        let back = read(&d).unwrap();
        assert_eq!(back.records, (0..100).map(decision).collect::<Vec<_>>());
        assert_eq!(back.damaged, 0);
        // A torn line at the end.
        let mut f = std::fs::OpenOptions::new().append(true).open(d.join(LOG)).unwrap();
        f.write_all(br#"{"kind":"decision","request_id":"x-1"#).unwrap();
        drop(f);
        let back = read(&d).unwrap();
        assert_eq!((back.records.len(), back.damaged), (100, 1));
        // Reopening: the earlier records come back, and new ones start on a new line.
        assert_eq!(open_dir(&d, &experiment("s")).unwrap().len(), 100);
        let mut sink = Sink::open(&d).unwrap();
        sink.write(&[decision(100)]).unwrap();
        drop(sink);
        let back = read(&d).unwrap();
        assert_eq!((back.records.len(), back.damaged), (101, 1));
        assert_eq!(back.records[100], decision(100));
        let e = open_dir(&d, &experiment("other")).unwrap_err().to_string();
        assert!(e.contains("another experiment") && e.contains("salt"), "{e}");
        let e = read(dir.path()).unwrap_err().to_string();
        assert!(e.contains("not a decision log"), "{e}");
    }

    /// A full disk is reported by the write itself (the service then answers 503 rather
    /// than serve an unlogged decision).
    #[cfg(target_os = "linux")]
    #[test]
    fn a_full_disk_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        open_dir(dir.path(), &experiment("s")).unwrap();
        std::os::unix::fs::symlink("/dev/full", dir.path().join(LOG)).unwrap();
        let mut sink = Sink::open(dir.path()).unwrap();
        assert_eq!(sink.failure(), None);
        let e = sink.write(&[decision(1)]).unwrap_err();
        assert!(e.contains("log.jsonl") && e.contains("No space left"), "{e}");
        assert_eq!(sink.failure(), Some(e));
    }

    /// A written record is in the file when `write` returns (a process killed outright
    /// loses nothing answered), before any close.
    #[test]
    fn records_are_in_the_file_when_write_returns() {
        let dir = tempfile::tempdir().unwrap();
        open_dir(dir.path(), &experiment("s")).unwrap();
        let mut sink = Sink::open(dir.path()).unwrap();
        sink.write(&[decision(1), decision(2)]).unwrap();
        assert_eq!(read(dir.path()).unwrap().records, vec![decision(1), decision(2)]);
        // The syncer syncs what is new within its interval (the flag is cleared).
        let t = std::time::Instant::now();
        while sink.dirty.load(Ordering::Acquire) {
            assert!(t.elapsed() < Duration::from_secs(10), "not synced after 10 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(sink.failure(), None);
        std::mem::forget(sink);
    }
}
