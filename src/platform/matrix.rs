//! The sparse item-user interaction matrix (docs/model.md: Item-user matrix).
//!
//! Entry (video, user) is the sum of that user's interaction scores for that video. The
//! bulk build is a counting sort of the triplets (checked against sprs's triplet
//! conversion in the tests; sprs also serves CSR exports); online updates go into sorted
//! per-row lists kept in both orientations (video -> users, user -> videos) together with
//! each video's squared norm, so one interaction costs O(row length) and never a rebuild.
//! An entry that exists with a summed score of 0 still marks the video as seen by the user.
//!
//! Rows are shared between copies of a matrix and copied on their first write, so many
//! environments over one world (the Python vector env, a run's training and evaluation
//! copies) hold one copy of the rows none of them changed.

use std::sync::Arc;

use sprs::CsMat;

/// One sparse row: column indices ascending, with their values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SparseRow {
    pub idx: Vec<u32>,
    pub val: Vec<f64>,
}

impl SparseRow {
    /// Adds `delta` at `col`, inserting the entry if absent. Returns the old value.
    fn add(&mut self, col: u32, delta: f64) -> Option<f64> {
        match self.idx.binary_search(&col) {
            Ok(k) => {
                let old = self.val[k];
                self.val[k] += delta;
                Some(old)
            }
            Err(k) => {
                self.idx.insert(k, col);
                self.val.insert(k, delta);
                None
            }
        }
    }

    /// Orders entries by column (stable, so equal columns keep their input order) and sums
    /// repeated columns in that order.
    fn sort_and_sum(&mut self) {
        if !self.idx.windows(2).all(|w| w[0] <= w[1]) {
            let mut pairs: Vec<(u32, f64)> = self.iter().collect();
            pairs.sort_by_key(|p| p.0);
            self.idx.clear();
            self.val.clear();
            self.idx.extend(pairs.iter().map(|p| p.0));
            self.val.extend(pairs.iter().map(|p| p.1));
        }
        let mut w = 0;
        for k in 0..self.idx.len() {
            if w > 0 && self.idx[w - 1] == self.idx[k] {
                self.val[w - 1] += self.val[k];
            } else {
                self.idx[w] = self.idx[k];
                self.val[w] = self.val[k];
                w += 1;
            }
        }
        if w < self.idx.len() {
            self.idx.truncate(w);
            self.val.truncate(w);
            self.idx.shrink_to_fit();
            self.val.shrink_to_fit();
        }
    }

    pub fn get(&self, col: u32) -> Option<f64> {
        self.idx.binary_search(&col).ok().map(|k| self.val[k])
    }

    pub fn len(&self) -> usize {
        self.idx.len()
    }

    pub fn is_empty(&self) -> bool {
        self.idx.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (u32, f64)> + '_ {
        self.idx.iter().copied().zip(self.val.iter().copied())
    }
}

/// The item-user matrix with both orientations and per-item norms, updated online.
#[derive(Debug, Clone, PartialEq)]
pub struct InteractionMatrix {
    items: Vec<Arc<SparseRow>>,
    users: Vec<Arc<SparseRow>>,
    item_norm2: Vec<f64>,
}

impl InteractionMatrix {
    /// An empty matrix of `n_items` x `n_users`.
    pub fn new(n_items: usize, n_users: usize) -> InteractionMatrix {
        InteractionMatrix {
            items: (0..n_items).map(|_| Arc::default()).collect(),
            users: (0..n_users).map(|_| Arc::default()).collect(),
            item_norm2: vec![0.0; n_items],
        }
    }

    /// Builds the matrix from (item, user, score) triplets; repeated pairs are summed, in
    /// input order.
    ///
    /// A two-pass counting sort, O(entries) in time and with no copy of the triplets:
    /// sprs's `TriMat::to_csr` holds the triplets twice with `usize` indices and sorts all
    /// of them, which at 27 million rows took most of the build time and set the process's
    /// peak memory. The result is checked against sprs in the tests. Input that arrives
    /// grouped by user (as the logged history does) needs no sort at all.
    ///
    /// # Panics
    /// If an index is out of range (the world generates them; no user input reaches here).
    pub fn from_triplets<I>(n_items: usize, n_users: usize, triplets: I) -> InteractionMatrix
    where
        I: IntoIterator<Item = (u32, u32, f64)>,
        I::IntoIter: Clone,
    {
        let iter = triplets.into_iter();
        let mut counts = vec![0u32; n_items];
        for (i, u, _) in iter.clone() {
            assert!(
                (i as usize) < n_items && (u as usize) < n_users,
                "triplet ({i}, {u}) outside a {n_items} x {n_users} matrix"
            );
            counts[i as usize] += 1;
        }
        let mut items = vec![SparseRow::default(); n_items];
        let mut users = vec![SparseRow::default(); n_users];
        let mut item_norm2 = vec![0.0; n_items];
        for (r, &c) in items.iter_mut().zip(&counts) {
            r.idx.reserve_exact(c as usize);
            r.val.reserve_exact(c as usize);
        }
        drop(counts);
        for (i, u, s) in iter {
            let r = &mut items[i as usize];
            r.idx.push(u);
            r.val.push(s);
        }
        let mut user_counts = vec![0u32; n_users];
        for (r, n2) in items.iter_mut().zip(item_norm2.iter_mut()) {
            r.sort_and_sum();
            *n2 = r.val.iter().map(|v| v * v).sum();
            for &u in &r.idx {
                user_counts[u as usize] += 1;
            }
        }
        for (r, &c) in users.iter_mut().zip(&user_counts) {
            r.idx.reserve_exact(c as usize);
            r.val.reserve_exact(c as usize);
        }
        // Items in ascending order, so every user row comes out sorted.
        for (i, r) in items.iter().enumerate() {
            for (u, s) in r.iter() {
                let ur = &mut users[u as usize];
                ur.idx.push(i as u32);
                ur.val.push(s);
            }
        }
        InteractionMatrix {
            items: items.into_iter().map(Arc::new).collect(),
            users: users.into_iter().map(Arc::new).collect(),
            item_norm2,
        }
    }

    /// Copies a CSR (item x user) matrix into the online representation.
    pub fn from_csr(csr: &CsMat<f64>) -> InteractionMatrix {
        let (n_items, n_users) = csr.shape();
        let mut m = InteractionMatrix::new(n_items, n_users);
        let converted;
        let csr = if csr.is_csr() {
            csr
        } else {
            converted = csr.to_csr();
            &converted
        };
        for (i, row) in csr.outer_iterator().enumerate() {
            let r = Arc::make_mut(&mut m.items[i]);
            r.idx = row.indices().iter().map(|&u| u as u32).collect();
            r.val = row.data().to_vec();
            m.item_norm2[i] = r.val.iter().map(|v| v * v).sum();
        }
        let csc = csr.to_csc();
        for (u, col) in csc.outer_iterator().enumerate() {
            let r = Arc::make_mut(&mut m.users[u]);
            r.idx = col.indices().iter().map(|&i| i as u32).collect();
            r.val = col.data().to_vec();
        }
        m
    }

    /// A CSR (item x user) snapshot, e.g. to export or to compute with sprs.
    pub fn to_csr(&self) -> CsMat<f64> {
        let mut indptr = Vec::with_capacity(self.items.len() + 1);
        let mut indices = Vec::with_capacity(self.nnz());
        let mut data = Vec::with_capacity(self.nnz());
        indptr.push(0usize);
        for r in &self.items {
            indices.extend(r.idx.iter().map(|&u| u as usize));
            data.extend_from_slice(&r.val);
            indptr.push(indices.len());
        }
        CsMat::new((self.items.len(), self.users.len()), indptr, indices, data)
    }

    /// Adds one interaction's score: O(length of the two rows touched).
    pub fn add(&mut self, item: u32, user: u32, score: f64) {
        let old = Arc::make_mut(&mut self.items[item as usize]).add(user, score).unwrap_or(0.0);
        Arc::make_mut(&mut self.users[user as usize]).add(item, score);
        let new = old + score;
        // Incremental norm; clamp guards against rounding below zero.
        let n2 = &mut self.item_norm2[item as usize];
        *n2 = (*n2 + new * new - old * old).max(0.0);
    }

    pub fn n_items(&self) -> usize {
        self.items.len()
    }

    /// Adds an item (an uploaded video) with no interactions; returns its index.
    pub fn push_item(&mut self) -> u32 {
        self.items.push(Arc::default());
        self.item_norm2.push(0.0);
        (self.items.len() - 1) as u32
    }

    /// Adds a user (a sign-up) with no interactions; returns their index.
    pub fn push_user(&mut self) -> u32 {
        self.users.push(Arc::default());
        (self.users.len() - 1) as u32
    }

    /// Makes the given item rows (with their norms) and user rows equal to `other`'s, bit
    /// for bit: the undo of [`InteractionMatrix::add`]s that touched only those rows.
    pub fn copy_rows_from(&mut self, other: &InteractionMatrix, items: &[u32], users: &[u32]) {
        for &i in items {
            self.items[i as usize] = Arc::clone(&other.items[i as usize]);
            self.item_norm2[i as usize] = other.item_norm2[i as usize];
        }
        for &u in users {
            self.users[u as usize] = Arc::clone(&other.users[u as usize]);
        }
    }

    pub fn n_users(&self) -> usize {
        self.users.len()
    }

    /// Stored entries (including entries whose scores summed to zero).
    pub fn nnz(&self) -> usize {
        self.items.iter().map(|r| r.len()).sum()
    }

    /// The users who interacted with `item`, with summed scores.
    pub fn item_row(&self, item: u32) -> &SparseRow {
        &self.items[item as usize]
    }

    /// The videos `user` interacted with (their history H), with summed scores.
    pub fn user_row(&self, user: u32) -> &SparseRow {
        &self.users[user as usize]
    }

    /// The Euclidean norm of an item's row.
    pub fn item_norm(&self, item: u32) -> f64 {
        self.item_norm2[item as usize].sqrt()
    }

    /// Every item's squared norm, by item.
    pub fn item_norms2(&self) -> &[f64] {
        &self.item_norm2
    }

    pub fn get(&self, item: u32, user: u32) -> Option<f64> {
        self.items[item as usize].get(user)
    }

    /// Cosine similarity of two item rows (0 when either row is all zero).
    pub fn cosine(&self, a: u32, b: u32) -> f64 {
        let (na, nb) = (self.item_norm(a), self.item_norm(b));
        if na == 0.0 || nb == 0.0 {
            return 0.0;
        }
        let (ra, rb) = (self.item_row(a), self.item_row(b));
        let (mut i, mut j, mut dot) = (0, 0, 0.0);
        while i < ra.idx.len() && j < rb.idx.len() {
            match ra.idx[i].cmp(&rb.idx[j]) {
                std::cmp::Ordering::Less => i += 1,
                std::cmp::Ordering::Greater => j += 1,
                std::cmp::Ordering::Equal => {
                    dot += ra.val[i] * rb.val[j];
                    i += 1;
                    j += 1;
                }
            }
        }
        dot / (na * nb)
    }

    /// The largest relative difference of item norms against a recomputation from the
    /// rows (for tests of the incremental norms).
    pub fn norm_drift(&self) -> f64 {
        self.items
            .iter()
            .zip(&self.item_norm2)
            .map(|(r, &n2)| {
                let exact: f64 = r.val.iter().map(|v| v * v).sum();
                (exact - n2).abs() / exact.max(1.0)
            })
            .fold(0.0, f64::max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use sprs::TriMat;

    /// The counting-sort build equals sprs's triplet conversion, on unsorted input with
    /// repeated pairs (scores are multiples of 1/2, so every summation order is exact).
    #[test]
    fn build_equals_sprs_triplet_conversion() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for case in 0..200 {
            let (n_items, n_users) = (rng.random_range(1..30), rng.random_range(1..30));
            let n = rng.random_range(0..200);
            let triplets: Vec<(u32, u32, f64)> = (0..n)
                .map(|_| {
                    let i = rng.random_range(0..n_items) as u32;
                    let u = rng.random_range(0..n_users) as u32;
                    (i, u, rng.random_range(-4i32..=4) as f64 * 0.5)
                })
                .collect();
            let mut tri = TriMat::new((n_items, n_users));
            for &(i, u, s) in &triplets {
                tri.add_triplet(i as usize, u as usize, s);
            }
            let m = InteractionMatrix::from_triplets(n_items, n_users, triplets.iter().copied());
            assert_eq!(m.to_csr(), tri.to_csr(), "case {case}");
            assert_eq!(m, InteractionMatrix::from_csr(&tri.to_csr()), "case {case}");
        }
    }

    #[test]
    fn triplets_are_summed_and_both_orientations_agree() {
        let m = InteractionMatrix::from_triplets(3, 2, [(0, 0, 1.0), (0, 0, 2.0), (2, 1, -2.0), (1, 0, -0.5), (1, 0, 0.5)]);
        assert_eq!(m.get(0, 0), Some(3.0));
        assert_eq!(m.get(2, 1), Some(-2.0));
        // A pair whose scores cancel stays an entry: the user has seen the video.
        assert_eq!(m.get(1, 0), Some(0.0));
        assert_eq!(m.user_row(0).idx, vec![0, 1]);
        assert_eq!(m.nnz(), 3);
        assert!((m.item_norm(0) - 3.0).abs() < 1e-12);
    }

    #[test]
    fn online_adds_equal_a_rebuild() {
        let mut m = InteractionMatrix::from_triplets(4, 3, [(0, 0, 1.0), (1, 1, 2.0)]);
        m.add(0, 0, -2.0);
        m.add(3, 2, 1.0);
        m.add(1, 0, 2.0);
        let rebuilt = InteractionMatrix::from_triplets(4, 3, [(0, 0, 1.0), (1, 1, 2.0), (0, 0, -2.0), (3, 2, 1.0), (1, 0, 2.0)]);
        assert_eq!(m.to_csr(), rebuilt.to_csr());
        assert!(m.norm_drift() < 1e-12);
        assert_eq!(InteractionMatrix::from_csr(&m.to_csr()), rebuilt);
    }

    #[test]
    fn cosine_of_rows() {
        let m = InteractionMatrix::from_triplets(3, 3, [(0, 0, 1.0), (0, 1, 1.0), (1, 0, 2.0), (1, 1, 2.0), (2, 2, 5.0)]);
        assert!((m.cosine(0, 1) - 1.0).abs() < 1e-12);
        assert_eq!(m.cosine(0, 2), 0.0);
    }
}
