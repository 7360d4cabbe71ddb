//! A run's memory, estimated before it starts, so that a typo such as
//! `world.n_users = 4000000000` is refused with the estimate instead of aborting on an
//! allocation minutes later.
//!
//! The estimate adds up the large structures a run holds at once: the world (users, videos,
//! logged history) and its interaction matrix, in the three copies a run keeps (training,
//! evaluation, the evaluation's starting point); the neighbour lists; the replay buffer;
//! the Q-networks with their gradients and Adam's moments; and the records (episodes,
//! steps and interactions, counted at the step budget: an upper bound), and with a
//! calendar the population runs' sessions and daily and weekly tables. It is an
//! estimate, good to a small factor, not a measurement: it exists to catch sizes that
//! cannot fit, not to plan memory to the last megabyte.

use crate::config::{CandidateSource, Checked, Config, PolicyKind, QHead};
use crate::error::ConfigError;
use crate::Result;

/// Checks what validation cannot, because it depends on this machine: that the run's
/// estimated memory fits in the machine's physical memory, and that a CUDA device is
/// there when one is asked for. `fypsim check`, `run`, `sweep` (every run, before any
/// starts), calendar runs and `serve` call it before anything is written.
pub fn check(config: &Checked) -> Result<()> {
    fits_in_memory(config)?;
    #[cfg(feature = "torch")]
    if config.policy == PolicyKind::Dqn {
        crate::agent::dqn::resolve_device(config.dqn.device)?;
    }
    Ok(())
}

/// Refuses a run whose estimated memory exceeds this machine's physical memory, naming the
/// estimate and its largest parts.
pub fn fits_in_memory(c: &Config) -> std::result::Result<(), ConfigError> {
    let Some(physical) = physical_memory() else { return Ok(()) };
    let need = estimate(c);
    if need.total <= physical {
        return Ok(());
    }
    Err(ConfigError::TooLarge { estimate: need.describe(), physical: gib(physical) })
}

/// Refuses `n` environments of the public API ([`crate::drive::api::SimEnv::many`]) whose
/// estimated memory exceeds this machine's: each keeps its own copy of the world's matrix
/// and neighbour lists (as its episodes change it), beside one shared copy as generated.
pub fn fits_in_memory_envs(c: &Config, n: usize) -> std::result::Result<(), ConfigError> {
    let Some(physical) = physical_memory() else { return Ok(()) };
    let run = estimate(c);
    let part = |what: &str| run.parts.iter().find(|p| p.0 == what).map_or(0.0, |p| p.1);
    // The run's estimate counts three copies; an environment keeps one, and one more is
    // shared.
    let per_env = (part("world and matrix") + part("neighbour lists")) / 3.0;
    let mut parts =
        vec![("environments' worlds and matrices", per_env * (n as f64 + 1.0)), ("candidate scratch", part("candidate scratch"))];
    parts.sort_by(|a, b| b.1.total_cmp(&a.1));
    let need = MemoryEstimate { total: parts.iter().map(|p| p.1).sum(), parts };
    if need.total <= physical {
        return Ok(());
    }
    Err(ConfigError::TooLarge { estimate: format!("{} for {n} environments", need.describe()), physical: gib(physical) })
}

/// The estimate, in bytes, with its largest parts named.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryEstimate {
    pub total: f64,
    /// (what, bytes), largest first.
    pub parts: Vec<(&'static str, f64)>,
}

impl MemoryEstimate {
    /// "12.3 GiB (replay buffer 11.0 GiB, world and matrix 1.1 GiB, ...)".
    pub fn describe(&self) -> String {
        let parts: Vec<String> =
            self.parts.iter().filter(|(_, b)| *b >= 1e6).take(3).map(|(w, b)| format!("{w} {}", gib(*b))).collect();
        if parts.is_empty() {
            gib(self.total)
        } else {
            format!("{} ({})", gib(self.total), parts.join(", "))
        }
    }
}

/// Bytes as GiB with one decimal (or MiB when small).
pub fn gib(bytes: f64) -> String {
    if bytes >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.1} GiB", bytes / (1024.0 * 1024.0 * 1024.0))
    } else {
        format!("{:.0} MiB", bytes / (1024.0 * 1024.0))
    }
}

/// The memory a run of `c` needs, estimated. Computed in f64 so that absurd sizes give
/// absurd (not wrapped) numbers.
pub fn estimate(c: &Config) -> MemoryEstimate {
    // Users who sign up and videos uploaded during a calendar are drawn with the world.
    let cal_days = c.calendar.days as f64;
    let users = c.world.n_users as f64 + c.calendar.signups_per_day * cal_days;
    let videos = c.world.n_videos as f64 + c.calendar.uploads_per_creator_day * c.world.n_creators as f64 * cal_days;
    let h = &c.history;
    // E[max(0, N(m, s))] is at most m + 0.4 s.
    let per_user = (h.interactions_mean + 0.4 * h.interactions_std).max(h.interactions_min as f64);
    let rows = users * per_user;
    // A history row (~32 bytes) and its two matrix entries (12 bytes each), plus per user
    // and per video the profile, clock, counters and matrix row headers.
    let world = rows * (32.0 + 24.0) + users * 80.0 + videos * 96.0;
    let copies = 3.0;

    let slots = c.candidates.count as f64;
    let neighbours = match c.candidates.source {
        CandidateSource::Neighbours => videos * (c.candidates.neighbours as f64).min(videos) * 12.0 * 2.0,
        CandidateSource::Exact => 0.0,
    };
    // Candidate scratch space: a sum and a mark per video, one per core.
    let scratch = videos * 16.0 * crate::cores() as f64;

    let dqn = c.policy == PolicyKind::Dqn;
    let layout = crate::env::Layout::of(c);
    let (n_num, n_cat) = (layout.n_numeric() as f64, layout.n_categorical() as f64);
    let replay = if dqn { c.dqn.replay_capacity as f64 * (2.0 * (n_num * 4.0 + n_cat * 8.0) + slots * 4.0 + 24.0) } else { 0.0 };
    let network = if dqn { network_bytes(c) } else { 0.0 };

    let episodes = c.train.episodes as f64;
    let max_steps = c.env.max_steps as f64;
    let step_bytes = if c.output.steps { 48.0 } else { 0.0 } + 16.0;
    let records = episodes * 64.0 + episodes * max_steps * step_bytes + c.train.eval_episodes as f64 * 24.0 * 6.0;

    // A population run per policy keeps every session (a row, and about five matrix
    // interactions of 16 bytes each) at twice the reference rate, a daily activity mark
    // per user and day, and a weekly aggregate per user and week.
    let cal = &c.calendar;
    let population = if cal.days > 0 {
        let days = cal.days as f64;
        let sessions = users * days * cal.sessions_per_day * 2.0;
        // Per creator and day, its views and watch time.
        let creators = c.world.n_creators as f64 * days * 16.0;
        (1 + cal.baselines.len()) as f64 * (sessions * (72.0 + 5.0 * 16.0) + users * days * (1.0 + 48.0 / 7.0) + creators)
    } else {
        0.0
    };

    let mut parts = vec![
        ("population runs", population),
        ("world and matrix", world * copies),
        ("neighbour lists", neighbours * copies),
        ("candidate scratch", scratch),
        ("replay buffer", replay),
        ("Q-networks", network),
        ("records", records),
    ];
    parts.sort_by(|a, b| b.1.total_cmp(&a.1));
    MemoryEstimate { total: parts.iter().map(|p| p.1).sum(), parts }
}

/// The two networks' weights, the gradients and Adam's two moments (5 copies of every
/// parameter), and the activations of one batch.
fn network_bytes(c: &Config) -> f64 {
    let d = &c.dqn;
    let e = &d.embeddings;
    let slots = c.candidates.count as f64;
    let user = 3.0 + (e.gender + e.region + 2 * e.interest + e.last_category + e.last_action) as f64;
    let item = 4.0 + (e.candidate_category + e.region_category + e.video) as f64;
    let (input, outputs, rows) = match d.head {
        QHead::Slots => (user + slots * item, slots, 1.0),
        QHead::Items => (user + item, 1.0, slots),
    };
    let mut params = 0.0;
    let mut width = input;
    let mut activations = 0.0;
    for &h in &d.hidden {
        params += width * h as f64 + h as f64;
        activations += h as f64;
        width = h as f64;
    }
    params += width * outputs + outputs;
    // The video table: one vector per video of the starting catalogue, one for uploads.
    params += (c.world.n_videos as f64 + 1.0) * e.video as f64;
    let batch = d.batch_size as f64 * rows;
    params * 4.0 * 5.0 + batch * (activations + input) * 4.0 * 4.0
}

/// The machine's physical memory in bytes (None where the platform does not say).
pub fn physical_memory() -> Option<f64> {
    #[cfg(unix)]
    {
        // SAFETY: sysconf only reads system constants.
        let (pages, size) = unsafe { (libc::sysconf(libc::_SC_PHYS_PAGES), libc::sysconf(libc::_SC_PAGESIZE)) };
        if pages > 0 && size > 0 {
            return Some(pages as f64 * size as f64);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_sizes_are_small_and_absurd_ones_are_huge() {
        let d = estimate(&Config::default());
        assert!(d.total > 1e6 && d.total < 1e9, "{}", d.describe());
        let mut c = Config::default();
        c.world.n_users = 4_000_000_000;
        assert!(estimate(&c).total > 1e12);
        let mut c = Config::default();
        c.dqn.hidden = vec![65_536, 65_536];
        let e = estimate(&c);
        assert!(e.total > 5e10 && e.parts[0].0 == "Q-networks", "{}", e.describe());
        let mut c = Config::default();
        c.dqn.replay_capacity = 1_000_000_000_000_000;
        assert!(estimate(&c).describe().contains("replay buffer"));
        let mut c = Config::default();
        (c.world.n_users, c.calendar.days) = (1_000_000, 3650);
        let e = estimate(&c);
        assert!(e.total > 1e12 && e.parts[0].0 == "population runs", "{}", e.describe());
        // Sign-ups and uploads are drawn with the world: a billion a day is counted.
        let mut c = Config::default();
        (c.calendar.days, c.calendar.uploads_per_creator_day) = (100, 1e6);
        c.world.n_creators = 100_000;
        assert!(estimate(&c).total > 1e12);
        let mut c = Config::default();
        (c.calendar.days, c.calendar.signups_per_day) = (100, 1e9);
        assert!(estimate(&c).total > 1e12);
    }
}
