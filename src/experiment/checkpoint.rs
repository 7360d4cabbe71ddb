//! The checkpoint of a run folder: everything a resume needs, verified before it is
//! trusted.
//!
//! A checkpoint is the folder `<run>/checkpoint/`: the training progress
//! (`progress.json`), whatever the policy saves (`agent.ot` and `agent.json` for the DQN),
//! and `MANIFEST.json`, written last, which names the format, the fingerprint of the
//! config the run was started with, the episodes done, and each file's size and SHA-256.
//! It is written into `checkpoint.tmp/` (every file flushed to disk), then swapped into
//! place, so a crash or a full disk while saving leaves the previous checkpoint intact.
//! Opening one checks every file against the manifest and the config against the run's
//! own `config.toml`, and names the file that is damaged or the setting that differs.
//!
//! The records a run has written so far (episodes, steps, learning-curve points) are not
//! rewritten by every checkpoint: each checkpoint appends the records since the previous
//! one as a new segment in `<run>/checkpoint-records/` (format 3), and its manifest lists every
//! segment with its size and SHA-256. A checkpoint thus costs the state a resume needs
//! (the agent, its replay buffer, the environment) plus the new records, not every record
//! so far. A segment left by a save that did not finish is not in any manifest: the next
//! complete save removes it.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::Checked;
use crate::files::{sha256, write_file};
use crate::{Error, Result};

/// The folder name of a run's checkpoint.
pub const DIR: &str = "checkpoint";
const TMP: &str = "checkpoint.tmp";
const MANIFEST: &str = "MANIFEST.json";
/// The marker of checkpoints written before manifests existed (format 1).
const LEGACY_COMPLETE: &str = "COMPLETE";
/// The folder of a run's record segments.
pub const RECORDS: &str = "checkpoint-records";
/// The format this version writes (3: records in segments; 2: manifests; 1: neither).
pub const FORMAT: u32 = 3;

/// `MANIFEST.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// SHA-256 of the run's resolved config (without provenance): see [`fingerprint`].
    pub config_sha256: String,
    pub episodes_done: u32,
    /// Every other file of the checkpoint.
    pub files: BTreeMap<String, FileEntry>,
    /// The record segments in `<run>/checkpoint-records/`, in the order they were written (format 3;
    /// empty in earlier formats, whose `progress.json` holds every record).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub records: BTreeMap<String, FileEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    pub bytes: u64,
    pub sha256: String,
}

/// The identity of a config: SHA-256 of its canonical TOML with every default filled in
/// and the provenance left out, so that comments, key order and the binary's version do
/// not change it, and any setting does.
pub fn fingerprint(config: &Checked) -> String {
    let mut c = config.inner().clone();
    c.provenance = None;
    sha256(c.to_toml().as_bytes())
}

/// A checkpoint being written into `<run>/checkpoint.tmp/`.
pub struct Writer {
    run: PathBuf,
    tmp: PathBuf,
    records: BTreeMap<String, FileEntry>,
}

impl Writer {
    /// Starts a checkpoint of the run in `run` (an unfinished earlier attempt is removed;
    /// a complete one left by a crash between removing the old checkpoint and the rename,
    /// the only checkpoint then, is first moved into place).
    pub fn begin(run: &Path) -> Result<Writer> {
        let tmp = run.join(TMP);
        let fin = run.join(DIR);
        if tmp.join(MANIFEST).is_file() && !fin.exists() {
            fs::rename(&tmp, &fin).map_err(Error::io("rename into place", &fin))?;
        }
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(Error::io("remove", &tmp))?;
        }
        fs::create_dir_all(&tmp).map_err(Error::io("create folder", &tmp))?;
        Ok(Writer { run: run.to_path_buf(), tmp, records: BTreeMap::new() })
    }

    /// Lists the record segments of the previous checkpoint in this one (they are not
    /// read again: their checksums were taken when they were written).
    pub fn keep_records(&mut self, earlier: &BTreeMap<String, FileEntry>) {
        self.records.extend(earlier.iter().map(|(k, v)| (k.clone(), v.clone())));
    }

    /// Writes a new record segment into `<run>/checkpoint-records/` (flushed to disk) and lists it.
    /// A segment of the same name left by an unfinished save is replaced.
    pub fn write_records(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        let folder = self.run.join(RECORDS);
        fs::create_dir_all(&folder).map_err(Error::io("create folder", &folder))?;
        write_file(&folder.join(name), bytes)?;
        self.records.insert(name.to_string(), FileEntry { bytes: bytes.len() as u64, sha256: sha256(bytes) });
        Ok(())
    }

    /// The record segments this checkpoint lists so far.
    pub fn records(&self) -> &BTreeMap<String, FileEntry> {
        &self.records
    }

    /// The folder the policy saves its files into.
    pub fn dir(&self) -> &Path {
        &self.tmp
    }

    /// Writes one file of the checkpoint.
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<()> {
        write_file(&self.tmp.join(name), bytes)
    }

    /// Checksums every file written, writes the manifest, and swaps the checkpoint into
    /// place. Until the swap, the previous checkpoint stays whole.
    pub fn finish(mut self, config: &Checked, episodes_done: u32) -> Result<()> {
        let mut files = BTreeMap::new();
        let entries = fs::read_dir(&self.tmp).map_err(Error::io("list", &self.tmp))?;
        for e in entries {
            let e = e.map_err(Error::io("list", &self.tmp))?;
            let name = e.file_name().to_string_lossy().to_string();
            let bytes = fs::read(e.path()).map_err(Error::io("read back", e.path()))?;
            files.insert(name, FileEntry { bytes: bytes.len() as u64, sha256: sha256(&bytes) });
        }
        let records = std::mem::take(&mut self.records);
        let manifest = Manifest { format: FORMAT, config_sha256: fingerprint(config), episodes_done, files, records };
        let json = serde_json::to_string_pretty(&manifest).expect("a manifest serialises");
        self.write(MANIFEST, json.as_bytes())?;
        let fin = self.run.join(DIR);
        if fin.exists() {
            // From here until the rename, `checkpoint.tmp` is the complete checkpoint, and
            // `open` looks there too.
            fs::remove_dir_all(&fin).map_err(Error::io("replace", &fin))?;
        }
        fs::rename(&self.tmp, &fin).map_err(Error::io("rename into place", &fin))?;
        // Segments of a save that never finished are in no manifest: remove them.
        let folder = self.run.join(RECORDS);
        if let Ok(entries) = fs::read_dir(&folder) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if !manifest.records.contains_key(&name) {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        Ok(())
    }
}

/// A verified checkpoint.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub dir: PathBuf,
    /// The run folder.
    pub run: PathBuf,
    /// None for a format-1 checkpoint (written before manifests: nothing to verify).
    pub manifest: Option<Manifest>,
}

impl Checkpoint {
    /// Reads one of its files.
    pub fn read(&self, name: &str) -> Result<Vec<u8>> {
        let path = self.dir.join(name);
        fs::read(&path).map_err(Error::io("read", &path))
    }

    /// The record segments it lists (verified when it was opened), in order.
    pub fn records(&self) -> BTreeMap<String, FileEntry> {
        self.manifest.as_ref().map(|m| m.records.clone()).unwrap_or_default()
    }

    /// Reads one record segment.
    pub fn read_records(&self, name: &str) -> Result<Vec<u8>> {
        let path = self.run.join(RECORDS).join(name);
        fs::read(&path).map_err(Error::io("read", &path))
    }
}

/// Removes what a save that failed left in `run` (a `checkpoint.tmp/` without its
/// manifest), so that it holds no space until the next save; a complete one, the only
/// checkpoint after a crash between removing the old one and the rename, is kept.
pub fn remove_unfinished(run: &Path) {
    let tmp = run.join(TMP);
    if tmp.exists() && !tmp.join(MANIFEST).is_file() {
        let _ = fs::remove_dir_all(&tmp);
    }
}

/// Whether `run` holds a checkpoint (complete or not; not verified).
pub fn exists(run: &Path) -> bool {
    [DIR, TMP].iter().any(|d| {
        let c = run.join(d);
        c.join(MANIFEST).is_file() || c.join(LEGACY_COMPLETE).is_file()
    })
}

/// The run's newest complete checkpoint, every file verified against its manifest, and
/// the manifest's config checked against `config` (the run's own config.toml).
pub fn open(run: &Path, config: &Checked) -> Result<Checkpoint> {
    for name in [DIR, TMP] {
        let dir = run.join(name);
        let manifest_path = dir.join(MANIFEST);
        if manifest_path.is_file() {
            let text = fs::read_to_string(&manifest_path).map_err(Error::io("read", &manifest_path))?;
            let manifest: Manifest = serde_json::from_str(&text).map_err(|e| {
                Error::Checkpoint(format!("{} is damaged ({e}); the checkpoint cannot be trusted", manifest_path.display()))
            })?;
            if manifest.format > FORMAT {
                return Err(Error::Checkpoint(format!(
                    "{} is of format {}, newer than this fypsim reads ({FORMAT}); use a newer fypsim",
                    manifest_path.display(),
                    manifest.format
                )));
            }
            verify(&dir, &manifest.files)?;
            verify(&run.join(RECORDS), &manifest.records)?;
            if manifest.config_sha256 != fingerprint(config) {
                return Err(Error::Checkpoint(format!(
                    "{} does not match the config its checkpoint was written under (was it edited, or \
                     replaced by another run's?); restore the run's config.toml, or start afresh in another \
                     folder with `fypsim run CONFIG --out NEW_DIR`",
                    run.join("config.toml").display()
                )));
            }
            return Ok(Checkpoint { dir, run: run.to_path_buf(), manifest: Some(manifest) });
        }
        if dir.join(LEGACY_COMPLETE).is_file() {
            return Ok(Checkpoint { dir, run: run.to_path_buf(), manifest: None });
        }
    }
    Err(Error::Checkpoint(format!(
        "{} has no complete checkpoint ({DIR}/{MANIFEST}); a run writes one every train.checkpoint_every episodes \
         and at the end of training",
        run.display()
    )))
}

/// Checks every file listed: present, of its size, of its checksum.
fn verify(dir: &Path, files: &BTreeMap<String, FileEntry>) -> Result<()> {
    for (name, entry) in files {
        let path = dir.join(name);
        let bytes = fs::read(&path).map_err(|e| {
            Error::Checkpoint(format!("{} is missing or unreadable ({e}); the checkpoint cannot be trusted", path.display()))
        })?;
        if bytes.len() as u64 != entry.bytes {
            return Err(Error::Checkpoint(format!(
                "{} is damaged: {} bytes where the checkpoint wrote {} (truncated?); the checkpoint cannot be trusted",
                path.display(),
                bytes.len(),
                entry.bytes
            )));
        }
        if sha256(&bytes) != entry.sha256 {
            return Err(Error::Checkpoint(format!(
                "{} is damaged: its SHA-256 differs from the one the checkpoint recorded; the checkpoint cannot be trusted",
                path.display()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn written_checkpoints_verify_and_damage_is_named() {
        let d = tempfile::tempdir().unwrap();
        let c = Config::default().check().unwrap();
        let w = Writer::begin(d.path()).unwrap();
        w.write("a.bin", &[1, 2, 3, 4]).unwrap();
        w.finish(&c, 7).unwrap();
        let ck = open(d.path(), &c).unwrap();
        assert_eq!(ck.manifest.as_ref().unwrap().episodes_done, 7);
        assert_eq!(ck.read("a.bin").unwrap(), [1, 2, 3, 4]);

        // Same size, one byte flipped.
        fs::write(d.path().join("checkpoint/a.bin"), [1, 2, 3, 5]).unwrap();
        let e = open(d.path(), &c).unwrap_err().to_string();
        assert!(e.contains("a.bin is damaged") && e.contains("SHA-256"), "{e}");
        // Truncated.
        fs::write(d.path().join("checkpoint/a.bin"), [1, 2]).unwrap();
        let e = open(d.path(), &c).unwrap_err().to_string();
        assert!(e.contains("a.bin is damaged") && e.contains("2 bytes"), "{e}");
        // Another config.
        fs::write(d.path().join("checkpoint/a.bin"), [1, 2, 3, 4]).unwrap();
        let other = c.with_seed(1);
        let e = open(d.path(), &other).unwrap_err().to_string();
        assert!(e.contains("does not match the config"), "{e}");
    }

    /// A crash after the old checkpoint was removed and before the new one was renamed
    /// leaves the new one complete in checkpoint.tmp: it is read there, and the next save
    /// keeps it (moves it into place) instead of removing it; a failure of that save
    /// leaves it whole.
    #[test]
    fn a_checkpoint_left_complete_in_tmp_survives_the_next_save() {
        let d = tempfile::tempdir().unwrap();
        let c = Config::default().check().unwrap();
        let w = Writer::begin(d.path()).unwrap();
        w.write("a.bin", b"second").unwrap();
        w.finish(&c, 2).unwrap();
        fs::rename(d.path().join(DIR), d.path().join(TMP)).unwrap();
        assert_eq!(open(d.path(), &c).unwrap().read("a.bin").unwrap(), b"second");
        let w = Writer::begin(d.path()).unwrap();
        w.write("a.bin", b"half").unwrap();
        drop(w);
        let ck = open(d.path(), &c).unwrap();
        assert_eq!((ck.read("a.bin").unwrap(), ck.manifest.unwrap().episodes_done), (b"second".to_vec(), 2));
    }

    /// A config's identity ignores comments, key order and the binary's version, and
    /// sees any setting.
    #[test]
    fn the_fingerprint_ignores_comments_key_order_and_version() {
        let a = Config::from_toml_str("seed = 3\n[env]\nmax_steps = 12\nskip_time_min_s = 1.0\n", &[]).unwrap();
        let b =
            Config::from_toml_str("# a comment\nseed = 3 # and another\n\n[env]\nskip_time_min_s = 1.0\nmax_steps = 12\n", &[])
                .unwrap();
        assert_eq!(fingerprint(&a), fingerprint(&b));
        let mut raw = a.inner().clone();
        raw.provenance = Some(crate::config::Provenance { crate_version: "9.9.9".into(), git_revision: "somewhere-else".into() });
        assert_eq!(fingerprint(&raw.check().unwrap()), fingerprint(&a));
        let c = Config::from_toml_str("seed = 3\n[env]\nmax_steps = 13\nskip_time_min_s = 1.0\n", &[]).unwrap();
        assert_ne!(fingerprint(&a), fingerprint(&c));
    }

    /// A checkpoint of format 1 (before manifests: files and a COMPLETE marker) is still
    /// read, unverified.
    #[test]
    fn format_1_checkpoints_are_still_read() {
        let d = tempfile::tempdir().unwrap();
        let c = Config::default().check().unwrap();
        let dir = d.path().join(DIR);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("a.bin"), b"old").unwrap();
        fs::write(dir.join(LEGACY_COMPLETE), b"").unwrap();
        assert!(exists(d.path()));
        let ck = open(d.path(), &c).unwrap();
        assert!(ck.manifest.is_none());
        assert_eq!(ck.read("a.bin").unwrap(), b"old");
    }

    #[test]
    fn a_failed_save_keeps_the_previous_checkpoint() {
        let d = tempfile::tempdir().unwrap();
        let c = Config::default().check().unwrap();
        let w = Writer::begin(d.path()).unwrap();
        w.write("a.bin", b"first").unwrap();
        w.finish(&c, 1).unwrap();
        // A second save that fails half way (its writer is dropped unfinished).
        let w = Writer::begin(d.path()).unwrap();
        w.write("a.bin", b"half").unwrap();
        drop(w);
        let ck = open(d.path(), &c).unwrap();
        assert_eq!(ck.read("a.bin").unwrap(), b"first");
        assert_eq!(ck.manifest.unwrap().episodes_done, 1);
    }

    #[test]
    fn record_segments_are_listed_verified_and_leftovers_removed() {
        let d = tempfile::tempdir().unwrap();
        let c = Config::default().check().unwrap();
        let mut w = Writer::begin(d.path()).unwrap();
        w.write_records("000000.json", b"first records").unwrap();
        w.finish(&c, 1).unwrap();
        // A save that writes its segment and then fails: the segment is in no manifest.
        let mut w = Writer::begin(d.path()).unwrap();
        w.keep_records(&open(d.path(), &c).unwrap().records());
        w.write_records("000001.json", b"lost").unwrap();
        drop(w);
        let ck = open(d.path(), &c).unwrap();
        assert_eq!(ck.records().keys().collect::<Vec<_>>(), ["000000.json"]);
        // The next complete save lists the old segment (not rewritten) and its own, and
        // removes the leftover.
        let mut w = Writer::begin(d.path()).unwrap();
        w.keep_records(&ck.records());
        w.write_records("000001-b.json", b"second records").unwrap();
        w.finish(&c, 2).unwrap();
        let ck = open(d.path(), &c).unwrap();
        assert_eq!(ck.records().keys().collect::<Vec<_>>(), ["000000.json", "000001-b.json"]);
        assert!(!d.path().join(RECORDS).join("000001.json").exists());
        assert_eq!(ck.read_records("000001-b.json").unwrap(), b"second records");
        // A damaged segment is named.
        fs::write(d.path().join(RECORDS).join("000000.json"), b"first recordz").unwrap();
        let e = open(d.path(), &c).unwrap_err().to_string();
        assert!(e.contains("000000.json is damaged"), "{e}");
    }
}
