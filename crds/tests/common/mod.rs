//! Helpers shared by the test targets of this crate.

/// Whether `var` asks to rewrite the expected file; never in CI, where a rewrite would make the
/// comparison pass whatever changed.
pub fn rewrite_requested(var: &str) -> bool {
    let set = std::env::var_os(var).is_some();
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    assert!(
        !(set && ci),
        "{var} is set in CI: expected files are compared there, never rewritten"
    );
    set
}
