//! `fypsim check`: validate configs and print them resolved.

use anyhow::Result;
use fypsim::config::Config;
use std::path::PathBuf;

pub(crate) fn cmd_check(configs: &[PathBuf], print: bool) -> Result<()> {
    let mut failed = 0;
    for path in configs {
        // Validation, then the same memory preflight as `run`, `serve` and `sweep`.
        match Config::load(path, &[]).and_then(|c| fypsim::drive::preflight::fits_in_memory(&c).map(|()| c)) {
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
