//! Every shipped config parses and validates.

use std::path::{Path, PathBuf};

use fypsim::config::Config;

fn toml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            toml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "toml") {
            out.push(path);
        }
    }
}

#[test]
fn every_shipped_config_validates() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut files = Vec::new();
    toml_files(&root, &mut files);
    assert!(files.len() >= 2, "configs/ should hold default.toml and smoke.toml");
    for f in &files {
        // Sweep files are checked by the sweep tests; experiment configs here.
        if f.components().any(|c| c.as_os_str() == "sweeps") {
            continue;
        }
        if let Err(e) = Config::load(f, &[]) {
            panic!("{}: {e}", f.display());
        }
    }
}

#[test]
fn default_toml_is_the_instatok_preset() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/default.toml");
    let shipped = Config::load(&root, &[]).unwrap();
    // The world and its rules are the built-in preset; only the agent and its budget differ.
    let builtin =
        Config { name: shipped.name.clone(), train: shipped.train.clone(), dqn: shipped.dqn.clone(), ..Config::default() };
    assert_eq!(shipped.inner(), &builtin, "configs/default.toml and Config::default() disagree outside [train] and [dqn]");
    // The prototype's agent is the built-in default, with its own epsilon schedule.
    let proto = Config::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/prototype.toml"), &[]).unwrap();
    let mut expected = Config { name: "prototype".into(), ..Config::default() };
    expected.dqn.epsilon.per = fypsim::config::DecayUnit::Update;
    expected.dqn.epsilon.rate = 0.995;
    assert_eq!(proto.inner(), &expected);
}
