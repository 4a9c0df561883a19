//! `eventfold verify DIR`: the store in `DIR` and, when `eventfold serve` has kept consumer-group
//! state beside it, the second store at `DIR/groups`. Each is checked by
//! [`eventfold_engine::verify`] and reported under its own heading. The subject key file
//! (crypto-shredding, `DIR/keys/subject-keys`) is checked record by record when there is one.

use std::path::Path;
use std::process::ExitCode;

use eventfold_protocol::backup::{GROUPS_DIR, KEYS_DIR};

/// What checking one store came to.
enum Outcome {
    /// Checked, nothing wrong.
    Whole,
    /// Checked, something wrong (the report names it).
    Damaged,
    /// Could not be checked (not a store, locked by a server, unreadable).
    Unchecked,
}

/// Checks the store in `dir` and its consumer-group state, prints both reports, and answers
/// 0 when both are whole, 1 when either is damaged, 2 when either could not be checked.
pub fn run(dir: &Path) -> ExitCode {
    let mut outcomes = vec![check("store", dir)];
    let groups = dir.join(GROUPS_DIR);
    if groups.is_dir() {
        println!();
        outcomes.push(check("consumer-group state", &groups));
    } else {
        println!();
        println!(
            "consumer-group state: none ({} does not exist; no groups were created by `eventfold serve`)",
            groups.display()
        );
    }
    let keys = dir.join(KEYS_DIR).join(eventfold_shred::KEYS_FILE);
    if keys.is_file() {
        println!();
        outcomes.push(check_keys(&keys));
    }
    if outcomes.iter().any(|o| matches!(o, Outcome::Unchecked)) {
        ExitCode::from(2)
    } else if outcomes.iter().any(|o| matches!(o, Outcome::Damaged)) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Verifies one store and prints its report under `what`.
fn check(what: &str, dir: &Path) -> Outcome {
    println!("{what} in {}:", dir.display());
    match eventfold_engine::verify(dir) {
        Ok(report) => {
            println!("{report}");
            if report.is_ok() {
                Outcome::Whole
            } else {
                Outcome::Damaged
            }
        }
        Err(e) => {
            println!("not checked (see stderr)");
            eprintln!("error: cannot verify the {what} in {}: {e}", dir.display());
            Outcome::Unchecked
        }
    }
}

/// Checks the subject key file (every record's checksum and shape) and prints what it holds;
/// the keys themselves are never printed.
fn check_keys(path: &Path) -> Outcome {
    println!("subject keys in {}:", path.display());
    let bytes = match std::fs::read(path) {
        Ok(b) => zeroize::Zeroizing::new(b),
        Err(e) => {
            println!("not checked (see stderr)");
            eprintln!("error: cannot read {}: {e}", path.display());
            return Outcome::Unchecked;
        }
    };
    match eventfold_shred::parse_key_file(path, &bytes) {
        Ok((records, whole)) => {
            let keys = records
                .iter()
                .filter(|r| matches!(r, eventfold_shred::KeyRecord::Key { .. }))
                .count();
            println!(
                "ok: {keys} key records, {} forgotten-subject records",
                records.len() - keys
            );
            if whole < bytes.len() {
                println!(
                    "a torn last record of {} bytes (a key made during a crash, never used): cut off when the server next opens it",
                    bytes.len() - whole
                );
            }
            Outcome::Whole
        }
        Err(e) => {
            println!("damaged: {e}");
            Outcome::Damaged
        }
    }
}
