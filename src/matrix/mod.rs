//! The sparse item-user interaction matrix (SPEC section 4).
//!
//! Entry (video, user) is the sum of that user's interaction scores for that video. The
//! bulk build goes through sprs (triplets summed into CSR); online updates go into sorted
//! per-row lists kept in both orientations (video -> users, user -> videos) together with
//! each video's squared norm, so one interaction costs O(row length) and never a rebuild.
//! An entry that exists with a summed score of 0 still marks the video as seen by the user.

use sprs::{CsMat, TriMat};

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
    items: Vec<SparseRow>,
    users: Vec<SparseRow>,
    item_norm2: Vec<f64>,
}

impl InteractionMatrix {
    /// An empty matrix of `n_items` x `n_users`.
    pub fn new(n_items: usize, n_users: usize) -> InteractionMatrix {
        InteractionMatrix {
            items: vec![SparseRow::default(); n_items],
            users: vec![SparseRow::default(); n_users],
            item_norm2: vec![0.0; n_items],
        }
    }

    /// Builds the matrix from (item, user, score) triplets; repeated pairs are summed.
    pub fn from_triplets(
        n_items: usize,
        n_users: usize,
        triplets: impl IntoIterator<Item = (u32, u32, f64)>,
    ) -> InteractionMatrix {
        let mut tri = TriMat::new((n_items, n_users));
        for (i, u, s) in triplets {
            tri.add_triplet(i as usize, u as usize, s);
        }
        Self::from_csr(&tri.to_csr())
    }

    /// Copies a CSR (item x user) matrix into the online representation.
    pub fn from_csr(csr: &CsMat<f64>) -> InteractionMatrix {
        let (n_items, n_users) = csr.shape();
        let mut m = InteractionMatrix::new(n_items, n_users);
        let csr = if csr.is_csr() { csr.clone() } else { csr.to_csr() };
        for (i, row) in csr.outer_iterator().enumerate() {
            let r = &mut m.items[i];
            r.idx = row.indices().iter().map(|&u| u as u32).collect();
            r.val = row.data().to_vec();
            m.item_norm2[i] = r.val.iter().map(|v| v * v).sum();
        }
        let csc = csr.to_csc();
        for (u, col) in csc.outer_iterator().enumerate() {
            let r = &mut m.users[u];
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
        let old = self.items[item as usize].add(user, score).unwrap_or(0.0);
        self.users[user as usize].add(item, score);
        let new = old + score;
        // Incremental norm; clamp guards against rounding below zero.
        let n2 = &mut self.item_norm2[item as usize];
        *n2 = (*n2 + new * new - old * old).max(0.0);
    }

    pub fn n_items(&self) -> usize {
        self.items.len()
    }

    pub fn n_users(&self) -> usize {
        self.users.len()
    }

    /// Stored entries (including entries whose scores summed to zero).
    pub fn nnz(&self) -> usize {
        self.items.iter().map(SparseRow::len).sum()
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

    #[test]
    fn triplets_are_summed_and_both_orientations_agree() {
        let m = InteractionMatrix::from_triplets(
            3,
            2,
            [(0, 0, 1.0), (0, 0, 2.0), (2, 1, -2.0), (1, 0, -0.5), (1, 0, 0.5)],
        );
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
        let rebuilt = InteractionMatrix::from_triplets(
            4,
            3,
            [(0, 0, 1.0), (1, 1, 2.0), (0, 0, -2.0), (3, 2, 1.0), (1, 0, 2.0)],
        );
        assert_eq!(m.to_csr(), rebuilt.to_csr());
        assert!(m.norm_drift() < 1e-12);
        assert_eq!(InteractionMatrix::from_csr(&m.to_csr()), rebuilt);
    }

    #[test]
    fn cosine_of_rows() {
        let m = InteractionMatrix::from_triplets(
            3,
            3,
            [(0, 0, 1.0), (0, 1, 1.0), (1, 0, 2.0), (1, 1, 2.0), (2, 2, 5.0)],
        );
        assert!((m.cosine(0, 1) - 1.0).abs() < 1e-12);
        assert_eq!(m.cosine(0, 2), 0.0);
    }
}
