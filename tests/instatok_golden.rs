//! The `instatok` preset does not move: with every dynamic of users with memory off, the
//! smoke run (single loop and lockstep) writes exactly the tables it wrote before the user
//! model existed. The digests below were taken from the binary before that change
//! (commit 9e8eecf). A change that must move these numbers says so in its commit message
//! and in the README, and updates the digests here.
//!
//! libtorch's CPU kernels round differently on different processors, so the TD losses in
//! `episodes.csv` (`mean_loss`) differ in their last digits from one machine to another
//! (the digests were first taken on one machine; an AMD EPYC with AVX-512 gives other
//! losses and the same `eval.csv`, `eval_episodes.csv` and `baselines.csv`). `episodes.csv`
//! is therefore checked twice: without its `mean_loss` column against one digest (taken on
//! the EPYC: the first machine's file was not kept, only its digest), and whole against the
//! digest of one of the processors where it was taken.

use std::path::Path;

use assert_cmd::Command;
use sha2::{Digest, Sha256};

fn run(out: &Path, extra: &[&str]) {
    let mut c = Command::cargo_bin("fypsim").unwrap();
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c.args(["run", "configs/smoke.toml", "-q", "--out"]).arg(out).args(extra);
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn digest(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The digest of a CSV file without the named column.
fn digest_without(path: &Path, column: &str) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let header: Vec<&str> = text.lines().next().unwrap_or_default().split(',').collect();
    let drop = header.iter().position(|c| *c == column).unwrap_or_else(|| panic!("{} has no {column}", path.display()));
    let mut kept = String::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(',').enumerate().filter(|&(k, _)| k != drop).map(|(_, f)| f).collect();
        kept.push_str(&fields.join(","));
        kept.push('\n');
    }
    Sha256::digest(kept.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// The three tables that hold no loss must match byte for byte; `episodes.csv` must match
/// `episodes` without its losses, and whole one of `episodes_whole` (one per processor kind).
fn check(dir: &Path, expected: &[(&str, &str)], episodes: &str, episodes_whole: &[&str]) {
    for (file, want) in expected {
        assert_eq!(digest(&dir.join(file)), *want, "{file} moved");
    }
    let path = dir.join("episodes.csv");
    assert_eq!(digest_without(&path, "mean_loss"), episodes, "episodes.csv moved (its columns other than mean_loss)");
    let whole = digest(&path);
    assert!(episodes_whole.contains(&whole.as_str()), "episodes.csv's losses moved: {whole} is none of {episodes_whole:?}");
}

#[test]
fn smoke_tables_are_those_of_the_memoryless_simulator() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("smoke");
    run(&dir, &[]);
    check(
        &dir,
        &[
            ("eval.csv", "0457a9fc4234232a52b954230a1ce4aa68b5102f601c3fb47a78fb09f1e361a2"),
            ("eval_episodes.csv", "26af996128ce0bfef946df7400c0d82275244d7fe207905ebe55595697f2fd96"),
            ("baselines.csv", "352ae76078ac935ca8783f8790b021e2958490e29b9946af4c9becc81e0d2f1d"),
        ],
        "cf8a9edbaf817085fb0ec909ae3ba7d1695ba27c44e26b82d63c97935091a923",
        &[
            "6ae437b8455fe0d0128b1b032937b5c90382285ffb5e74e459ece41cf3b32ee7",
            "01afcd0b559d1059f978ac45c851b8d511f190c17b3c9a3cddeddd4318683a4b",
        ],
    );
}

#[test]
fn lockstep_smoke_tables_are_those_of_the_memoryless_simulator() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("lockstep");
    run(&dir, &["--set", "train.sessions=4", "--set", "train.checkpoint_every=0"]);
    check(
        &dir,
        &[
            ("eval.csv", "d655e12c74142dd5a9c3937da0318fdae70de8bfce5c8accb133bfead6cbad04"),
            ("eval_episodes.csv", "4e20ec4097d7f02a4bf965de331d46c4a5cac076c4eccd9e085e56066305ae51"),
            ("baselines.csv", "e78dc213b59fa8bf173f673008a40140a8e19af0966f15e279d0924702a28440"),
        ],
        "96be11e8d33e7c8f633a2fd88b06e03137b7095209d6400a7794bebaee674b49",
        &[
            "22bcd81467f0f5fbd569feb7fe1060c77a84f3b7c83b330a225fba86370b5b5b",
            "c4a9213b6d440ecb4447d0d18c8ffdbcf175c04066059cd6295231a58d691885",
        ],
    );
}
