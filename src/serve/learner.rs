//! Learning apart from serving (docs/serving.md: Arms that learn).
//!
//! A learning arm whose policy acts by parameters (a DQN) is two copies of that policy.
//! One serves on the engine thread; the other, the learner ([`Core`]), learns on a thread
//! of its own from the arm's transitions, in log order, as the engine hands them over once
//! their records are logged. After an update the learner offers its parameters; the
//! engine takes them between two batches, logs a `swap` record saying how many of the
//! arm's transitions they were learnt from, and only then serves by them. A replay of the
//! log on a restart learns the same transitions inline and swaps at the same records, so
//! what served each decision follows from the log alone, however the learner's thread was
//! scheduled.
//!
//! The learner checkpoints its whole state (the policy with its optimiser, replay buffer
//! and draws, its place in the arm's transitions, the parameters of the swaps it knows of)
//! into `<log>/learning/<arm>/checkpoint/` every so often and when the server stops. A
//! restart loads the checkpoint, checks it against the log (the transitions the log gives
//! up to it must hash to what it recorded) and learns only the transitions after it; a
//! checkpoint that does not belong to the log is not used (the arm learns from the whole
//! log, and its learner replaces it at once). A checkpoint that cannot be written (a full
//! disk) leaves the previous one whole; the arm learns and serves on, and `/health` says
//! what failed until a checkpoint succeeds.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::agent::{Policy, Transition};
use crate::config::Checked;
use crate::env::State;
use crate::experiment::checkpoint;
use crate::rng::SimRng;
use crate::{Error, Result};

/// The folder of the learning arms' checkpoints in a log folder.
pub const DIR: &str = "learning";
const STATE: &str = "learner.json";

/// The most transitions (and other messages) that may wait for the learner: beyond, the
/// engine waits for it (memory stays bounded on a machine too busy for the learner to
/// keep up; answers then slow down instead).
pub const MAX_BEHIND: usize = 20_000;

/// How long a digest may wait for the learner to take what is queued.
const WAIT: Duration = Duration::from_secs(600);

/// The least time between two offers of new parameters: each swap is a log record and a
/// copy of the parameters on the engine thread, and serving parameters a tenth of a
/// second older costs nothing a user notices.
const OFFER_EVERY: Duration = Duration::from_millis(100);

/// Offers not yet known to be logged that the learner keeps (and checkpoints).
const OFFERS_KEPT: usize = 16;

/// Parameters learnt from the arm's first `transitions` transitions.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub transitions: u64,
    pub parameters: Vec<f32>,
}

fn snapshot_file(transitions: u64) -> String {
    format!("serving-{transitions}.f32")
}

/// A checkpoint's own record, besides the policy's files.
#[derive(Serialize, Deserialize)]
struct Saved {
    /// Transitions taken (learnt from, or passed over after a stop).
    transitions: u64,
    learnt: u64,
    stopped: Option<String>,
    rng: SimRng,
    /// The running SHA-256 over the transitions taken ([`Core::take`]).
    stream_sha256: String,
    /// The snapshots it holds (`serving-N.f32`): the last swap the learner knew logged,
    /// and the offers after it not yet known to be logged; a restart's replay takes from
    /// them a logged swap the checkpoint passed over.
    snapshots: Vec<u64>,
}

/// Where a learner loaded from a checkpoint stands against the log being replayed.
struct Resumed {
    /// The transitions the checkpoint holds: passed over when the replay hands them again.
    skip: u64,
    stream_sha256: String,
    snapshots: Vec<Snapshot>,
    /// Whether the log's first `skip` transitions hashed to the checkpoint's digest.
    verified: bool,
}

/// The learner: the policy that learns and its place in the arm's transitions.
pub struct Core {
    policy: Box<dyn Policy>,
    rng: SimRng,
    taken: u64,
    learnt: u64,
    stopped: Option<String>,
    stream: Sha256,
    /// Its parameters changed since they were last offered.
    updated: bool,
    resumed: Option<Resumed>,
}

fn hash_state(h: &mut Sha256, s: &State) {
    for x in &s.numeric {
        h.update(x.to_bits().to_le_bytes());
    }
    for x in &s.categorical {
        h.update(x.to_le_bytes());
    }
    h.update(s.valid.iter().map(|&v| u8::from(v)).collect::<Vec<u8>>());
}

impl Core {
    pub fn new(policy: Box<dyn Policy>, rng: SimRng) -> Core {
        Core { policy, rng, taken: 0, learnt: 0, stopped: None, stream: Sha256::new(), updated: false, resumed: None }
    }

    fn stream_hex(&self) -> String {
        crate::files::hex(&self.stream.clone().finalize())
    }

    /// Takes the arm's next transition: learns from it, or passes over it (it stopped, or
    /// a checkpoint it was loaded from holds it). Returns why it stops, when it stops now.
    /// A panic inside an update (a bug, or libtorch failing) stops the learning as any
    /// other failure does, on a thread or in a replay alike.
    fn take(&mut self, t: Transition) -> Option<String> {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.take_unguarded(t))) {
            Ok(why) => why,
            Err(payload) => {
                let why =
                    format!("its update failed at transition {}: {}", self.learnt + 1, crate::panic_message(payload.as_ref()));
                self.stopped = Some(why.clone());
                Some(why)
            }
        }
    }

    fn take_unguarded(&mut self, t: Transition) -> Option<String> {
        self.taken += 1;
        self.stream.update((t.action as u64).to_le_bytes());
        self.stream.update(t.reward.to_bits().to_le_bytes());
        self.stream.update([u8::from(t.terminal), u8::from(t.episode_end)]);
        hash_state(&mut self.stream, &t.state);
        hash_state(&mut self.stream, &t.next_state);
        if let Some(skip) = self.resumed.as_ref().map(|r| r.skip) {
            if self.taken <= skip {
                if self.taken == skip {
                    let hex = self.stream_hex();
                    let r = self.resumed.as_mut().expect("resumed");
                    r.verified = hex == r.stream_sha256;
                }
                return None;
            }
        }
        if self.stopped.is_some() {
            return None;
        }
        match learn_step(self.policy.as_mut(), t, &mut self.rng, &mut self.learnt) {
            Ok(updated) => {
                self.updated |= updated;
                None
            }
            Err(why) => {
                self.stopped = Some(why.clone());
                Some(why)
            }
        }
    }

    /// Loads the checkpoint in `dir` (`<log>/learning/<arm>`), if there is one: the policy's
    /// state, and where it stands; the replay then passes over the transitions it holds.
    /// Ok(false): none there.
    pub fn resume(&mut self, dir: &Path, config: &Checked) -> Result<bool> {
        if !checkpoint::exists(dir) {
            // Nothing there is fine; something there that is not a checkpoint is said.
            let odd = dir.ancestors().take(2).find(|p| p.exists() && !p.is_dir());
            if let Some(p) = odd {
                return Err(Error::Checkpoint(format!("{} is not a folder", p.display())));
            }
            if dir.join(checkpoint::DIR).exists() {
                return Err(Error::Checkpoint(format!(
                    "{} holds no complete checkpoint (its MANIFEST.json is missing)",
                    dir.join(checkpoint::DIR).display()
                )));
            }
            return Ok(false);
        }
        // Said for what it is: a checkpoint of another world (the run-folder message of
        // `checkpoint::open` would point at a config.toml that a log folder lacks).
        for name in [checkpoint::DIR, "checkpoint.tmp"] {
            let manifest = dir.join(name).join("MANIFEST.json");
            if let Ok(m) = std::fs::read(&manifest)
                .map_err(drop)
                .and_then(|b| serde_json::from_slice::<checkpoint::Manifest>(&b).map_err(drop))
            {
                if m.config_sha256 != checkpoint::fingerprint(config) {
                    return Err(Error::Checkpoint(format!(
                        "{} was written for another world than the one served",
                        manifest.display()
                    )));
                }
                break;
            }
        }
        let ck = checkpoint::open(dir, config)?;
        let bytes = ck.read(STATE)?;
        let saved: Saved = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Checkpoint(format!("{} is damaged: {e}", ck.dir.join(STATE).display())))?;
        self.policy.load(&ck.dir)?;
        let expected = self.policy.parameters().map_or(0, |p| p.len());
        let mut snapshots = Vec::new();
        for transitions in saved.snapshots {
            let name = snapshot_file(transitions);
            let bytes = ck.read(&name)?;
            if bytes.len() != 4 * expected || transitions > saved.transitions {
                return Err(Error::Checkpoint(format!(
                    "{} holds {} bytes of parameters learnt from {transitions} transitions; the network has {expected} \
                     parameters ({} bytes), learnt from at most the checkpoint's {}",
                    ck.dir.join(&name).display(),
                    bytes.len(),
                    4 * expected,
                    saved.transitions
                )));
            }
            let parameters = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            snapshots.push(Snapshot { transitions, parameters });
        }
        if saved.learnt > saved.transitions {
            return Err(Error::Checkpoint(format!(
                "{} says {} transitions learnt of {} taken",
                ck.dir.join(STATE).display(),
                saved.learnt,
                saved.transitions
            )));
        }
        self.learnt = saved.learnt;
        self.stopped = saved.stopped;
        self.rng = saved.rng;
        self.resumed = Some(Resumed { skip: saved.transitions, stream_sha256: saved.stream_sha256, snapshots, verified: false });
        Ok(true)
    }

    /// Writes a checkpoint of its state into `c.dir` (the previous one stays whole until
    /// this one is complete), with `snapshots` (the parameters of the swaps it knows of).
    /// A failed attempt leaves no unfinished files behind.
    fn checkpoint(&self, snapshots: &[&Snapshot], c: &Checkpointing) -> Result<()> {
        let written = self.write_checkpoint(snapshots, c);
        if written.is_err() {
            checkpoint::remove_unfinished(&c.dir);
        }
        written
    }

    fn write_checkpoint(&self, snapshots: &[&Snapshot], c: &Checkpointing) -> Result<()> {
        let w = checkpoint::Writer::begin(&c.dir)?;
        self.policy.save(w.dir())?;
        #[cfg(test)]
        if c.fail.load(std::sync::atomic::Ordering::SeqCst) {
            let path = w.dir().join(STATE);
            return Err(Error::io("write", &path)(std::io::Error::from_raw_os_error(28)));
        }
        let saved = Saved {
            transitions: self.taken,
            learnt: self.learnt,
            stopped: self.stopped.clone(),
            rng: self.rng.clone(),
            stream_sha256: self.stream_hex(),
            snapshots: snapshots.iter().map(|s| s.transitions).collect(),
        };
        w.write(STATE, serde_json::to_string_pretty(&saved).expect("a learner state serialises").as_bytes())?;
        for s in snapshots {
            w.write(&snapshot_file(s.transitions), &parameter_bytes(&s.parameters))?;
        }
        w.finish(&c.config, 0)
    }
}

/// One transition learnt by a learning arm's `policy`, the rule for a learner and for a
/// bandit learning where it serves alike: Ok(whether it updated), counted in `learnt`; or
/// why it stops learning (its update failed, or gave a loss that is not a finite number).
pub fn learn_step(
    policy: &mut dyn Policy,
    t: Transition,
    rng: &mut SimRng,
    learnt: &mut u64,
) -> std::result::Result<bool, String> {
    match policy.observe(t, rng) {
        Ok(Some(loss)) if !loss.is_finite() => Err(format!("a non-finite loss ({loss}) at transition {}", *learnt + 1)),
        Ok(update) => {
            *learnt += 1;
            Ok(update.is_some())
        }
        Err(e) => Err(format!("its update failed at transition {}: {e}", *learnt + 1)),
    }
}

/// Checkpoints of a learner on its thread.
#[derive(Clone)]
pub struct Checkpointing {
    /// `<log>/learning/<arm>`.
    pub dir: PathBuf,
    pub every: Duration,
    /// The served world's config: a checkpoint is loaded only under the same.
    pub config: Checked,
    /// A full disk, planted by a test.
    #[cfg(test)]
    pub fail: Arc<std::sync::atomic::AtomicBool>,
}

/// How the learner's last checkpoint went (`/health`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CheckpointStatus {
    /// Transitions the last complete checkpoint holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transitions: Option<u64>,
    /// Why the last attempt failed, if it did (the checkpoint before it is kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
    /// The transitions of the checkpoint this server started from (None: it learnt from
    /// the whole log, or there was nothing to learn).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loaded: Option<u64>,
}

/// What the learner's thread tells the engine. The learner holds the lock only to copy a
/// few fields in or out, and the engine only tries it ([`Apart::poll`]): an idle-priority
/// thread preempted while holding it must not stall the engine.
#[derive(Default, Clone)]
struct Shared {
    learnt: u64,
    offer: Option<Snapshot>,
    stopped: Option<String>,
    checkpoint: CheckpointStatus,
}

impl Shared {
    /// The engine's reading of what the learner told: all but the offer.
    fn read(&mut self, from: &Shared) {
        self.learnt = from.learnt;
        self.stopped.clone_from(&from.stopped);
        self.checkpoint.clone_from(&from.checkpoint);
    }
}

enum ToLearner {
    Learn(Box<Transition>),
    /// The swap to the snapshot of these transitions is logged.
    Swapped(u64),
    /// Answered once everything queued before it is taken: the state's SHA-256, or why
    /// it is unavailable.
    Digest(mpsc::Sender<std::result::Result<String, String>>),
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

enum Mode {
    /// Learns when asked (a replay: at each logged swap, and at the end).
    Inline { core: Box<Core>, queue: VecDeque<Transition> },
    Thread {
        tx: mpsc::SyncSender<ToLearner>,
        shared: Arc<Mutex<Shared>>,
        handle: Option<std::thread::JoinHandle<()>>,
        /// What the engine last read of `shared` (all but the offer).
        seen: Shared,
    },
}

/// The learning half of a learning arm that serves by parameters.
pub struct Apart {
    mode: Mode,
    /// Transitions handed over, in log order.
    queued: u64,
    /// The transitions the serving parameters were learnt from (the last swap; 0: none).
    serving: u64,
}

impl Apart {
    pub fn inline(core: Core) -> Apart {
        Apart { mode: Mode::Inline { core: Box::new(core), queue: VecDeque::new() }, queued: 0, serving: 0 }
    }

    /// The transitions the serving parameters were learnt from.
    pub fn serving(&self) -> u64 {
        self.serving
    }

    /// Hands over the arm's next transition (logged). On a thread, it waits while
    /// [`MAX_BEHIND`] wait already.
    pub fn push(&mut self, t: Transition) {
        self.queued += 1;
        match &mut self.mode {
            Mode::Inline { queue, .. } => queue.push_back(t),
            // A learner's thread that is gone has failed; `status` says so.
            Mode::Thread { tx, .. } => {
                let _ = tx.send(ToLearner::Learn(Box::new(t)));
            }
        }
    }

    /// Transitions learnt from, and why it stopped learning (if it did), as last read.
    pub fn status(&self) -> (u64, Option<String>) {
        match &self.mode {
            Mode::Inline { core, .. } => (core.learnt, core.stopped.clone()),
            Mode::Thread { seen, handle, .. } => {
                let stopped = match (&seen.stopped, handle.as_ref().is_some_and(|h| h.is_finished())) {
                    (Some(why), _) => Some(why.clone()),
                    (None, true) => Some("its learner's thread failed".to_string()),
                    (None, false) => None,
                };
                (seen.learnt, stopped)
            }
        }
    }

    pub fn checkpoint_status(&self) -> Option<CheckpointStatus> {
        match &self.mode {
            Mode::Inline { .. } => None,
            Mode::Thread { seen, .. } => Some(seen.checkpoint.clone()),
        }
    }

    /// A replay's logged swap: learns up to the swap's `transitions` and gives the
    /// parameters learnt from exactly those (None: a checkpoint the learner was loaded
    /// from passed them over, and holds no snapshot of them).
    pub fn swap_to(&mut self, transitions: u64) -> Result<Option<Vec<f32>>> {
        let Mode::Inline { core, queue } = &mut self.mode else {
            return Err(Error::Other("a learner on its thread swaps by offers, not by the log".into()));
        };
        while core.taken < transitions {
            let Some(t) = queue.pop_front() else {
                return Err(Error::Other(format!(
                    "the log swaps in parameters learnt from {transitions} transitions where it gives {}",
                    core.taken
                )));
            };
            core.take(t);
        }
        if core.taken > transitions {
            return Err(Error::Other(format!(
                "the log swaps in parameters learnt from {transitions} transitions, fewer than an earlier swap's {}",
                core.taken
            )));
        }
        self.serving = transitions;
        match &core.resumed {
            Some(r) if transitions < r.skip => {
                Ok(r.snapshots.iter().find(|s| s.transitions == transitions).map(|s| s.parameters.clone()))
            }
            _ => Ok(core.policy.parameters()),
        }
    }

    /// Learns every transition queued (inline).
    fn catch_up(&mut self) {
        if let Mode::Inline { core, queue } = &mut self.mode {
            while let Some(t) = queue.pop_front() {
                core.take(t);
            }
        }
    }

    /// Loads the learner's checkpoint in `dir`, if there is one ([`Core::resume`]), before
    /// a replay of the log.
    pub fn resume(&mut self, dir: &Path, config: &Checked) -> Result<bool> {
        match &mut self.mode {
            Mode::Inline { core, queue } if core.taken == 0 && queue.is_empty() => core.resume(dir, config),
            _ => Err(Error::Other("a learner resumes from a checkpoint only before it has taken anything".into())),
        }
    }

    /// After a replay: the transitions taken, and those of the checkpoint it was loaded
    /// from (None on its thread).
    pub fn replayed(&self) -> Option<(u64, Option<u64>)> {
        match &self.mode {
            Mode::Inline { core, queue } => Some((core.taken + queue.len() as u64, core.resumed.as_ref().map(|r| r.skip))),
            Mode::Thread { .. } => None,
        }
    }

    /// After a replay from a checkpoint: whether the log gave the checkpoint's transitions
    /// (as many, and the same); None when it was not loaded from one.
    pub fn checkpoint_verified(&mut self) -> Option<bool> {
        self.catch_up();
        let Mode::Inline { core, .. } = &self.mode else { return None };
        core.resumed.as_ref().map(|r| r.verified)
    }

    /// Moves the learner onto a thread of its own (after a replay of the log, with what
    /// it left queued learnt first); it checkpoints as `checkpointing` says. `serving` is
    /// what the arm serves now.
    pub fn start(&mut self, checkpointing: Option<Checkpointing>, serving: Snapshot) -> Result<()> {
        self.catch_up();
        if !matches!(self.mode, Mode::Inline { .. }) {
            return Ok(());
        }
        let (tx, rx) = mpsc::sync_channel(MAX_BEHIND);
        let shared = Arc::new(Mutex::new(Shared::default()));
        let thread = Mode::Thread { tx, shared: shared.clone(), handle: None, seen: Shared::default() };
        let Mode::Inline { core, .. } = std::mem::replace(&mut self.mode, thread) else { unreachable!("checked above") };
        let mut core = *core;
        let loaded = core.resumed.take().map(|r| r.skip);
        // What it learnt since the last swap serves at its first offer.
        core.updated = core.policy.parameters().as_ref() != Some(&serving.parameters);
        let first = Shared {
            learnt: core.learnt,
            offer: None,
            stopped: core.stopped.clone(),
            checkpoint: CheckpointStatus { loaded, ..Default::default() },
        };
        *lock(&shared) = first.clone();
        let s = shared.clone();
        let handle = std::thread::Builder::new()
            .name("fypsim-learner".into())
            .spawn(move || run(core, rx, s, checkpointing, serving, loaded))
            .map_err(|e| Error::Other(format!("cannot start a learner's thread: {e}")))?;
        if let Mode::Thread { handle: h, seen, .. } = &mut self.mode {
            *h = Some(handle);
            *seen = first;
        }
        Ok(())
    }

    /// Between two batches: the learner's newest offer of parameters, if it has one (the
    /// engine logs the swap, then serves by them and calls [`Apart::swapped`]); it reads
    /// the learner's counts and stop too. Only tried: when the learner holds the lock,
    /// there is no offer this time.
    pub fn poll(&mut self) -> Option<Snapshot> {
        let Mode::Thread { shared, seen, .. } = &mut self.mode else { return None };
        let mut s = match shared.try_lock() {
            Ok(s) => s,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        seen.read(&s);
        s.offer.take()
    }

    /// An offer the engine could not log (a full disk): offered again between the next
    /// two batches, unless the learner has a newer one by then.
    pub fn put_back(&mut self, snap: Snapshot) {
        if let Mode::Thread { shared, .. } = &self.mode {
            lock(shared).offer.get_or_insert(snap);
        }
    }

    /// The swap to the snapshot of `transitions` is logged and serves.
    pub fn swapped(&mut self, transitions: u64) {
        self.serving = transitions;
        if let Mode::Thread { tx, .. } = &self.mode {
            let _ = tx.send(ToLearner::Swapped(transitions));
        }
    }

    /// The SHA-256 of the learner's whole state once it has taken every transition
    /// handed over (what a restart must rebuild exactly); its counts are read then too.
    pub fn digest(&mut self) -> Result<String> {
        self.catch_up();
        match &mut self.mode {
            Mode::Inline { core, .. } => state_digest(core.policy.as_ref()),
            Mode::Thread { tx, shared, seen, .. } => {
                let (reply, answer) = mpsc::channel();
                tx.send(ToLearner::Digest(reply)).map_err(|_| Error::Other("its learner's thread failed".into()))?;
                let digest = answer
                    .recv_timeout(WAIT)
                    .map_err(|_| Error::Other("its learner did not answer".into()))?
                    .map_err(Error::Other);
                seen.read(&lock(shared));
                digest
            }
        }
    }

    /// Stops the learner's thread once it has taken what is queued (it writes a last
    /// checkpoint).
    pub fn close(&mut self) {
        if let Mode::Thread { tx, handle, .. } = &mut self.mode {
            let (gone, _) = mpsc::sync_channel(0);
            drop(std::mem::replace(tx, gone));
            if let Some(h) = handle.take() {
                let _ = h.join();
            }
        }
    }
}

impl Drop for Apart {
    fn drop(&mut self) {
        self.close();
    }
}

/// The learner's thread: takes transitions in the order they come, offers its
/// parameters after an update whenever the engine has taken its previous offer (at most
/// every [`OFFER_EVERY`]), and checkpoints every `checkpointing.every` when something
/// changed (retrying a failed one after as long) and when the engine lets it go.
/// `loaded`: the transitions of the checkpoint on disk it started from (None: none fits,
/// and it writes one at once).
fn run(
    mut core: Core,
    rx: mpsc::Receiver<ToLearner>,
    shared: Arc<Mutex<Shared>>,
    checkpointing: Option<Checkpointing>,
    mut serving: Snapshot,
    loaded: Option<u64>,
) {
    // Serving goes first: the learner runs at Linux's idle priority (SCHED_IDLE, per
    // thread), on a core nothing else wants, so any request preempts it at once; on a
    // busy machine learning falls behind (its transitions wait, in order) rather than
    // answers slowing down. Elsewhere, or refused, it runs as it is.
    #[cfg(target_os = "linux")]
    unsafe {
        let param = libc::sched_param { sched_priority: 0 };
        libc::sched_setscheduler(0, libc::SCHED_IDLE, &param);
    }
    // Offers not yet known to be logged, oldest first.
    let mut offered: VecDeque<Snapshot> = VecDeque::new();
    // What the checkpoint on disk holds: transitions taken and the swap serving.
    let mut saved = match loaded {
        Some(n) => Some((n, serving.transitions)),
        // Nothing learnt: nothing to save.
        None if core.taken == 0 => Some((0, serving.transitions)),
        None => None,
    };
    let every = checkpointing.as_ref().map_or(Duration::ZERO, |c| c.every);
    let mut last_save = Instant::now();
    if saved.is_none() {
        last_save = last_save.checked_sub(every).unwrap_or(last_save);
    }
    let mut last_offer = Instant::now().checked_sub(OFFER_EVERY).unwrap_or_else(Instant::now);
    let save = |core: &Core, serving: &Snapshot, offered: &VecDeque<Snapshot>, c: &Checkpointing| {
        let mut snapshots = vec![serving];
        snapshots.extend(offered.iter().filter(|s| s.transitions <= core.taken));
        let result = core.checkpoint(&snapshots, c);
        let mut s = lock(&shared);
        match result {
            Ok(()) => {
                s.checkpoint.transitions = Some(core.taken);
                s.checkpoint.failed = None;
                true
            }
            Err(e) => {
                drop(s);
                eprintln!(
                    "warning: a learning arm's checkpoint in {} failed ({e}); any earlier one is kept, and it tries again",
                    c.dir.display()
                );
                lock(&shared).checkpoint.failed = Some(e.to_string());
                false
            }
        }
    };
    loop {
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(ToLearner::Learn(t)) => {
                if let Some(why) = core.take(*t) {
                    lock(&shared).stopped = Some(why);
                }
            }
            Ok(ToLearner::Swapped(n)) => {
                while let Some(s) = offered.pop_front() {
                    if s.transitions == n {
                        serving = s;
                        break;
                    }
                }
            }
            Ok(ToLearner::Digest(reply)) => {
                lock(&shared).learnt = core.learnt;
                let _ = reply.send(state_digest(core.policy.as_ref()).map_err(|e| e.to_string()));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        let room = {
            let mut s = lock(&shared);
            s.learnt = core.learnt;
            s.offer.is_none()
        };
        if core.updated && room && last_offer.elapsed() >= OFFER_EVERY {
            // Copied outside the lock; handed over under it.
            if let Some(parameters) = core.policy.parameters() {
                let snap = Snapshot { transitions: core.taken, parameters };
                offered.push_back(snap.clone());
                if offered.len() > OFFERS_KEPT {
                    offered.pop_front();
                }
                lock(&shared).offer = Some(snap);
            }
            core.updated = false;
            last_offer = Instant::now();
        }
        if let Some(c) = &checkpointing {
            let now = (core.taken, serving.transitions);
            if saved != Some(now) && last_save.elapsed() >= c.every {
                if save(&core, &serving, &offered, c) {
                    saved = Some(now);
                }
                last_save = Instant::now();
            }
        }
    }
    if let Some(c) = &checkpointing {
        if saved != Some((core.taken, serving.transitions)) {
            save(&core, &serving, &offered, c);
        }
    }
}

/// The SHA-256 over the files `policy` saves, in name order.
pub fn state_digest(policy: &dyn Policy) -> Result<String> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("fypsim-state-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(Error::io("create", &dir))?;
    let saved = policy.save(&dir).and_then(|()| {
        let mut names: Vec<PathBuf> =
            std::fs::read_dir(&dir).map_err(Error::io("read", &dir))?.filter_map(|e| e.ok().map(|e| e.path())).collect();
        names.sort();
        let mut all = Vec::new();
        for name in &names {
            all.extend(std::fs::read(name).map_err(Error::io("read", name))?);
        }
        Ok(crate::files::sha256(&all))
    });
    let _ = std::fs::remove_dir_all(&dir);
    saved
}

/// Parameters as a snapshot file holds them (little-endian f32s).
fn parameter_bytes(parameters: &[f32]) -> Vec<u8> {
    parameters.iter().flat_map(|p| p.to_le_bytes()).collect()
}

/// The SHA-256 of parameters (what serves).
pub fn parameters_digest(parameters: &[f32]) -> String {
    crate::files::sha256(&parameter_bytes(parameters))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::make_policy;
    use crate::config::{Config, PolicyKind};
    use crate::rng::{stream, Stream};

    fn config() -> Checked {
        let mut c: Config = (*crate::agent::tests::config()).clone();
        c.dqn.learning_starts = 2;
        c.dqn.batch_size = 2;
        c.dqn.train_every = 1;
        c.check().unwrap()
    }

    fn core(c: &Checked) -> Core {
        Core::new(make_policy(PolicyKind::Dqn, c).unwrap(), stream(1, Stream::ServeLearn))
    }

    fn steps(c: &Checked, n: usize) -> Vec<Transition> {
        let obs = crate::agent::tests::observations(c);
        (0..n)
            .map(|i| Transition {
                state: obs[i].state.clone(),
                action: i % 3,
                reward: (i % 4) as f64 * 0.5,
                next_state: obs[i + 1].state.clone(),
                terminal: i % 5 == 4,
                episode_end: i % 5 == 4,
                discount: 1.0,
            })
            .collect()
    }

    fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// What a fresh copy of the arm's policy serves: the parameters it was made with.
    fn initial(c: &Checked) -> Snapshot {
        Snapshot { transitions: 0, parameters: make_policy(PolicyKind::Dqn, c).unwrap().parameters().unwrap() }
    }

    /// A full disk while checkpointing keeps the previous checkpoint whole and leaves no
    /// unfinished files; the learner learns on, says what failed, retries, and the next
    /// checkpoint that can be written is, at the latest when it stops.
    #[test]
    fn a_full_disk_while_checkpointing_keeps_the_previous_checkpoint_and_learns_on() {
        let c = config();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(DIR).join("B");
        let fail = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ck = Checkpointing { dir: dir.clone(), every: Duration::ZERO, config: c.clone(), fail: fail.clone() };
        let mut apart = Apart::inline(core(&c));
        apart.start(Some(ck), initial(&c)).unwrap();
        let all = steps(&c, 12);
        for t in &all[..6] {
            apart.push(t.clone());
        }
        let six = apart.digest().unwrap();
        wait_for("a checkpoint of 6", || {
            apart.poll();
            apart.checkpoint_status().unwrap().transitions == Some(6)
        });
        fail.store(true, std::sync::atomic::Ordering::SeqCst);
        for t in &all[6..9] {
            apart.push(t.clone());
        }
        wait_for("a failed checkpoint", || {
            apart.poll();
            apart.checkpoint_status().unwrap().failed.is_some()
        });
        let status = apart.checkpoint_status().unwrap();
        assert_eq!(status.transitions, Some(6), "{status:?}");
        assert!(status.failed.as_ref().unwrap().contains("os error 28"), "{status:?}");
        assert!(!dir.join("checkpoint.tmp").exists(), "a failed save leaves nothing behind");
        // The checkpoint on disk is the one of 6, whole; the learner learnt on.
        let mut resumed = Apart::inline(core(&c));
        assert!(resumed.resume(&dir, &c).unwrap());
        for t in &all[..6] {
            resumed.push(t.clone());
        }
        assert_eq!(resumed.checkpoint_verified(), Some(true));
        assert_eq!(resumed.digest().unwrap(), six);
        let nine = apart.digest().unwrap();
        assert_eq!(apart.status(), (9, None));
        // Room again, and it stops at once: its last checkpoint holds all 9.
        fail.store(false, std::sync::atomic::Ordering::SeqCst);
        apart.close();
        let mut last = Apart::inline(core(&c));
        assert!(last.resume(&dir, &c).unwrap());
        assert_eq!(last.replayed(), Some((0, Some(9))));
        all[..9].iter().for_each(|t| last.push(t.clone()));
        assert_eq!(last.checkpoint_verified(), Some(true));
        assert_eq!(last.digest().unwrap(), nine);
    }

    /// A learner resumed from a checkpoint and fed the log's transitions ends where one
    /// that learnt them all ends; a logged swap the checkpoint passed over comes from the
    /// snapshots it holds (the last swap it knew logged, and an offer the engine took but
    /// had not said was logged); a checkpoint whose transitions the log does not give is
    /// found out; a swap gives exactly the parameters of its transitions.
    #[test]
    fn a_resumed_learner_equals_one_that_never_stopped_and_swaps_are_exact() {
        let c = config();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("A");
        let all = steps(&c, 12);
        // On its thread from transition 4 (the swap of 4 serving), checkpointed when it
        // stops after 6; the engine took an offer it never said was logged.
        let ck =
            Checkpointing { dir: dir.clone(), every: Duration::from_secs(3600), config: c.clone(), fail: Default::default() };
        let mut live = Apart::inline(core(&c));
        all[..4].iter().for_each(|t| live.push(t.clone()));
        let serving = Snapshot { transitions: 4, parameters: live.swap_to(4).unwrap().unwrap() };
        live.start(Some(ck), serving).unwrap();
        all[4..6].iter().for_each(|t| live.push(t.clone()));
        let mut offer = None;
        wait_for("an offer", || {
            offer = live.poll();
            offer.is_some()
        });
        let offer = offer.unwrap();
        assert!((5..=6).contains(&offer.transitions), "{}", offer.transitions);
        live.close();
        // Learnt inline: the parameters after 4, at the offer and after 8, and the state after 12.
        let mut whole = Apart::inline(core(&c));
        all.iter().for_each(|t| whole.push(t.clone()));
        let p4 = whole.swap_to(4).unwrap().unwrap();
        let po = whole.swap_to(offer.transitions).unwrap().unwrap();
        assert_eq!(po, offer.parameters, "the thread learnt what a replay learns");
        let p8 = whole.swap_to(8).unwrap().unwrap();
        assert_ne!(p4, p8, "it learnt between the swaps");
        assert!(whole.swap_to(7).is_err(), "a swap back in the log's past");
        let end = whole.digest().unwrap();
        // Resumed: the swaps of 4 and of the offer come from the checkpoint, the one of 8
        // is learnt again.
        let mut resumed = Apart::inline(core(&c));
        assert!(resumed.resume(&dir, &c).unwrap());
        all.iter().for_each(|t| resumed.push(t.clone()));
        assert_eq!(resumed.swap_to(4).unwrap().unwrap(), p4);
        assert_eq!(resumed.swap_to(offer.transitions).unwrap().unwrap(), po);
        assert_eq!(resumed.swap_to(8).unwrap().unwrap(), p8);
        assert_eq!(resumed.checkpoint_verified(), Some(true));
        assert_eq!(resumed.digest().unwrap(), end);
        // A log whose first transitions differ (a reward, or a state): the checkpoint is
        // not its own.
        for change in [0, 1] {
            let mut other = Apart::inline(core(&c));
            assert!(other.resume(&dir, &c).unwrap());
            let mut changed = all.clone();
            match change {
                0 => changed[2].reward += 1.0,
                _ => changed[3].next_state.numeric[0] += 0.5,
            }
            changed.into_iter().for_each(|t| other.push(t));
            assert_eq!(other.checkpoint_verified(), Some(false), "change {change}");
        }
        // A swap the checkpoint passed over and holds no snapshot of: unknown.
        let mut skipped = Apart::inline(core(&c));
        assert!(skipped.resume(&dir, &c).unwrap());
        all.iter().for_each(|t| skipped.push(t.clone()));
        assert_eq!(skipped.swap_to(3).unwrap(), None);
        // A checkpoint of another world is said to be one.
        let mut other: Config = (*c).clone();
        other.seed += 1;
        let other = other.check().unwrap();
        let e = Apart::inline(core(&other)).resume(&dir, &other).unwrap_err().to_string();
        assert!(e.contains("written for another world"), "{e}");
        // A snapshot of another length, its manifest rewritten to match: refused as a
        // checkpoint (a restart then learns from the whole log), not served.
        let ck = dir.join(checkpoint::DIR);
        let name = snapshot_file(4);
        let short = std::fs::read(ck.join(&name)).unwrap()[4..].to_vec();
        std::fs::write(ck.join(&name), &short).unwrap();
        let manifest = ck.join("MANIFEST.json");
        let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
        m["files"][&name] = serde_json::json!({"bytes": short.len(), "sha256": crate::files::sha256(&short)});
        std::fs::write(&manifest, serde_json::to_vec(&m).unwrap()).unwrap();
        let e = Apart::inline(core(&c)).resume(&dir, &c).unwrap_err().to_string();
        assert!(e.contains(&name) && e.contains("parameters"), "{e}");
        // Something in the way of a checkpoint is said, not passed over.
        std::fs::remove_dir_all(&ck).unwrap();
        std::fs::write(&ck, b"not a folder").unwrap();
        let e = Apart::inline(core(&c)).resume(&dir, &c).unwrap_err().to_string();
        assert!(e.contains("no complete checkpoint"), "{e}");
    }
}
