//! Unified diffs in git's format, made with a diff library (never by hand).

use similar::TextDiff;

/// A git-style unified diff turning `old` into `new` for `path`, with counts of changed lines.
pub(crate) fn unified(path: &str, old: &str, new: &str) -> (String, u32, u32) {
    let diff = TextDiff::from_lines(old, new);
    let (mut added, mut removed) = (0u32, 0u32);
    for change in diff.iter_all_changes() {
        match change.tag() {
            similar::ChangeTag::Insert => added += 1,
            similar::ChangeTag::Delete => removed += 1,
            similar::ChangeTag::Equal => {}
        }
    }
    let body = diff
        .unified_diff()
        .context_radius(3)
        .header(&format!("a/{path}"), &format!("b/{path}"))
        .to_string();
    (
        format!("diff --git a/{path} b/{path}\n{body}"),
        added,
        removed,
    )
}
