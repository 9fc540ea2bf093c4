//! Mutations of a suspicious line for faults without a crash template: comparison boundaries
//! (`<` ↔ `<=`), equality, negated conditions, logical and arithmetic operators, and off-by-one
//! integer constants. Each mutation is one small candidate with a low confidence; the safety
//! gate's tests and replayed requests decide which, if any, is the fix.
//!
//! Text inside string literals and comments is never mutated.

use super::Edit;
use crate::git::RepoPath;

/// How many of each kind of mutation one line may yield.
const PER_KIND: usize = 2;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Language {
    /// Rust and other C-like languages: `//` comments, `!`, `&&`, `||`.
    CLike,
    Python,
}

pub(super) fn at_line(path: &RepoPath, source: &str, line: u32) -> Vec<Edit> {
    let language = match path.as_str().rsplit('.').next() {
        Some("py") => Language::Python,
        Some("rs" | "go" | "java" | "js" | "ts" | "c" | "cc" | "cpp" | "kt" | "scala" | "cs") => {
            Language::CLike
        }
        _ => return Vec::new(),
    };
    let Some(text) = source.split_inclusive('\n').nth(line as usize - 1) else {
        return Vec::new();
    };
    let mut out: Vec<Edit> = mutations(text, language)
        .into_iter()
        .map(|(replacement, template, confidence, what)| Edit {
            line,
            replacement,
            template: template.to_owned(),
            confidence,
            rationale: format!(
                "mutation at {}:{line}: {what}; nothing in the failure names this operator, so \
                 only the gate's tests and replayed requests can tell whether it is the fix",
                path.as_str()
            ),
        })
        .collect();
    out.dedup_by(|a, b| a.replacement == b.replacement);
    out
}

/// (new line, template, confidence, what changed).
fn mutations(line: &str, language: Language) -> Vec<(String, &'static str, f64, String)> {
    let trimmed = line.trim_start();
    let skipped = match language {
        Language::CLike => {
            trimmed.starts_with("//")
                || trimmed.starts_with("use ")
                || trimmed.starts_with("#[")
                || trimmed.starts_with("#!")
        }
        Language::Python => {
            trimmed.starts_with('#')
                || trimmed.starts_with("import ")
                || trimmed.starts_with("from ")
        }
    };
    if skipped || trimmed.is_empty() {
        return Vec::new();
    }
    let code_end = code_end(line, language);
    let in_code = string_mask(&line[..code_end], language);
    let mut out = Vec::new();
    let mut swap = |from: &str, to: &str, template: &'static str, confidence: f64, what: &str| {
        let mut found = 0;
        for (at, _) in line[..code_end].match_indices(from) {
            if found == PER_KIND || !in_code[at] {
                continue;
            }
            found += 1;
            let mut mutated = String::with_capacity(line.len() + 2);
            mutated.push_str(&line[..at]);
            mutated.push_str(to);
            mutated.push_str(&line[at + from.len()..]);
            out.push((
                mutated,
                template,
                confidence,
                format!("{what} (`{}` → `{}`)", from.trim(), to.trim()),
            ));
        }
    };
    for (from, to) in [
        (" < ", " <= "),
        (" <= ", " < "),
        (" > ", " >= "),
        (" >= ", " > "),
    ] {
        swap(
            from,
            to,
            "mutation.boundary",
            0.3,
            "move the comparison's boundary",
        );
    }
    for (from, to) in [(" == ", " != "), (" != ", " == ")] {
        swap(
            from,
            to,
            "mutation.equality",
            0.2,
            "invert the equality test",
        );
    }
    let logical: &[(&str, &str)] = match language {
        Language::CLike => &[(" && ", " || "), (" || ", " && ")],
        Language::Python => &[(" and ", " or "), (" or ", " and ")],
    };
    for (from, to) in logical {
        swap(
            from,
            to,
            "mutation.logical",
            0.2,
            "swap the logical operator",
        );
    }
    for (from, to) in [(" + ", " - "), (" - ", " + ")] {
        swap(
            from,
            to,
            "mutation.arithmetic",
            0.15,
            "swap the arithmetic operator",
        );
    }
    out.extend(negations(line, code_end, language));
    out.extend(off_by_one(line, code_end, &in_code));
    out
}

/// `if !x {` ↔ `if x {`, `if x {` → `if !(x) {`; Python `if not x:` ↔ `if x:`.
fn negations(
    line: &str,
    code_end: usize,
    language: Language,
) -> Vec<(String, &'static str, f64, String)> {
    let indent = &line[..line.len() - line.trim_start().len()];
    let code = line[indent.len()..code_end].trim_end();
    let rest = &line[indent.len() + code.len()..];
    let mut out = Vec::new();
    for keyword in ["if ", "while ", "} else if ", "elif "] {
        let Some(condition) = code.strip_prefix(keyword) else {
            continue;
        };
        let (condition, tail) = match language {
            Language::CLike => match condition.strip_suffix('{') {
                Some(c) => (c.trim_end(), " {"),
                None => continue,
            },
            Language::Python => match condition.strip_suffix(':') {
                Some(c) => (c.trim_end(), ":"),
                None => continue,
            },
        };
        let negated = match language {
            Language::CLike => match condition.strip_prefix('!') {
                Some(inner) if !inner.starts_with('=') => inner.to_owned(),
                _ => format!("!({condition})"),
            },
            Language::Python => match condition.strip_prefix("not ") {
                Some(inner) => inner.to_owned(),
                None => format!("not ({condition})"),
            },
        };
        out.push((
            format!("{indent}{keyword}{negated}{tail}{rest}"),
            "mutation.negation",
            0.25,
            format!("negate the condition `{condition}`"),
        ));
        break;
    }
    out
}

/// Each standalone decimal integer literal one more and one less.
fn off_by_one(
    line: &str,
    code_end: usize,
    in_code: &[bool],
) -> Vec<(String, &'static str, f64, String)> {
    let bytes = line.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut literals = 0;
    while i < code_end && literals < PER_KIND {
        if !bytes[i].is_ascii_digit() || !in_code[i] {
            i += 1;
            continue;
        }
        let start = i;
        while i < code_end && bytes[i].is_ascii_digit() {
            i += 1;
        }
        let word_before = start > 0
            && (bytes[start - 1].is_ascii_alphanumeric()
                || bytes[start - 1] == b'_'
                || bytes[start - 1] == b'.');
        let word_after = i < bytes.len()
            && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b'.');
        if word_before || word_after || i - start > 9 {
            continue;
        }
        let Ok(value) = line[start..i].parse::<u64>() else {
            continue;
        };
        literals += 1;
        let mut variants = vec![value + 1];
        if value > 0 {
            variants.push(value - 1);
        }
        for changed in variants {
            out.push((
                format!("{}{changed}{}", &line[..start], &line[i..]),
                "mutation.off_by_one",
                0.2,
                format!("change the constant {value} to {changed}"),
            ));
        }
    }
    out
}

/// Where the code of a line ends: before a trailing comment.
fn code_end(line: &str, language: Language) -> usize {
    let mask = string_mask(line, language);
    let marker = match language {
        Language::CLike => "//",
        Language::Python => "#",
    };
    line.match_indices(marker)
        .find(|(at, _)| mask[*at])
        .map_or_else(|| line.trim_end_matches(['\n', '\r']).len(), |(at, _)| at)
}

/// For each byte: true when it is code, false inside a string literal.
fn string_mask(line: &str, language: Language) -> Vec<bool> {
    let mut mask = vec![true; line.len() + 1];
    let mut quote: Option<u8> = None;
    let mut escaped = false;
    for (i, &b) in line.as_bytes().iter().enumerate() {
        match quote {
            Some(q) => {
                mask[i] = false;
                if escaped {
                    escaped = false;
                } else if b == b'\\' {
                    escaped = true;
                } else if b == q {
                    quote = None;
                }
            }
            None if b == b'"' || (b == b'\'' && language == Language::Python) => {
                mask[i] = false;
                quote = Some(b);
            }
            None => {}
        }
    }
    mask
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(path: &str, source: &str) -> Vec<(String, String)> {
        at_line(&RepoPath::parse(path).unwrap(), source, 1)
            .into_iter()
            .map(|e| (e.template, e.replacement))
            .collect()
    }

    #[test]
    fn boundaries_constants_and_negations_of_a_rust_condition() {
        let found = lines("src/limit.rs", "    if amount < MAX + 1 {\n");
        let want = [
            ("mutation.boundary", "    if amount <= MAX + 1 {\n"),
            ("mutation.arithmetic", "    if amount < MAX - 1 {\n"),
            ("mutation.negation", "    if !(amount < MAX + 1) {\n"),
            ("mutation.off_by_one", "    if amount < MAX + 2 {\n"),
            ("mutation.off_by_one", "    if amount < MAX + 0 {\n"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(t, r)| ((*t).to_owned(), (*r).to_owned()))
            .collect();
        assert_eq!(found, want);
    }

    #[test]
    fn python_conditions_and_logic() {
        let found = lines("app.py", "    if not ready and count >= 3:  # wait\n");
        let replacements: Vec<&str> = found.iter().map(|(_, r)| r.as_str()).collect();
        assert!(replacements.contains(&"    if not ready and count > 3:  # wait\n"));
        assert!(replacements.contains(&"    if not ready or count >= 3:  # wait\n"));
        assert!(replacements.contains(&"    if ready and count >= 3:  # wait\n"));
        assert!(replacements.contains(&"    if not ready and count >= 4:  # wait\n"));
    }

    #[test]
    fn strings_comments_identifiers_and_imports_are_left_alone() {
        assert!(lines("a.rs", "    log(\"a < b\", x1); // 3 < 4\n").is_empty());
        assert!(lines("a.py", "import os\n").is_empty());
        assert!(lines("a.rs", "let v: u64 = 0x10;\n").is_empty());
        assert!(lines("README.md", "a < b\n").is_empty());
    }
}
