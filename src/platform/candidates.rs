//! Candidate generation and business rescoring (docs/model.md: Candidates).
//!
//! raw(j) = sum over h in H of cos(h, j) * s_h for every video j outside the user's history
//! H. Written out, cos(h, j) = sum_v r_hv r_jv / (|h| |j|), so
//!
//!   raw(j) = (1 / |j|) * sum_v r_jv * w_v,   with   w_v = sum_{h in H} (s_h / |h|) r_hv.
//!
//! One pass over the history's users builds the user weights w, one pass over those
//! users' rows accumulates raw: the cost follows the user's neighbourhood, not the
//! catalogue, and since it reads the live matrix, an interaction shows in the very next
//! request. Dense scratch arrays are reset through touched lists.

use serde::Serialize;

use crate::config::CandidateConfig;
use crate::platform::matrix::{InteractionMatrix, SparseRow};
use crate::world::{User, Video};

/// One candidate video, as the agent sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    pub video: u32,
    pub category: u16,
    /// sum over the history of cosine similarity times the history score.
    pub raw: f64,
    /// w1 * raw + w2 * (popularity_scale * views) + w3 * [interest match].
    pub final_score: f64,
    pub views: u64,
    pub interest_match: bool,
}

/// Rounds a raw score to a multiple of 2^-40 (about 1e-12). Scores that are equal in exact
/// arithmetic but were summed in different orders then compare equal, so ties really
/// break by video id, whatever order a code path adds in.
pub fn quantize(x: f64) -> f64 {
    const SCALE: f64 = 1.0 / QUANTUM;
    let y = x * SCALE;
    // `f64::round` is a libm call on the default x86-64 target, and the candidate request
    // rounds thousands of scores. The same rounding (half away from zero, sign of zero
    // kept) by truncation: exact for |y| < 2^62, where `y - t` is exact (for |y| >= 2^52,
    // y is already an integer). Anything larger, infinite or NaN goes to `round`.
    if y.abs() < (1u64 << 62) as f64 {
        let t = y as i64;
        let f = y - t as f64;
        let r = if f >= 0.5 {
            t + 1
        } else if f <= -0.5 {
            t - 1
        } else {
            t
        };
        (r as f64).copysign(y) / SCALE
    } else {
        y.round() / SCALE
    }
}

/// The grid [`quantize`] rounds to: 2^-40.
const QUANTUM: f64 = 1.0 / (1u64 << 40) as f64;

/// The relative margin of the selections' squared early cuts (1 - 2^-45): far above the
/// few roundings of the test, far below any gap between two rounded scores that matters.
const CUT_MARGIN: f64 = 1.0 - 1.0 / (1u64 << 45) as f64;

/// Ordering by score descending, then video id ascending, so ties are reproducible.
fn by_score_then_id(a: (f64, u32), b: (f64, u32)) -> std::cmp::Ordering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
}

/// Completes a list that has fewer than `count` positive scores: the zero group (`zeros`,
/// in id order, at raw 0), then the negative scores (`negatives`, as (score, video)), best
/// first.
fn complete_short_list(
    out: &mut Vec<(u32, f64)>,
    count: usize,
    zeros: impl Iterator<Item = u32>,
    negatives: impl Iterator<Item = (f64, u32)>,
) {
    out.extend(zeros.take(count.saturating_sub(out.len())).map(|j| (j, 0.0)));
    if out.len() < count {
        let mut negative: Vec<(f64, u32)> = negatives.collect();
        negative.sort_unstable_by(|a, b| by_score_then_id(*a, *b));
        out.extend(negative.iter().take(count - out.len()).map(|&(s, j)| (j, s)));
    }
}

/// Reusable scratch space for candidate generation.
#[derive(Debug, Clone)]
pub struct CandidateGenerator {
    weight: Vec<f64>,
    weight_stamp: Vec<u32>,
    weight_touched: Vec<u32>,
    raw: Vec<f64>,
    raw_stamp: Vec<u32>,
    raw_touched: Vec<u32>,
    in_history: Vec<u32>,
    stamp: u32,
}

impl CandidateGenerator {
    pub fn new(n_items: usize) -> CandidateGenerator {
        CandidateGenerator {
            weight: Vec::new(),
            weight_stamp: Vec::new(),
            weight_touched: Vec::new(),
            raw: vec![0.0; n_items],
            raw_stamp: vec![0; n_items],
            raw_touched: Vec::new(),
            in_history: vec![0; n_items],
            stamp: 0,
        }
    }

    /// Starts a request: a fresh stamp for every mark; all marks are reset once before
    /// the counter could wrap.
    fn begin(&mut self, n_users: usize) -> u32 {
        if self.weight.len() < n_users {
            self.weight.resize(n_users, 0.0);
            self.weight_stamp.resize(n_users, 0);
        }
        if self.stamp == u32::MAX {
            self.weight_stamp.fill(0);
            self.raw_stamp.fill(0);
            self.in_history.fill(0);
            self.stamp = 0;
        }
        self.stamp += 1;
        self.stamp
    }

    /// The top `count` videos outside the user's history by raw score (ties by id), as
    /// (video, raw) pairs in that order. Videos that share no user with the history score
    /// 0 and fill in, by id, when fewer than `count` videos score above 0.
    pub fn top_raw(&mut self, m: &InteractionMatrix, user: u32, count: usize) -> Vec<(u32, f64)> {
        self.top_raw_with(m, user, count, Accumulation::Auto)
    }

    /// [`CandidateGenerator::top_raw`] with the accumulation chosen by the caller (both
    /// give the same result bit for bit; tests and benches compare them).
    #[doc(hidden)]
    pub fn top_raw_with(&mut self, m: &InteractionMatrix, user: u32, count: usize, how: Accumulation) -> Vec<(u32, f64)> {
        let stamp = self.begin(m.n_users());
        if self.accumulate_exact(m, user, stamp, how) {
            self.select_dense(m, count, stamp)
        } else {
            self.select(m, count, stamp, true)
        }
    }

    /// Like [`CandidateGenerator::top_raw`], but raw(j) sums only over the precomputed
    /// neighbour lists: raw(j) = sum over h in H with j in N(h) of cos(h, j) * s_h. The
    /// user's history is read live, so an interaction shows in the next request at once;
    /// the lists may be stale (see [`NeighbourIndex`]).
    pub fn top_raw_from(&mut self, m: &InteractionMatrix, index: &NeighbourIndex, user: u32, count: usize) -> Vec<(u32, f64)> {
        let stamp = self.begin(m.n_users());
        let history = m.user_row(user);
        for &h in &history.idx {
            self.in_history[h as usize] = stamp;
        }
        self.raw_touched.clear();
        for (h, s_h) in history.iter() {
            // A video uploaded since the lists were built has none yet.
            for &(j, c) in index.lists.get(h as usize).map_or(&[][..], |l| &l[..]) {
                self.add_raw(j, c * s_h, stamp);
            }
        }
        for &j in &self.raw_touched {
            let r = &mut self.raw[j as usize];
            *r = quantize(*r);
        }
        self.select(m, count, stamp, false)
    }

    /// Adds to video j's raw score unless j is in the history (marks reset by stamp).
    #[inline]
    fn add_raw(&mut self, j: u32, delta: f64, stamp: u32) {
        let ju = j as usize;
        if self.in_history[ju] == stamp {
            return;
        }
        if self.raw_stamp[ju] != stamp {
            self.raw_stamp[ju] = stamp;
            self.raw[ju] = 0.0;
            self.raw_touched.push(j);
        }
        self.raw[ju] += delta;
    }

    /// Accumulates raw(j) for every video outside the history; returns whether it did so
    /// densely (see below).
    fn accumulate_exact(&mut self, m: &InteractionMatrix, user: u32, stamp: u32, how: Accumulation) -> bool {
        let history = m.user_row(user);
        for &h in &history.idx {
            self.in_history[h as usize] = stamp;
        }
        // w_v = sum over the history of (s_h / |h|) r_hv.
        self.weight_touched.clear();
        for (h, s_h) in history.iter() {
            let n_h = m.item_norm(h);
            if n_h == 0.0 {
                continue;
            }
            let f = s_h / n_h;
            for (v, r_hv) in m.item_row(h).iter() {
                let vu = v as usize;
                if self.weight_stamp[vu] != stamp {
                    self.weight_stamp[vu] = stamp;
                    self.weight[vu] = 0.0;
                    self.weight_touched.push(v);
                }
                self.weight[vu] += f * r_hv;
            }
        }
        // raw(j) |j| = sum_v r_jv w_v over videos outside the history. The user's own row
        // holds only history videos, so it is skipped. When the rows to walk hold about as
        // many entries as the catalogue has videos (as soon as a run's shown videos have
        // joined many histories), a dense pass is cheaper: every video's sum starts at 0
        // and is added to in the same order without marks or branches, history videos
        // included (they are left out at selection), and selection scans the catalogue.
        let n = m.n_items();
        let dense = match how {
            Accumulation::Sparse => false,
            Accumulation::Dense => true,
            Accumulation::Auto => {
                let mut entries = 0usize;
                for &v in &self.weight_touched {
                    if v != user {
                        entries += m.user_row(v).len();
                    }
                }
                entries * 2 >= n
            }
        };
        if dense {
            let raw = &mut self.raw[..n];
            raw.fill(0.0);
            for &v in &self.weight_touched {
                if v == user {
                    continue;
                }
                let w_v = self.weight[v as usize];
                let row = m.user_row(v);
                for (&j, &r_jv) in row.idx.iter().zip(&row.val) {
                    raw[j as usize] += w_v * r_jv;
                }
            }
            return true;
        }
        self.raw_touched.clear();
        for t in 0..self.weight_touched.len() {
            let v = self.weight_touched[t];
            if v == user {
                continue;
            }
            let w_v = self.weight[v as usize];
            for (j, r_jv) in m.user_row(v).iter() {
                self.add_raw(j, w_v * r_jv, stamp);
            }
        }
        false
    }

    /// raw(j) from an accumulated raw(j) |j|: 0 for a video whose row is all zero.
    #[inline]
    fn normalised(m: &InteractionMatrix, j: u32, acc: f64) -> f64 {
        let n_j = m.item_norm(j);
        if n_j == 0.0 {
            0.0
        } else {
            quantize(acc / n_j)
        }
    }

    /// The best `count` of the sparsely accumulated raw scores (see `top_raw`); with
    /// `normalise`, the sums are raw(j) |j|, divided by |j| and rounded here.
    ///
    /// Touched videos come in no particular order, so a video that ties the worst entry
    /// of a full list can still enter it by id. Once the list is full, a positive sum
    /// below t = worst - 2^-40 (one rounding step under it, so it cannot round up to a
    /// tie) cannot make the list: when its square is below |j|^2 t^2 (with a 2^-45
    /// relative margin for the roundings of that test) it skips the square root, the
    /// division and the rounding. Non-positive sums are normalised only when the list
    /// stays short (and then nothing was skipped).
    fn select(&mut self, m: &InteractionMatrix, count: usize, stamp: u32, normalise: bool) -> Vec<(u32, f64)> {
        let mut best = Best::new(count);
        let mut cut2 = f64::NEG_INFINITY;
        let norm2 = m.item_norms2();
        for t in 0..self.raw_touched.len() {
            let j = self.raw_touched[t];
            let acc = self.raw[j as usize];
            if acc <= 0.0 {
                continue;
            }
            let r = if normalise {
                if acc * acc <= norm2[j as usize] * cut2 {
                    continue;
                }
                let r = Self::normalised(m, j, acc);
                self.raw[j as usize] = r;
                r
            } else {
                acc
            };
            if r > 0.0 && best.offer(r, j) && normalise {
                if let Some(worst) = best.full_worst() {
                    let t = (worst - QUANTUM) * CUT_MARGIN;
                    cut2 = if t > 0.0 { t * t } else { f64::NEG_INFINITY };
                }
            }
        }
        let mut out = best.into_list();
        if out.len() < count {
            if normalise {
                for t in 0..self.raw_touched.len() {
                    let j = self.raw_touched[t];
                    let acc = self.raw[j as usize];
                    if acc < 0.0 {
                        self.raw[j as usize] = Self::normalised(m, j, acc);
                    }
                }
            }
            // The zero group: untouched videos and touched ones whose score is exactly 0.
            let (in_history, raw_stamp, raw) = (&self.in_history, &self.raw_stamp, &self.raw);
            let zeros = (0..m.n_items() as u32).filter(|&j| {
                let ju = j as usize;
                in_history[ju] != stamp && (raw_stamp[ju] != stamp || raw[ju] == 0.0)
            });
            let negatives = self.raw_touched.iter().map(|&j| (raw[j as usize], j)).filter(|s| s.0 < 0.0);
            complete_short_list(&mut out, count, zeros, negatives);
        }
        out
    }

    /// The best `count` of the densely accumulated raw scores: the same list as
    /// [`CandidateGenerator::select`]. The catalogue is scanned in id order, so a video
    /// only enters the list by scoring strictly above its worst entry. Until the list is
    /// full every positive sum is normalised; after that, a sum whose square is below
    /// |j|^2 times the worst entry's square (with a 2^-45 relative margin, far above the
    /// few roundings of the test) cannot make the list and skips the square root, the
    /// division and the rounding.
    fn select_dense(&mut self, m: &InteractionMatrix, count: usize, stamp: u32) -> Vec<(u32, f64)> {
        let n = m.n_items();
        let mut best = Best::new(count);
        let mut cut2 = f64::NEG_INFINITY;
        let norm2 = &m.item_norms2()[..n];
        let in_history = &self.in_history[..n];
        let raw = &self.raw[..n];
        // Blocks of 16 videos: the tests of a block are made without branches into a bit
        // mask, and only the videos it marks are looked at (once the list is full, few
        // are), so the scan does not pay a misprediction for every untouched or history
        // video. A mask made before the cut rose only lets more videos through.
        const BLOCK: usize = 16;
        for start in (0..n).step_by(BLOCK) {
            let end = (start + BLOCK).min(n);
            let mut mask = 0u32;
            for (i, ((&acc, &h), &n2)) in raw[start..end].iter().zip(&in_history[start..end]).zip(&norm2[start..end]).enumerate()
            {
                let pass = (acc > 0.0) & (h != stamp) & (acc * acc > n2 * cut2);
                mask |= (pass as u32) << i;
            }
            while mask != 0 {
                let j = start + mask.trailing_zeros() as usize;
                mask &= mask - 1;
                let r = Self::normalised(m, j as u32, raw[j]);
                if r > 0.0 && best.offer(r, j as u32) {
                    if let Some(worst) = best.full_worst() {
                        let w = worst * CUT_MARGIN;
                        cut2 = w * w;
                    }
                }
            }
        }
        let mut out = best.into_list();
        if out.len() < count {
            // Not enough positive scores (rare: a history with almost no co-viewers).
            let scored: Vec<(u32, f64)> = (0..n as u32)
                .filter(|&j| self.in_history[j as usize] != stamp)
                .map(|j| (j, Self::normalised(m, j, self.raw[j as usize])))
                .collect();
            let zeros = scored.iter().filter(|x| x.1 == 0.0).map(|x| x.0);
            let negatives = scored.iter().filter(|x| x.1 < 0.0).map(|&(j, s)| (s, j));
            complete_short_list(&mut out, count, zeros, negatives);
        }
        out
    }

    /// The candidates for a user: the top `config.count` by raw score (exact, or from
    /// `index` when given), rescored with the business weights and ordered by final score
    /// (ties by video id). `views`: each video's view count now.
    pub fn candidates(
        &mut self,
        m: &InteractionMatrix,
        index: Option<&NeighbourIndex>,
        user: &User,
        videos: &[Video],
        views: &[u64],
        config: &CandidateConfig,
    ) -> Vec<Candidate> {
        let top = match index {
            Some(ix) => self.top_raw_from(m, ix, user.id, config.count),
            None => self.top_raw(m, user.id, config.count),
        };
        rescore(&top, user, videos, views, config)
    }
}

/// How an exact candidate request accumulates its sums (the result is the same).
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accumulation {
    /// Dense when the rows to walk hold at least half as many entries as the catalogue
    /// has videos, sparse otherwise.
    Auto,
    /// Touched videos marked and listed; selection reads only those.
    Sparse,
    /// Every video's sum, without marks; selection scans the catalogue.
    Dense,
}

/// The best `count` (score, video) offers, best first, ties by id: a short sorted list
/// that an offer enters only when it beats the worst entry of a full list.
struct Best {
    count: usize,
    list: Vec<(f64, u32)>,
}

impl Best {
    fn new(count: usize) -> Best {
        Best { count, list: Vec::with_capacity(count + 1) }
    }

    /// Offers a score; returns whether it entered the list.
    #[inline]
    fn offer(&mut self, score: f64, j: u32) -> bool {
        if self.count == 0 {
            return false;
        }
        if self.list.len() == self.count {
            let &(ws, wj) = self.list.last().expect("a full list");
            if by_score_then_id((score, j), (ws, wj)) != std::cmp::Ordering::Less {
                return false;
            }
            self.list.pop();
        }
        let at = self.list.partition_point(|&x| by_score_then_id(x, (score, j)) == std::cmp::Ordering::Less);
        self.list.insert(at, (score, j));
        true
    }

    /// The worst score once the list is full.
    fn full_worst(&self) -> Option<f64> {
        (self.list.len() == self.count).then(|| self.list.last().map(|x| x.0)).flatten()
    }

    fn into_list(self) -> Vec<(u32, f64)> {
        self.list.into_iter().map(|(s, j)| (j, s)).collect()
    }
}

/// Precomputed top-k item neighbours by cosine, for candidate requests whose cost must
/// not depend on how popular the user's videos are. Built from the matrix as it was; it
/// goes stale as interactions arrive, and is rebuilt on a cadence.
#[derive(Debug, Clone, Default)]
pub struct NeighbourIndex {
    /// Per video: (neighbour, cosine), best first, ties by id.
    pub lists: Vec<Vec<(u32, f64)>>,
    pub k: usize,
}

impl NeighbourIndex {
    /// Exact top-`k` neighbours of every video, on `threads` threads.
    pub fn build(m: &InteractionMatrix, k: usize, threads: usize) -> NeighbourIndex {
        NeighbourIndex { lists: item_neighbours(m, k, threads), k }
    }
}

/// The user rows copied into one contiguous CSR of (item rank, score) entries for the
/// neighbour build. The build reads one random user row per (item, user) entry, so it is
/// bound by memory: from the matrix's per-user vectors that is three dependent cache misses
/// (the row header, then its ids and its scores), here one offset and one stream of
/// entries that the walk prefetches a few users ahead.
///
/// Scores are stored as `f32` when every one of them is exactly an `f32` (the default
/// scores and their sums are), which halves the stream; the products are still taken in
/// `f64`, so the lists are bit for bit those of an `f64` walk. Otherwise they stay `f64`.
///
/// Items are relabelled by rank of popularity (most users first, ties by id), so that the
/// popular items, which take most of the walk's additions, share a few cache lines of the
/// dot-product scratch array.
struct UserRows<S> {
    ptr: Vec<usize>,
    ent: Vec<(u32, S)>,
    /// rank -> item id.
    item: Vec<u32>,
    /// item id -> rank.
    rank: Vec<u32>,
}

/// A stored score: `f32` (when exact) or `f64`.
trait StoredScore: Copy + Send + Sync {
    fn from_f64(x: f64) -> Self;
    fn get(self) -> f64;
}

impl StoredScore for f32 {
    #[inline(always)]
    fn from_f64(x: f64) -> f32 {
        x as f32
    }
    #[inline(always)]
    fn get(self) -> f64 {
        self as f64
    }
}

impl StoredScore for f64 {
    #[inline(always)]
    fn from_f64(x: f64) -> f64 {
        x
    }
    #[inline(always)]
    fn get(self) -> f64 {
        self
    }
}

/// Whether every score in the matrix survives a round trip through `f32` unchanged.
fn scores_fit_f32(m: &InteractionMatrix) -> bool {
    (0..m.n_users() as u32).all(|u| m.user_row(u).val.iter().all(|&x| (x as f32) as f64 == x))
}

impl<S: StoredScore> UserRows<S> {
    fn new(m: &InteractionMatrix) -> UserRows<S> {
        let n = m.n_items() as u32;
        let mut item: Vec<u32> = (0..n).collect();
        item.sort_by_key(|&j| (std::cmp::Reverse(m.item_row(j).len()), j));
        let mut rank = vec![0u32; n as usize];
        for (r, &j) in item.iter().enumerate() {
            rank[j as usize] = r as u32;
        }
        let mut ptr = Vec::with_capacity(m.n_users() + 1);
        let mut ent = Vec::with_capacity(m.nnz());
        ptr.push(0);
        for u in 0..m.n_users() as u32 {
            let r = m.user_row(u);
            ent.extend(r.iter().map(|(j, x)| (rank[j as usize], S::from_f64(x))));
            ptr.push(ent.len());
        }
        UserRows { ptr, ent, item, rank }
    }

    /// Asks the cache for user `v`'s row offset (a first stage, so that `prefetch_row` a
    /// few users later does not wait for it).
    #[inline(always)]
    fn prefetch_offset(&self, v: u32) {
        prefetch(self.ptr.as_ptr().wrapping_add(v as usize));
    }

    /// Asks the cache for every line of user `v`'s entries.
    #[inline(always)]
    fn prefetch_row(&self, v: u32) {
        let (a, b) = (self.ptr[v as usize], self.ptr[v as usize + 1]);
        let start = self.ent.as_ptr().wrapping_add(a).cast::<u8>();
        let bytes = (b - a) * std::mem::size_of::<(u32, S)>();
        for off in (0..bytes).step_by(64) {
            prefetch(start.wrapping_add(off));
        }
    }

    #[inline(always)]
    fn row(&self, v: u32) -> &[(u32, S)] {
        &self.ent[self.ptr[v as usize]..self.ptr[v as usize + 1]]
    }
}

/// A cache hint: no effect on results, and none at all off x86-64.
#[inline(always)]
fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint; it never faults and dereferences nothing, so
    // any address (even one past a vector's end) is fine.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// How many users ahead the neighbour build prefetches rows (offsets twice as far).
const PREFETCH_AHEAD: usize = 4;

/// Exact top-`k` neighbours by cosine of every item, computed item by item over the
/// two-hop walk item -> users -> items, on `threads` threads. Returns (neighbour, cosine)
/// lists ordered by cosine descending, ties by id; items that share no user are absent.
///
/// Threads take items in small blocks from a shared counter, so a thread that draws the
/// most popular items does not finish last by itself (popularity is skewed at scale).
pub fn item_neighbours(m: &InteractionMatrix, k: usize, threads: usize) -> Vec<Vec<(u32, f64)>> {
    if scores_fit_f32(m) {
        neighbours_with(m, k, threads, UserRows::<f32>::new(m))
    } else {
        neighbours_with(m, k, threads, UserRows::<f64>::new(m))
    }
}

fn neighbours_with<S: StoredScore>(m: &InteractionMatrix, k: usize, threads: usize, rows: UserRows<S>) -> Vec<Vec<(u32, f64)>> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    const BLOCK: usize = 64;
    let n = m.n_items();
    let threads = threads.max(1).min(n.div_ceil(BLOCK).max(1));
    // By rank, like the scratch arrays.
    let norms: Vec<f64> = rows.item.iter().map(|&j| m.item_norm(j)).collect();
    let next = AtomicUsize::new(0);
    let out: Mutex<Vec<Vec<(u32, f64)>>> = Mutex::new(vec![Vec::new(); n]);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                let mut dot = vec![0.0f64; n];
                let mut touched: Vec<u32> = Vec::new();
                let mut top = TopK::new(k);
                let mut block: Vec<Vec<(u32, f64)>> = Vec::with_capacity(BLOCK);
                loop {
                    let start = next.fetch_add(BLOCK, Ordering::Relaxed);
                    if start >= n {
                        break;
                    }
                    let end = (start + BLOCK).min(n);
                    block.clear();
                    for i in start as u32..end as u32 {
                        block.push(neighbours_of(m, &rows, &norms, i, &mut dot, &mut touched, &mut top));
                    }
                    let mut out = out.lock().unwrap_or_else(|e| e.into_inner());
                    for (slot, list) in out[start..end].iter_mut().zip(block.drain(..)) {
                        *slot = list;
                    }
                }
            });
        }
    });
    out.into_inner().unwrap_or_else(|e| e.into_inner())
}

/// One item's exact top-`k` neighbour list (see [`item_neighbours`]). `dot` (indexed by
/// rank, like `norms`) is all zero on entry and is left so.
///
/// A video is marked as touched by its dot product being nonzero: one that sums back to
/// exactly 0 may be listed twice, and it (like any video at 0) is skipped when read, as a
/// cosine of 0 is never a neighbour. Most videos touched score far below the k-th best,
/// so [`TopK`] drops them before any rounding or sorting.
fn neighbours_of<S: StoredScore>(
    m: &InteractionMatrix,
    rows: &UserRows<S>,
    norms: &[f64],
    i: u32,
    dot: &mut [f64],
    touched: &mut Vec<u32>,
    top: &mut TopK,
) -> Vec<(u32, f64)> {
    let ni = m.item_norm(i);
    if ni == 0.0 {
        return Vec::new();
    }
    // `touched` is a buffer written without a branch: every entry is stored and the count
    // moves on only for a first touch (which is at random, so a branch would mispredict).
    let mut count = 0;
    let row = m.item_row(i);
    for (p, (v, r_iv)) in row.iter().enumerate() {
        if let Some(&ahead) = row.idx.get(p + 2 * PREFETCH_AHEAD) {
            rows.prefetch_offset(ahead);
        }
        if let Some(&ahead) = row.idx.get(p + PREFETCH_AHEAD) {
            rows.prefetch_row(ahead);
        }
        let entries = rows.row(v);
        if touched.len() < count + entries.len() {
            touched.resize((count + entries.len()).max(2 * touched.len()), 0);
        }
        for &(j, r_jv) in entries {
            let d = &mut dot[j as usize];
            touched[count] = j;
            count += (*d == 0.0) as usize;
            *d += r_iv * r_jv.get();
        }
    }
    // The item itself was accumulated too (it is in every one of its users' rows).
    dot[rows.rank[i as usize] as usize] = 0.0;
    top.clear();
    let n = norms.len();
    if count * 4 > n {
        // Popular items touch much of the catalogue: then one pass in rank order reads
        // `dot` and `norms` sequentially instead of at random, and decides without a
        // branch per video whether it can make the list (a zero, or 0 / 0, cannot).
        for j in 0..n {
            let d = dot[j];
            dot[j] = 0.0;
            let c = d / (ni * norms[j]);
            if c >= top.cut && d != 0.0 {
                top.offer(c, rows.item[j]);
            }
        }
    } else {
        for &j in &touched[..count] {
            let d = dot[j as usize];
            if d != 0.0 {
                dot[j as usize] = 0.0;
                let nj = norms[j as usize];
                if nj != 0.0 {
                    top.offer(d / (ni * nj), rows.item[j as usize]);
                }
            }
        }
    }
    top.finish()
}

/// The best `k` of a stream of (unrounded cosine, video) pairs by the rounded cosine
/// (ties by id, zeros dropped), keeping only what can still make the list.
///
/// Rounding ([`quantize`]) is monotone, so once `k` offers have an unrounded cosine of at
/// least c, the final k-th best rounds to at least q = quantize(c); every member of the
/// final list then has an unrounded cosine of at least q - 2^-41, and an offer below
/// q - 2^-39 can be dropped unseen. Only when q > 0: with the zeros dropped, a non-positive
/// cut could exclude a negative cosine that still belongs in the list. The result is the
/// same as rounding, filtering and sorting every offer.
struct TopK {
    k: usize,
    buf: Vec<(f64, u32)>,
    cap: usize,
    cut: f64,
}

impl TopK {
    fn new(k: usize) -> TopK {
        let cap = (4 * k).max(64);
        TopK { k, buf: Vec::with_capacity(cap), cap, cut: f64::NEG_INFINITY }
    }

    fn clear(&mut self) {
        self.buf.clear();
        self.cap = (4 * self.k).max(64);
        self.cut = f64::NEG_INFINITY;
    }

    #[inline]
    fn offer(&mut self, c: f64, j: u32) {
        if c < self.cut {
            return;
        }
        self.buf.push((c, j));
        if self.buf.len() >= self.cap {
            self.compact();
        }
    }

    fn compact(&mut self) {
        if self.k > 0 && self.buf.len() > self.k {
            let (_, kth, _) = self.buf.select_nth_unstable_by(self.k - 1, |a, b| b.0.total_cmp(&a.0));
            let q = quantize(kth.0);
            if q > 0.0 {
                self.cut = self.cut.max(q - 2.0 * QUANTUM);
                let cut = self.cut;
                self.buf.retain(|x| x.0 >= cut);
            }
        }
        // Many offers at (nearly) the same value: let the buffer grow rather than compact
        // for every offer.
        if self.buf.len() * 2 > self.cap {
            self.cap *= 2;
        }
    }

    /// (video, rounded cosine), best first, ties by id.
    fn finish(&mut self) -> Vec<(u32, f64)> {
        let mut cand: Vec<(f64, u32)> = self.buf.iter().map(|&(c, j)| (quantize(c), j)).filter(|x| x.0 != 0.0).collect();
        let by = |a: &(f64, u32), b: &(f64, u32)| by_score_then_id(*a, *b);
        if cand.len() > self.k {
            cand.select_nth_unstable_by(self.k, by);
            cand.truncate(self.k);
        }
        cand.sort_by(by);
        // A fresh, exact-size list, so no list keeps a scratch buffer's capacity.
        let mut list = Vec::with_capacity(cand.len());
        list.extend(cand.iter().map(|&(c, j)| (j, c)));
        list
    }
}

/// Applies the business weights to (video, raw) pairs and orders by final score
/// (`views`: each video's view count now).
pub fn rescore(top: &[(u32, f64)], user: &User, videos: &[Video], views: &[u64], config: &CandidateConfig) -> Vec<Candidate> {
    let mut out: Vec<Candidate> = top
        .iter()
        .map(|&(j, raw)| {
            let (v, views) = (&videos[j as usize], views[j as usize]);
            let interest_match = user.is_interested_in(v.category);
            let final_score = config.w_similarity * raw
                + config.w_popularity * (config.popularity_scale * views as f64)
                + config.w_interest * if interest_match { 1.0 } else { 0.0 };
            Candidate { video: j, category: v.category, raw, final_score, views, interest_match }
        })
        .collect();
    out.sort_by(|a, b| by_score_then_id((a.final_score, a.video), (b.final_score, b.video)));
    out
}

/// The candidates of a user with no interaction yet (a sign-up): similarity has nothing
/// to go on, so the best `config.count` of the catalogue's first `n_videos` videos by the
/// business weights alone (popularity and interest; raw 0), ordered as [`rescore`] orders.
pub fn cold_start(n_videos: usize, user: &User, videos: &[Video], views: &[u64], config: &CandidateConfig) -> Vec<Candidate> {
    let all: Vec<(u32, f64)> = (0..n_videos as u32).map(|j| (j, 0.0)).collect();
    let mut out = rescore(&all, user, videos, views, config);
    out.truncate(config.count);
    out
}

/// Keeps up to `slots` of `list` (a user's candidates, at most `count`, ordered by
/// [`rescore`]) for fresh videos (docs/model.md: Days and weeks): the best by the business
/// weights (raw 0; `score` rescores) of `fresh` that are neither in `history` nor already
/// on the list take the places of the list's last entries, and the list is ordered again.
/// With fewer fresh videos than slots, the list keeps more of its own.
pub fn add_fresh(
    list: &mut Vec<Candidate>,
    fresh: std::ops::Range<u32>,
    history: &SparseRow,
    (slots, count): (usize, usize),
    score: impl FnOnce(&[(u32, f64)]) -> Vec<Candidate>,
) {
    let new: Vec<(u32, f64)> =
        fresh.filter(|&j| history.get(j).is_none() && !list.iter().any(|c| c.video == j)).map(|j| (j, 0.0)).collect();
    if new.is_empty() || slots == 0 {
        return;
    }
    let mut new = score(&new);
    new.truncate(slots);
    list.truncate(count.saturating_sub(new.len()));
    list.append(&mut new);
    list.sort_by(|a, b| by_score_then_id((a.final_score, a.video), (b.final_score, b.video)));
}

/// The obvious dense computation, for tests and for checking the fast path: raw scores of
/// every video outside the history (None inside it).
pub fn dense_raw_scores(m: &InteractionMatrix, user: u32) -> Vec<Option<f64>> {
    let n = m.n_items();
    let nu = m.n_users();
    let dense: Vec<Vec<f64>> = (0..n as u32).map(|i| (0..nu as u32).map(|u| m.get(i, u).unwrap_or(0.0)).collect()).collect();
    let norm: Vec<f64> = dense.iter().map(|r| r.iter().map(|x| x * x).sum::<f64>().sqrt()).collect();
    let cos = |a: usize, b: usize| {
        if norm[a] == 0.0 || norm[b] == 0.0 {
            0.0
        } else {
            dense[a].iter().zip(&dense[b]).map(|(x, y)| x * y).sum::<f64>() / (norm[a] * norm[b])
        }
    };
    let history: Vec<(usize, f64)> = (0..n).filter_map(|i| m.get(i as u32, user).map(|s| (i, s))).collect();
    (0..n)
        .map(|j| {
            if history.iter().any(|&(h, _)| h == j) {
                None
            } else {
                Some(quantize(history.iter().map(|&(h, s)| cos(h, j) * s).sum()))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: u32, interests: [u16; 2]) -> User {
        User { id, age: 20, gender: 0, region: 0, interests }
    }

    /// The branch-free rounding is `f64::round` (half away from zero, sign of zero kept)
    /// on halves, near-halves, tiny and huge values, and random ones.
    #[test]
    fn quantize_rounds_like_round() {
        use rand::{Rng, SeedableRng};
        const SCALE: f64 = (1u64 << 40) as f64;
        let reference = |x: f64| (x * SCALE).round() / SCALE;
        let mut xs = vec![0.0, -0.0, 1e-300, -1e-300, f64::INFINITY, f64::NEG_INFINITY, 1e300, -1e300, 4096.0, -3.5];
        for k in [0i64, 1, 2, 3, 1 << 20, (1 << 52) - 1, 1 << 52, (1 << 53) + 2, (1 << 61) + 4096] {
            for sign in [1.0, -1.0] {
                let y = sign * k as f64;
                for d in [-0.5, 0.5, -0.25, 0.75, 0.0] {
                    xs.push((y + d) / SCALE);
                    xs.push(f64::from_bits(((y + d) / SCALE).to_bits() + 1));
                    xs.push(f64::from_bits(((y + d) / SCALE).to_bits().saturating_sub(1)));
                }
            }
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for _ in 0..100_000 {
            let e = rng.random_range(-60..30);
            let x: f64 = rng.random_range(-1.0..1.0) * 2f64.powi(e);
            xs.push(x);
        }
        for x in xs {
            assert_eq!(quantize(x).to_bits(), reference(x).to_bits(), "x = {x:e}");
        }
        assert!(quantize(f64::NAN).is_nan());
    }

    #[test]
    fn hand_made_example() {
        // Users 0 and 1 both like videos 0 and 1; user 1 also liked 2 and skipped 3.
        let m = InteractionMatrix::from_triplets(
            5,
            2,
            [(0, 0, 2.0), (1, 0, 2.0), (0, 1, 2.0), (1, 1, 2.0), (2, 1, 2.0), (3, 1, -2.0)],
        );
        let mut g = CandidateGenerator::new(5);
        let top = g.top_raw(&m, 0, 3);
        // Video 2 co-occurs positively, 4 never co-occurs (0), 3 negatively.
        assert_eq!(top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![2, 4, 3]);
        assert!(top[0].1 > 0.0 && top[1].1 == 0.0 && top[2].1 < 0.0);
        let dense = dense_raw_scores(&m, 0);
        assert!((dense[2].unwrap() - top[0].1).abs() < 1e-12);
        assert!((dense[3].unwrap() - top[2].1).abs() < 1e-12);
        assert_eq!(dense[0], None);
    }

    #[test]
    fn rescoring_orders_by_final_score_with_ties_by_id() {
        let videos: Vec<Video> =
            (0..3).map(|id| Video { id, category: id as u16, creator: 0, duration_s: 6.0, views: 10, quality: 0.0 }).collect();
        let c = CandidateConfig::default();
        let u = user(0, [2, 5]);
        let out = rescore(&[(0, 0.0), (1, 0.0), (2, 0.0)], &u, &videos, &[10; 3], &c);
        // Video 2 matches an interest (+0.3); 0 and 1 tie and keep id order.
        assert_eq!(out.iter().map(|x| x.video).collect::<Vec<_>>(), vec![2, 0, 1]);
        assert!((out[1].final_score - 0.1 * 0.1 * 10.0).abs() < 1e-12);
        assert!((out[0].final_score - (0.1 + 0.3)).abs() < 1e-12);
    }
}
