//! The fast candidate path against the obvious dense computation, on random small worlds,
//! before and after online updates; and the online matrix against a rebuild.

use fypsim::config::CandidateConfig;
use fypsim::platform::candidates::{
    dense_raw_scores, item_neighbours, quantize, rescore, Accumulation, CandidateGenerator, NeighbourIndex,
};
use fypsim::platform::matrix::InteractionMatrix;
use fypsim::world::{User, Video};
use proptest::prelude::*;

const SCORES: [f64; 4] = [1.0, 2.0, -2.0, -0.5];

/// (video, user, score) triplets.
type Triplets = Vec<(u32, u32, f64)>;

fn world() -> impl Strategy<Value = (usize, usize, Triplets, Triplets)> {
    (2usize..25, 1usize..10).prop_flat_map(|(n_items, n_users)| {
        let triplet = (0..n_items as u32, 0..n_users as u32, prop::sample::select(SCORES.to_vec()));
        (Just(n_items), Just(n_users), prop::collection::vec(triplet.clone(), 0..60), prop::collection::vec(triplet, 0..30))
    })
}

/// Checks that `fast` is a valid top-k of the dense scores: same values (within rounding)
/// and nothing left out scores better than anything taken (ties by id, up to rounding).
fn check_top(m: &InteractionMatrix, user: u32, k: usize, g: &mut CandidateGenerator) -> Result<(), TestCaseError> {
    let dense = dense_raw_scores(m, user);
    let fast = g.top_raw(m, user, k);
    let eligible = dense.iter().filter(|d| d.is_some()).count();
    prop_assert_eq!(fast.len(), k.min(eligible));
    // Both paths quantize to 2^-40, so they agree up to one quantum or so.
    let eps = 1e-11;
    let mut chosen = vec![false; dense.len()];
    for &(j, s) in &fast {
        let d = dense[j as usize];
        prop_assert!(d.is_some(), "video {} is in the history", j);
        prop_assert!((d.unwrap() - s).abs() < eps, "video {}: fast {} dense {:?}", j, s, d);
        prop_assert!(!chosen[j as usize], "video {} twice", j);
        chosen[j as usize] = true;
    }
    // Ordered by score descending, ties by id.
    for w in fast.windows(2) {
        prop_assert!(w[0].1 > w[1].1 - eps, "not descending: {:?}", fast);
        if w[0].1 == w[1].1 {
            prop_assert!(w[0].0 < w[1].0, "ties not by id: {:?}", fast);
        }
    }
    if let Some(&(_, worst)) = fast.last() {
        for (j, d) in dense.iter().enumerate() {
            if let (Some(d), false) = (d, chosen[j]) {
                prop_assert!(*d <= worst + eps, "video {} scores {} above the worst chosen {}", j, d, worst);
            }
        }
    }
    Ok(())
}

/// With lists long enough to hold every co-occurring video, neighbour-list candidates
/// are the exact ones.
fn check_neighbours_equal_exact(
    m: &InteractionMatrix,
    user: u32,
    k: usize,
    g: &mut CandidateGenerator,
) -> Result<(), TestCaseError> {
    let index = NeighbourIndex::build(m, m.n_items(), 2);
    let exact = g.top_raw(m, user, k);
    let approx = g.top_raw_from(m, &index, user, k);
    prop_assert_eq!(exact.len(), approx.len());
    for (e, a) in exact.iter().zip(&approx) {
        prop_assert!((e.1 - a.1).abs() < 1e-9, "{:?} vs {:?}", exact, approx);
    }
    Ok(())
}

/// Item-neighbour lists by the definition: every other video with a nonzero rounded
/// cosine, best first, ties by id, cut to k.
fn brute_force_neighbours(m: &InteractionMatrix, k: usize) -> Vec<Vec<(u32, f64)>> {
    (0..m.n_items() as u32)
        .map(|i| {
            let mut all: Vec<(u32, f64)> = (0..m.n_items() as u32)
                .filter(|&j| j != i)
                .map(|j| (j, quantize(m.cosine(i, j))))
                .filter(|x| x.1 != 0.0)
                .collect();
            all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            all.truncate(k);
            all
        })
        .collect()
}

/// A world with many videos per user, so that one video's two-hop walk touches more videos
/// than the neighbour build keeps (its early cut) and sometimes most of the catalogue (its
/// dense pass); few distinct scores, so cosines tie often.
/// Scores are the defaults, or multiples of 0.1 (not exact in `f32`, so the build keeps
/// `f64` scores).
fn crowded_world() -> impl Strategy<Value = (usize, usize, Vec<(u32, u32, f64)>)> {
    (2usize..400, 1usize..12, prop::bool::ANY).prop_flat_map(|(n_items, n_users, tenths)| {
        let scale = if tenths { 0.1 } else { 1.0 };
        let score = prop::sample::select(SCORES.to_vec()).prop_map(move |s| s * scale);
        let triplet = (0..n_items as u32, 0..n_users as u32, score);
        (Just(n_items), Just(n_users), prop::collection::vec(triplet, 0..1500))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// The neighbour build (prefetching, early cut, dense or sparse pass, any thread count)
    /// gives exactly the lists of the definition.
    #[test]
    fn neighbour_lists_equal_brute_force((n_items, n_users, triplets) in crowded_world(), k in 1usize..12, threads in 1usize..4) {
        let m = InteractionMatrix::from_triplets(n_items, n_users, triplets);
        let fast = item_neighbours(&m, k, threads);
        let slow = brute_force_neighbours(&m, k);
        for (i, (f, s)) in fast.iter().zip(&slow).enumerate() {
            prop_assert_eq!(f, s, "video {}", i);
        }
    }

    /// The two accumulations of an exact request (marks and touched lists, or a dense
    /// pass with a branch-free scan and an early cut) give the same list bit for bit,
    /// on crowded worlds (the cut engages, ties are common) and on sparse ones (short
    /// lists fall back to the zero group and negative scores), before and after updates.
    #[test]
    fn sparse_and_dense_accumulation_agree((n_items, n_users, triplets) in crowded_world(), small in world(), k in 1usize..12) {
        let check = |m: &InteractionMatrix, g: &mut CandidateGenerator, u: u32, k: usize| -> Result<(), TestCaseError> {
            let sparse = g.top_raw_with(m, u, k, Accumulation::Sparse);
            let dense = g.top_raw_with(m, u, k, Accumulation::Dense);
            let auto = g.top_raw_with(m, u, k, Accumulation::Auto);
            let bits = |l: &[(u32, f64)]| l.iter().map(|&(j, s)| (j, s.to_bits())).collect::<Vec<_>>();
            prop_assert_eq!(bits(&sparse), bits(&dense), "user {} k {}", u, k);
            prop_assert_eq!(bits(&sparse), bits(&auto), "user {} k {}", u, k);
            Ok(())
        };
        let m = InteractionMatrix::from_triplets(n_items, n_users, triplets);
        let mut g = CandidateGenerator::new(n_items);
        for u in 0..n_users as u32 {
            check(&m, &mut g, u, k)?;
        }
        // A small world, small enough that lists often run out of positive scores.
        let (n_items, n_users, initial, updates) = small;
        let mut m = InteractionMatrix::from_triplets(n_items, n_users, initial);
        let mut g = CandidateGenerator::new(n_items);
        for &(i, u, s) in &updates {
            m.add(i, u, s);
            check(&m, &mut g, u, k)?;
            check(&m, &mut g, (u + 1) % n_users as u32, k)?;
        }
    }

    #[test]
    fn candidates_match_dense_brute_force((n_items, n_users, initial, updates) in world(), k in 1usize..8) {
        let mut m = InteractionMatrix::from_triplets(n_items, n_users, initial.clone());
        let mut g = CandidateGenerator::new(n_items);
        for u in 0..n_users as u32 {
            check_top(&m, u, k, &mut g)?;
        }
        // Online updates, checking after each one for the user it touched and another.
        let mut all = initial;
        for &(i, u, s) in &updates {
            m.add(i, u, s);
            all.push((i, u, s));
            check_top(&m, u, k, &mut g)?;
            check_top(&m, (u + 1) % n_users as u32, k, &mut g)?;
        }
        for u in 0..n_users as u32 {
            check_neighbours_equal_exact(&m, u, k, &mut g)?;
        }
        let rebuilt = InteractionMatrix::from_triplets(n_items, n_users, all);
        let (online, fresh) = (m.to_csr(), rebuilt.to_csr());
        prop_assert_eq!(online.indptr().to_owned().raw_storage().to_vec(), fresh.indptr().to_owned().raw_storage().to_vec());
        prop_assert_eq!(online.indices(), fresh.indices());
        for (a, b) in online.data().iter().zip(fresh.data()) {
            prop_assert!((a - b).abs() < 1e-9);
        }
        prop_assert!(m.norm_drift() < 1e-9);
    }

    #[test]
    fn rescoring_matches_the_formula(raws in prop::collection::vec(-3.0f64..3.0, 1..10), views in prop::collection::vec(0u64..500, 10)) {
        let videos: Vec<Video> = (0..10u32)
            .map(|id| Video { id, category: (id % 4) as u16, creator: 0, duration_s: 6.0, views: views[id as usize], quality: 0.0 })
            .collect();
        let user = User { id: 0, age: 20, gender: 0, region: 0, interests: [1, 2] };
        let c = CandidateConfig::default();
        let top: Vec<(u32, f64)> = raws.iter().enumerate().map(|(j, &r)| (j as u32, r)).collect();
        let out = rescore(&top, &user, &videos, &views, &c);
        prop_assert_eq!(out.len(), raws.len());
        for cand in &out {
            let v = &videos[cand.video as usize];
            let interest = if v.category == 1 || v.category == 2 { 1.0 } else { 0.0 };
            let expect = 0.5 * raws[cand.video as usize] + 0.1 * (0.1 * views[cand.video as usize] as f64) + 0.3 * interest;
            prop_assert!((cand.final_score - expect).abs() < 1e-12);
        }
        for w in out.windows(2) {
            prop_assert!(w[0].final_score > w[1].final_score
                || (w[0].final_score == w[1].final_score && w[0].video < w[1].video));
        }
    }
}
