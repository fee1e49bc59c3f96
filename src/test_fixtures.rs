//! Real client and camera captures (`fixtures/`) for the protocol core's tests; the core
//! itself never touches the file system.

use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// One fixture's bytes, by path under `fixtures/` (`cameras/hikvision_describe.txt`).
pub fn bytes(path: &str) -> Vec<u8> {
    std::fs::read(root().join(path)).unwrap_or_else(|e| panic!("fixture {path}: {e}"))
}

/// Every fixture of a directory (`cameras`, `clients`), sorted by name.
pub fn dir(name: &str) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(root().join(name))
        .unwrap_or_else(|e| panic!("fixtures/{name}: {e}"))
        .flatten()
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap()))
        .collect();
    v.sort();
    v
}

/// A starting instant for tests of the protocol core, which never reads the clock itself.
pub fn t0() -> std::time::Instant {
    std::time::Instant::now()
}
