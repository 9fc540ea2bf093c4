//! Fix templates: for a fault class recognised in the failure message, rewrites of one line that
//! remove the fault. Rust: `Option`/`Result` `unwrap`/`expect`, index out of bounds, arithmetic
//! overflow. Python: attribute access or call on `None`.
//!
//! Templates look at one line at a time with the file around it; they know the language's
//! surface syntax, not its types, so a candidate may not compile: the safety gate builds and
//! tests each one, and confidence says how likely a template is to be right.

mod python;
mod rust;

use super::Edit;
use crate::git::RepoPath;

/// Every template edit for `line` (1-based) of `source`, best first.
pub(super) fn at_line(path: &RepoPath, source: &str, line: u32, failure: &str) -> Vec<Edit> {
    let lines: Vec<&str> = source.split_inclusive('\n').collect();
    let Some(index) = (line as usize).checked_sub(1).filter(|i| *i < lines.len()) else {
        return Vec::new();
    };
    let file = path.as_str();
    let mut edits = if file.ends_with(".rs") {
        rust::edits(&lines, index, failure)
    } else if file.ends_with(".py") {
        python::edits(&lines, index, failure)
    } else {
        Vec::new()
    };
    for edit in &mut edits {
        edit.line = line;
    }
    edits.retain(|edit| edit.replacement != lines[index]);
    edits
}

/// An edit of the line being looked at; `at_line` fills in the line number.
fn edit(replacement: String, template: &str, confidence: f64, rationale: String) -> Edit {
    Edit {
        line: 0,
        replacement,
        template: template.to_owned(),
        confidence,
        rationale,
    }
}

/// The words of an identifier worth matching (longer than two characters), upper-cased:
/// `preferred_method` → `PREFERRED`, `METHOD`.
fn words(name: &str) -> Vec<String> {
    name.split(|c: char| c == '_' || !c.is_alphanumeric())
        .filter(|w| w.len() > 2)
        .map(str::to_ascii_uppercase)
        .collect()
}

/// Whether a default's name shares a word with the names around the fault (a plural matching
/// its singular: `rates` → `DEFAULT_RATE`).
fn related(candidate: &str, words: &[String]) -> bool {
    let upper = candidate.to_ascii_uppercase();
    words.iter().any(|w| {
        let singular = w.strip_suffix('S').filter(|s| s.len() > 2).unwrap_or(w);
        upper.contains(singular)
    })
}

/// The byte index of the bracket closing the one at `open`, if the line has it.
fn closing(text: &str, open: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let (open_ch, close_ch) = match bytes.get(open)? {
        b'(' => (b'(', b')'),
        b'[' => (b'[', b']'),
        b'{' => (b'{', b'}'),
        _ => return None,
    };
    let mut depth = 0usize;
    let mut quote: Option<u8> = None;
    let mut escaped = false;
    for (i, &b) in bytes.iter().enumerate().skip(open) {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == q {
                quote = None;
            }
            continue;
        }
        match b {
            b'"' => quote = Some(b),
            _ if b == open_ch => depth += 1,
            _ if b == close_ch => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// The byte index where the primary expression ending at the end of `before` starts: names,
/// field accesses, calls and indexing (`self.items.get(sku)`, `rows[i].cells`). `extra` lists
/// punctuation that belongs to names in the language (`:` for Rust paths, `?` for Rust's try).
fn expression_start(before: &str, extra: &[u8]) -> usize {
    let bytes = before.as_bytes();
    let mut i = bytes.len();
    while i > 0 {
        let b = bytes[i - 1];
        if b == b')' || b == b']' {
            let close = b;
            let open = if close == b')' { b'(' } else { b'[' };
            let mut depth = 0usize;
            let mut j = i;
            while j > 0 {
                j -= 1;
                if bytes[j] == close {
                    depth += 1;
                } else if bytes[j] == open {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
            }
            if depth != 0 {
                return i;
            }
            i = j;
        } else if b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || extra.contains(&b) {
            i -= 1;
        } else {
            break;
        }
    }
    // A leading dot or `?` is not part of an expression.
    while i < bytes.len() && (bytes[i] == b'.' || bytes[i] == b'?' || bytes[i] == b':') {
        i += 1;
    }
    i
}

/// The byte index just past the operand starting at the beginning of `after`.
fn operand_end(after: &str, extra: &[u8]) -> usize {
    let bytes = after.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'(' || b == b'[' {
            match closing(after, i) {
                Some(close) => i = close + 1,
                None => return i,
            }
        } else if b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || extra.contains(&b) {
            i += 1;
        } else {
            break;
        }
    }
    i
}

/// The first identifier at or after `at`.
fn identifier_at(text: &str) -> String {
    text.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Source lines and failure texts are untrusted: no input makes a template panic, and
        /// every edit changes the line.
        #[test]
        fn templates_never_panic_and_always_change_the_line(
            line in prop::collection::vec(
                prop_oneof![
                    "[ -~\u{e9}\u{4e2d}]{0,6}",
                    prop::sample::select(vec![
                        ".unwrap()", ".expect(\"", "\"", ")", "(", "[", "]", "&", "?", " + ",
                        " += ", " - ", " * ", " < ", " >= ", " == ", " && ", " and ", "if ",
                        "not ", "!", "{", ":", "=", "#", "//", "item", ".x", ".supplier", "1",
                        "return ", "DEFAULT_X", "..",
                    ]).prop_map(str::to_owned),
                ],
                0..16,
            ).prop_map(|parts| parts.concat()),
            context in "[ -~\\n]{0,200}",
            failure in prop::sample::select(vec![
                "called `Option::unwrap()` on a `None` value",
                "called `Result::unwrap()` on an `Err` value: x",
                "index out of bounds: the len is 1 but the index is 2",
                "attempt to add with overflow",
                "overflow",
                "AttributeError: 'NoneType' object has no attribute 'x'",
                "TypeError: 'NoneType' object is not subscriptable",
                "TypeError: 'NoneType' object is not callable",
                "",
            ]),
        ) {
            let source = format!("{context}\n{line}\n{context}\n");
            let original = format!("{line}\n");
            let number = context.matches('\n').count() as u32 + 2;
            for file in ["src/x.rs", "app/x.py"] {
                let path = RepoPath::parse(file).unwrap();
                for edit in at_line(&path, &source, number, failure) {
                    prop_assert_ne!(&edit.replacement, &original);
                    prop_assert!(edit.confidence > 0.0 && edit.confidence < 1.0);
                }
                for edit in crate::strategy::mutation::at_line(&path, &source, number) {
                    prop_assert_ne!(&edit.replacement, &original);
                }
            }
        }
    }

    #[test]
    fn finds_the_expression_before_a_member_access() {
        let before = "    x = self.items.get(sku)";
        assert_eq!(
            &before[expression_start(before, &[])..],
            "self.items.get(sku)"
        );
        let before = "let v = rows[i + 1].cells";
        assert_eq!(
            &before[expression_start(before, &[])..],
            "rows[i + 1].cells"
        );
        let before = "foo(Self::LIMIT";
        assert_eq!(&before[expression_start(before, b":")..], "Self::LIMIT");
    }

    #[test]
    fn operands_end_at_the_first_token_outside_brackets() {
        assert_eq!(operand_end("fee(a, b) + c;", &[]), 9);
        assert_eq!(operand_end("x.y[2];", &[]), 6);
        assert_eq!(closing("f(\")\", g(1))", 1), Some(11));
    }
}
