//! `fypsim check`: validate configs and print them resolved.

use anyhow::Result;
use fypsim::config::Config;
use std::path::PathBuf;

pub(crate) fn cmd_check(configs: &[PathBuf], print: bool) -> Result<()> {
    let mut failed = 0;
    for path in configs {
        match Config::load(path, &[]) {
            Ok(c) => {
                println!("ok: {}", path.display());
                if print {
                    println!("{}", c.to_toml());
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                failed += 1;
            }
        }
    }
    anyhow::ensure!(failed == 0, "{failed} of {} configs are invalid", configs.len());
    Ok(())
}
