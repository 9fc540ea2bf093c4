//! Reading a candidate's unified diff: which files it touches, how many lines it adds and removes,
//! and the added lines themselves. The diff is untrusted input: every path must stay inside the
//! repository, and anything that does not parse is refused before git ever sees it.

/// One file a diff touches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FileChange {
    /// The path after the change (before it, for a deletion), relative to the repository root.
    pub(crate) path: String,
    /// The path before a rename or copy.
    pub(crate) renamed_from: Option<String>,
}

/// What a diff changes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct DiffSummary {
    pub(crate) files: Vec<FileChange>,
    pub(crate) added: u32,
    pub(crate) removed: u32,
    /// Each added line with its file.
    pub(crate) added_lines: Vec<(String, String)>,
    /// Whether the diff carries a binary patch.
    pub(crate) binary: bool,
}

impl DiffSummary {
    pub(crate) fn changed_lines(&self) -> u32 {
        self.added + self.removed
    }

    /// Every path the diff touches, old names of renames included.
    pub(crate) fn paths(&self) -> impl Iterator<Item = &str> {
        self.files
            .iter()
            .flat_map(|f| std::iter::once(f.path.as_str()).chain(f.renamed_from.as_deref()))
    }
}

/// Why a diff is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DiffError {
    #[error("the diff is empty")]
    Empty,
    #[error("the diff touches no file (no `diff --git` or `---`/`+++` headers)")]
    NoFiles,
    #[error("path {0:?} escapes the repository (absolute, `..`, or inside .git)")]
    EscapingPath(String),
    #[error("malformed hunk header {0:?}")]
    BadHunk(String),
}

/// Parses a git-style unified diff.
pub(crate) fn parse(diff: &str) -> Result<DiffSummary, DiffError> {
    if diff.trim().is_empty() {
        return Err(DiffError::Empty);
    }
    let mut summary = DiffSummary::default();
    let mut current: Option<usize> = None;
    let mut lines = diff.lines().peekable();
    while let Some(line) = lines.next() {
        if let Some(rest) = line.strip_prefix("diff --git ") {
            let (old, new) = split_git_header(rest)?;
            summary.files.push(FileChange {
                path: new.clone(),
                renamed_from: (old != new).then_some(old),
            });
            current = Some(summary.files.len() - 1);
        } else if let Some(rest) = line.strip_prefix("--- ") {
            let old = header_path(rest, "a/")?;
            let new_line = lines.next().unwrap_or_default();
            let new = match new_line.strip_prefix("+++ ") {
                Some(rest) => header_path(rest, "b/")?,
                None => return Err(DiffError::BadHunk(new_line.to_owned())),
            };
            let path = new.clone().or(old.clone()).ok_or(DiffError::NoFiles)?;
            match current.and_then(|i| summary.files.get_mut(i)) {
                Some(file) => file.path = path,
                None => {
                    summary.files.push(FileChange {
                        path,
                        renamed_from: None,
                    });
                    current = Some(summary.files.len() - 1);
                }
            }
            if let (Some(old), Some(new)) = (old, new)
                && old != new
                && let Some(file) = current.and_then(|i| summary.files.get_mut(i))
            {
                file.renamed_from = Some(old);
            }
        } else if let Some(rest) = line
            .strip_prefix("rename from ")
            .or_else(|| line.strip_prefix("copy from "))
        {
            let old = checked_path(unquote(rest))?;
            if let Some(file) = current.and_then(|i| summary.files.get_mut(i)) {
                file.renamed_from = Some(old);
            }
        } else if let Some(rest) = line
            .strip_prefix("rename to ")
            .or_else(|| line.strip_prefix("copy to "))
        {
            let new = checked_path(unquote(rest))?;
            if let Some(file) = current.and_then(|i| summary.files.get_mut(i)) {
                file.path = new;
            }
        } else if line.starts_with("GIT binary patch") || line.starts_with("Binary files ") {
            summary.binary = true;
        } else if line.starts_with("@@") {
            let (mut old_left, mut new_left) = hunk_counts(line)?;
            let file = current
                .and_then(|i| summary.files.get(i))
                .map(|f| f.path.clone())
                .ok_or(DiffError::NoFiles)?;
            while old_left > 0 || new_left > 0 {
                let Some(body) = lines.next() else {
                    return Err(DiffError::BadHunk(format!("{line} (diff ends inside it)")));
                };
                match body.as_bytes().first() {
                    Some(b'+') => {
                        new_left = new_left.saturating_sub(1);
                        summary.added += 1;
                        summary
                            .added_lines
                            .push((file.clone(), body[1..].to_owned()));
                    }
                    Some(b'-') => {
                        old_left = old_left.saturating_sub(1);
                        summary.removed += 1;
                    }
                    Some(b'\\') => {}
                    // Context; an empty line is context whose leading space was stripped.
                    _ => {
                        old_left = old_left.saturating_sub(1);
                        new_left = new_left.saturating_sub(1);
                    }
                }
            }
            while lines.peek().is_some_and(|l| l.starts_with('\\')) {
                lines.next();
            }
        }
    }
    if summary.files.is_empty() {
        return Err(DiffError::NoFiles);
    }
    Ok(summary)
}

/// `a/old b/new` of a `diff --git` line (paths may be quoted).
fn split_git_header(rest: &str) -> Result<(String, String), DiffError> {
    let (old, new) = if let Some(quoted) = rest.strip_prefix('"') {
        let end = quoted
            .find('"')
            .map(|i| i + 2)
            .ok_or_else(|| DiffError::BadHunk(rest.to_owned()))?;
        (&rest[..end], rest[end..].trim_start())
    } else {
        // Without quotes the two halves are "a/X b/X"; split at " b/".
        match rest.find(" b/") {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => return Err(DiffError::EscapingPath(rest.to_owned())),
        }
    };
    let old = strip_side(unquote(old), "a/")?;
    let new = strip_side(unquote(new), "b/")?;
    Ok((checked_path(old)?, checked_path(new)?))
}

/// The path of a `---`/`+++` header; `None` for `/dev/null`.
fn header_path(rest: &str, side: &str) -> Result<Option<String>, DiffError> {
    // A tab separates an optional timestamp.
    let raw = unquote(rest.split('\t').next().unwrap_or_default().trim_end());
    if raw == "/dev/null" {
        return Ok(None);
    }
    let path = strip_side(raw, side)?;
    checked_path(path).map(Some)
}

fn strip_side(path: String, side: &str) -> Result<String, DiffError> {
    match path.strip_prefix(side) {
        Some(rest) => Ok(rest.to_owned()),
        None => Err(DiffError::EscapingPath(path)),
    }
}

fn unquote(raw: &str) -> String {
    let raw = raw.trim();
    match raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        Some(inner) => inner.replace("\\\"", "\"").replace("\\\\", "\\"),
        None => raw.to_owned(),
    }
}

/// A relative path that stays inside the repository and out of `.git`.
fn checked_path(path: String) -> Result<String, DiffError> {
    let bad = path.is_empty()
        || path.starts_with('/')
        || path.contains('\\')
        || path.contains('\0')
        || path
            .split('/')
            .any(|c| c == ".." || c.eq_ignore_ascii_case(".git"));
    if bad {
        return Err(DiffError::EscapingPath(path));
    }
    Ok(path)
}

/// The old and new line counts of `@@ -a,b +c,d @@`.
fn hunk_counts(line: &str) -> Result<(u32, u32), DiffError> {
    let bad = || DiffError::BadHunk(line.to_owned());
    let inner = line
        .strip_prefix("@@ ")
        .and_then(|r| r.split(" @@").next())
        .ok_or_else(bad)?;
    let mut parts = inner.split_whitespace();
    let count = |part: Option<&str>, sign: char| -> Result<u32, DiffError> {
        let part = part.and_then(|p| p.strip_prefix(sign)).ok_or_else(bad)?;
        match part.split_once(',') {
            Some((_, n)) => n.parse().map_err(|_| bad()),
            None => part.parse::<u32>().map(|_| 1).map_err(|_| bad()),
        }
    };
    Ok((count(parts.next(), '-')?, count(parts.next(), '+')?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIX: &str = "diff --git a/src/payments.rs b/src/payments.rs
index fa0d4c3..1111111 100644
--- a/src/payments.rs
+++ b/src/payments.rs
@@ -234,7 +234,7 @@ pub fn process_payment(
 
     // Charge customers
     // and bank-transfer users
-    let method = customer.preferred_method.unwrap();
+    let method = customer.preferred_method.unwrap_or(DEFAULT_METHOD);
 
     let fee_cents = compute_fee(amount_cents, method);
     let total_cents = amount_cents + fee_cents;
";

    #[test]
    fn counts_lines_and_files_of_a_one_line_fix() {
        let s = parse(FIX).unwrap();
        assert_eq!(s.files.len(), 1);
        assert_eq!(s.files[0].path, "src/payments.rs");
        assert_eq!((s.added, s.removed), (1, 1));
        assert!(s.added_lines[0].1.contains("unwrap_or(DEFAULT_METHOD)"));
    }

    #[test]
    fn a_removed_line_starting_with_dashes_is_not_a_header() {
        let diff = "--- a/x.txt\n+++ b/x.txt\n@@ -1,2 +1,1 @@\n--- not a header\n keep\n";
        let s = parse(diff).unwrap();
        assert_eq!((s.added, s.removed), (0, 1));
    }

    #[test]
    fn new_files_and_renames_are_listed() {
        let diff = "diff --git a/tests/n.rs b/tests/n.rs\nnew file mode 100644\n--- /dev/null\n+++ b/tests/n.rs\n@@ -0,0 +1,2 @@\n+#[test]\n+fn t() {}\ndiff --git a/a.rs b/b.rs\nsimilarity index 100%\nrename from a.rs\nrename to b.rs\n";
        let s = parse(diff).unwrap();
        let paths: Vec<&str> = s.paths().collect();
        assert_eq!(paths, vec!["tests/n.rs", "b.rs", "a.rs"]);
        assert_eq!(s.added, 2);
    }

    #[test]
    fn paths_escaping_the_repository_are_refused() {
        for diff in [
            "--- a/../etc/passwd\n+++ b/../etc/passwd\n@@ -1 +1 @@\n-a\n+b\n",
            "--- /etc/passwd\n+++ /etc/passwd\n@@ -1 +1 @@\n-a\n+b\n",
            "diff --git a/.git/config b/.git/config\n--- a/.git/config\n+++ b/.git/config\n@@ -1 +1 @@\n-a\n+b\n",
            "diff --git a/x b/x\nrename from x\nrename to sub/../../y\n",
        ] {
            assert!(
                matches!(parse(diff), Err(DiffError::EscapingPath(_))),
                "{diff}"
            );
        }
    }

    #[test]
    fn empty_and_headerless_diffs_are_refused() {
        assert_eq!(parse("  \n"), Err(DiffError::Empty));
        assert_eq!(parse("just some text\n"), Err(DiffError::NoFiles));
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_arbitrary_text(text in ".{0,400}") {
            let _ = parse(&text);
        }
    }
}
