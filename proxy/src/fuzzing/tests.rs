//! Every committed seed and every saved finding, through the harness of
//! its target: what the fuzzer once found stays fixed without a fuzzer.

use std::path::Path;

use super::{repo_path, TARGETS};

/// Files under `fuzz/<kind>/<target>/`, each run through the target.
fn replay(kind: &str) -> usize {
    let mut ran = 0;
    for (target, harness) in TARGETS {
        let dir = repo_path(&format!("fuzz/{kind}/{target}"));
        for file in files(&dir) {
            let data = std::fs::read(&file).unwrap();
            let outcome = std::panic::catch_unwind(|| harness(&data));
            assert!(outcome.is_ok(), "{target}: {} fails", file.display());
            ran += 1;
        }
    }
    ran
}

fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.file_name().is_some_and(|n| n != ".gitkeep"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_seed_passes_its_harness() {
    let ran = replay("seeds");
    // Each target has seeds: a missing folder would pass silently.
    for (target, _) in TARGETS {
        assert!(
            !files(&repo_path(&format!("fuzz/seeds/{target}"))).is_empty(),
            "no seeds for {target}"
        );
    }
    assert!(ran >= 3 * TARGETS.len(), "{ran}");
}

#[test]
fn every_saved_finding_stays_fixed() {
    replay("regressions");
}
