//! How a test that cannot run here says so — in the summary, not as `ok`.
//!
//! libtest has no runtime "skipped" result: a test that returns early is
//! reported `ok`. So a skipping test calls [`skip`], which panics under `CI`
//! (there a skipped privileged test is a failure), and otherwise prints the
//! reason and appends `test: reason` to the file named by
//! `FLEXWASM_SKIP_LOG`. `tests/test.sh` (the README's test command) sets that
//! variable and prints every line of it after cargo's own summary.

/// Record that `test` is skipped because of `reason` (see the module doc).
/// Panics when `CI` is set.
#[doc(hidden)]
pub fn skip(test: &str, reason: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{test}: cannot run ({reason}) and CI is set: failing instead of skipping");
    }
    eprintln!("SKIPPED {test}: {reason}");
    if let Some(path) = std::env::var_os("FLEXWASM_SKIP_LOG") {
        use std::io::Write;
        // One short line, appended in a single write: concurrent test
        // threads and processes do not interleave within a line.
        let line = format!("{test}: {reason}\n");
        let _ = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
    }
}
