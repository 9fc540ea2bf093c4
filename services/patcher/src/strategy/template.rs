//! Fix templates for Rust faults at the localised line:
//! - `Option`/`Result` `unwrap()`/`expect(..)` panics → `unwrap_or(<default in scope>)`,
//!   `unwrap_or_default()`, or `?` when the enclosing function returns `Result`/`Option`;
//! - arithmetic overflow → `saturating_*`.

use super::{Candidate, Strategy, candidate_id};
use crate::diff::unified;
use crate::git::RepoPath;

pub(super) fn rust_candidates(
    path: &RepoPath,
    source: &str,
    line: u32,
    message: &str,
) -> Vec<Candidate> {
    if !path.as_str().ends_with(".rs") {
        return Vec::new();
    }
    let lines: Vec<&str> = source.split_inclusive('\n').collect();
    let Some(target) = lines.get(line as usize - 1) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut push = |replacement: String, template: &str, confidence: f64, rationale: String| {
        if replacement == *target {
            return;
        }
        let mut patched: Vec<&str> = lines.clone();
        patched[line as usize - 1] = &replacement;
        let new_source: String = patched.concat();
        let (diff, added, removed) = unified(path.as_str(), source, &new_source);
        out.push(Candidate {
            id: candidate_id(Strategy::Template, &diff),
            strategy: Strategy::Template,
            diff,
            rationale,
            confidence,
            files: vec![path.as_str().to_owned()],
            lines_added: added,
            lines_removed: removed,
            template: template.to_owned(),
        });
    };

    if let Some((before, call, after)) = find_unwrap(target) {
        let receiver = receiver_name(before);
        let is_option = message.contains("Option::unwrap") || message.contains("None");
        for constant in defaults_in_scope(source, &receiver) {
            push(
                format!("{before}.unwrap_or({constant}){after}"),
                "rust.unwrap.unwrap_or_default_in_scope",
                if is_option { 0.9 } else { 0.8 },
                format!(
                    "`{receiver}{call}` panics when the value is missing; fall back to `{constant}`, the default \
                     this file already uses, so the request succeeds the way it did before the change"
                ),
            );
        }
        push(
            format!("{before}.unwrap_or_default(){after}"),
            "rust.unwrap.unwrap_or_default",
            0.7,
            format!(
                "`{receiver}{call}` panics when the value is missing; use the type's `Default` instead"
            ),
        );
        if enclosing_fn_returns_fallible(&lines, line as usize - 1) {
            push(
                format!("{before}?{after}"),
                "rust.unwrap.question_mark",
                0.55,
                format!(
                    "`{receiver}{call}` panics; propagate the missing value to the caller with `?` instead"
                ),
            );
        }
    }
    if message.contains("overflow")
        && let Some(replacement) = saturating(target)
    {
        push(
            replacement,
            "rust.overflow.saturating",
            0.6,
            "arithmetic overflowed; saturate at the type's bounds instead of panicking".into(),
        );
    }
    out
}

/// Splits `… x.unwrap() …` / `… x.expect("…") …` into (before, the call, after).
fn find_unwrap(line: &str) -> Option<(&str, &str, &str)> {
    if let Some(start) = line.find(".unwrap()") {
        let end = start + ".unwrap()".len();
        return Some((&line[..start], &line[start..end], &line[end..]));
    }
    let start = line.find(".expect(")?;
    let mut depth = 0usize;
    for (offset, ch) in line[start..].char_indices() {
        match ch {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    let end = start + offset + 1;
                    return Some((&line[..start], &line[start..end], &line[end..]));
                }
            }
            _ => {}
        }
    }
    None
}

/// The last path segment before the call: `customer.preferred_method` → `preferred_method`.
fn receiver_name(before: &str) -> String {
    before
        .trim_end()
        .rsplit(|c: char| !(c.is_alphanumeric() || c == '_'))
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Constants named `DEFAULT_*` declared in the file, the ones sharing a word with the receiver
/// first (`preferred_method` → `DEFAULT_METHOD`).
fn defaults_in_scope(source: &str, receiver: &str) -> Vec<String> {
    let words: Vec<String> = receiver
        .split('_')
        .filter(|w| w.len() > 2)
        .map(str::to_ascii_uppercase)
        .collect();
    let mut found: Vec<(bool, String)> = source
        .lines()
        .filter_map(|line| {
            let rest = line
                .trim_start()
                .trim_start_matches("pub ")
                .trim_start_matches("pub(crate) ");
            let rest = rest
                .strip_prefix("const ")
                .or_else(|| rest.strip_prefix("static "))?;
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            name.starts_with("DEFAULT").then_some(name)
        })
        .map(|name| (words.iter().any(|w| name.contains(w.as_str())), name))
        .collect();
    found.sort_by_key(|entry| std::cmp::Reverse(entry.0));
    found.dedup_by(|a, b| a.1 == b.1);
    found
        .into_iter()
        .filter(|(related, _)| *related)
        .map(|(_, name)| name)
        .take(2)
        .collect()
}

/// Whether the function around `index` returns `Result` or `Option` (so `?` compiles).
fn enclosing_fn_returns_fallible(lines: &[&str], index: usize) -> bool {
    let Some(start) = lines[..=index]
        .iter()
        .rposition(|line| line.contains("fn "))
    else {
        return false;
    };
    let signature: String = lines[start..=index]
        .iter()
        .take_while(|line| !line.contains('{'))
        .copied()
        .collect();
    let header = lines[start..=index]
        .iter()
        .find(|line| line.contains('{'))
        .copied()
        .unwrap_or_default();
    let text = format!("{signature}{header}");
    text.contains("-> Result") || text.contains("-> Option")
}

/// `a + b` → `a.saturating_add(b)` for one simple binary expression on the line.
fn saturating(line: &str) -> Option<String> {
    for (op, method) in [
        (" + ", "saturating_add"),
        (" - ", "saturating_sub"),
        (" * ", "saturating_mul"),
    ] {
        if let Some(index) = line.find(op) {
            let (left, right) = (&line[..index], &line[index + op.len()..]);
            let lhs_start = left
                .rfind(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.'))
                .map_or(0, |i| i + 1);
            let rhs_end = right
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.'))
                .unwrap_or(right.len());
            let (lhs, rhs) = (&left[lhs_start..], &right[..rhs_end]);
            if lhs.is_empty() || rhs.is_empty() {
                continue;
            }
            return Some(format!(
                "{}{lhs}.{method}({rhs}){}",
                &left[..lhs_start],
                &right[rhs_end..]
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCE: &str = "pub const DEFAULT_METHOD: M = M::Card;\npub const DEFAULT_LIMIT: u32 = 5;\n\npub fn pay(c: &C) -> Result<R, E> {\n    let method = c.preferred_method.unwrap();\n    Ok(R)\n}\n";

    #[test]
    fn option_unwrap_gets_the_related_default_then_unwrap_or_default_then_question_mark() {
        let path = RepoPath::parse("src/pay.rs").unwrap();
        let found = rust_candidates(
            &path,
            SOURCE,
            5,
            "called `Option::unwrap()` on a `None` value",
        );
        let templates: Vec<_> = found.iter().map(|c| c.template.as_str()).collect();
        assert_eq!(
            templates,
            [
                "rust.unwrap.unwrap_or_default_in_scope",
                "rust.unwrap.unwrap_or_default",
                "rust.unwrap.question_mark"
            ]
        );
        assert!(
            found[0]
                .diff
                .contains("+    let method = c.preferred_method.unwrap_or(DEFAULT_METHOD);"),
            "{}",
            found[0].diff
        );
        let offers_limit = found.iter().any(|c| {
            c.diff
                .lines()
                .any(|l| l.starts_with('+') && l.contains("DEFAULT_LIMIT"))
        });
        assert!(!offers_limit, "an unrelated default is not offered");
        assert_eq!((found[0].lines_added, found[0].lines_removed), (1, 1));
    }

    #[test]
    fn expect_with_nested_parentheses_is_recognised() {
        let (before, call, after) =
            find_unwrap("    let x = y.expect(&format!(\"{}\", z));\n").unwrap();
        assert_eq!(
            (before, call, after),
            ("    let x = y", ".expect(&format!(\"{}\", z))", ";\n")
        );
    }

    #[test]
    fn overflow_becomes_saturating() {
        assert_eq!(
            saturating("    let total = amount + fee;").as_deref(),
            Some("    let total = amount.saturating_add(fee);")
        );
    }

    #[test]
    fn lines_without_a_known_fault_yield_nothing() {
        let path = RepoPath::parse("src/pay.rs").unwrap();
        assert!(rust_candidates(&path, SOURCE, 6, "boom").is_empty());
        assert!(
            rust_candidates(&path, SOURCE, 99, "boom").is_empty(),
            "line past the end"
        );
        assert!(rust_candidates(&RepoPath::parse("app.py").unwrap(), SOURCE, 5, "x").is_empty());
    }
}
