//! Rust fix templates:
//! - `Option`/`Result` `unwrap()`/`expect(..)` panics → `unwrap_or(<default in scope>)`,
//!   `unwrap_or_default()`, `?` when the enclosing function returns the same kind, an early
//!   error (`ok_or_else(|| <the function's own error>)?`, `.ok()?`);
//! - index out of bounds → `.get(i)` with a default in scope, the type's default, `?` or an error;
//! - arithmetic overflow → `saturating_*`, or `checked_*` with `?` or an error.

use super::{closing, edit, expression_start, identifier_at, operand_end, related, words};
use crate::strategy::Edit;

/// Which kind of value an `unwrap` was called on, from the panic message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Option,
    Result,
    Unknown,
}

impl Kind {
    fn family(self) -> &'static str {
        match self {
            Kind::Option => "rust.option_unwrap",
            Kind::Result => "rust.result_unwrap",
            Kind::Unknown => "rust.unwrap",
        }
    }
}

pub(super) fn edits(lines: &[&str], index: usize, failure: &str) -> Vec<Edit> {
    let target = lines[index];
    let code = code_part(target);
    let function = Function::around(lines, index);
    let mut out = Vec::new();
    if let Some((start, end)) = find_unwrap(code) {
        unwrap_edits(lines, index, (start, end), failure, &function, &mut out);
    }
    if failure.contains("index out of bounds")
        || failure.contains("out of range for slice")
        || failure.contains("out of bounds of")
    {
        index_edits(lines, index, &function, &mut out);
    }
    if failure.contains("overflow") {
        overflow_edits(target, failure, &function, &mut out);
    }
    out
}

/// The line without a trailing `//` comment (strings are respected).
fn code_part(line: &str) -> &str {
    let bytes = line.as_bytes();
    let mut in_string = false;
    let mut escaped = false;
    for i in 0..bytes.len() {
        let b = bytes[i];
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        } else if b == b'/' && bytes.get(i + 1) == Some(&b'/') {
            return &line[..i];
        }
    }
    line
}

fn unwrap_edits(
    lines: &[&str],
    index: usize,
    (start, end): (usize, usize),
    failure: &str,
    function: &Function,
    out: &mut Vec<Edit>,
) {
    let target = lines[index];
    let (before, call, after) = (&target[..start], &target[start..end], &target[end..]);
    let receiver_start = expression_start(before, b":?");
    let receiver = &before[receiver_start..];
    let name = receiver_name(receiver);
    let kind = if failure.contains("Option::unwrap")
        || failure.contains("Option::expect")
        || failure.contains("on a `None` value")
    {
        Kind::Option
    } else if failure.contains("Result::unwrap")
        || failure.contains("Result::expect")
        || failure.contains("on an `Err` value")
    {
        Kind::Result
    } else {
        Kind::Unknown
    };
    let family = kind.family();
    let what = match kind {
        Kind::Option => "is `None`",
        Kind::Result => "is an `Err`",
        Kind::Unknown => "is missing",
    };

    for default in defaults_in_scope(lines, index, function, &words(&name)) {
        out.push(edit(
            format!("{before}.unwrap_or({default}){after}"),
            &format!("{family}.unwrap_or"),
            if kind == Kind::Option { 0.9 } else { 0.8 },
            format!(
                "`{name}{call}` panics when the value {what}; fall back to `{default}`, the default \
                 already in scope, so the request succeeds the way it did before the change"
            ),
        ));
    }
    out.push(edit(
        format!("{before}.unwrap_or_default(){after}"),
        &format!("{family}.unwrap_or_default"),
        0.7,
        format!("`{name}{call}` panics when the value {what}; use the type's `Default` instead"),
    ));
    let returns = function.returns();
    let same_kind = matches!(
        (kind, returns),
        (Kind::Option, Returns::Option) | (Kind::Result, Returns::Result)
    );
    if same_kind || (kind == Kind::Unknown && returns != Returns::Other) {
        out.push(edit(
            format!("{before}?{after}"),
            &format!("{family}.question_mark"),
            if same_kind { 0.55 } else { 0.45 },
            format!(
                "`{name}{call}` panics; propagate the missing value to the caller with `?`, as \
                 the function's return type allows"
            ),
        ));
    }
    match (kind, returns) {
        (Kind::Option | Kind::Unknown, Returns::Result) => {
            if let Some(error) = function.error.clone() {
                out.push(edit(
                    format!("{before}.ok_or_else(|| {error})?{after}"),
                    &format!("{family}.early_error"),
                    0.5,
                    format!(
                        "`{name}{call}` panics; answer with the error this function already \
                         returns (`{error}`) instead of crashing"
                    ),
                ));
            }
        }
        (Kind::Result, Returns::Option) => out.push(edit(
            format!("{before}.ok()?{after}"),
            &format!("{family}.ok_question_mark"),
            0.5,
            format!("`{name}{call}` panics on an error; return `None` to the caller instead"),
        )),
        _ => {}
    }
}

/// The byte range of the first `.unwrap()` or `.expect(..)` call on the line.
fn find_unwrap(line: &str) -> Option<(usize, usize)> {
    let unwrap = line.find(".unwrap()");
    let expect = line.find(".expect(");
    match (unwrap, expect) {
        (Some(u), Some(e)) if e < u => expect_range(line, e),
        (Some(u), _) => Some((u, u + ".unwrap()".len())),
        (None, Some(e)) => expect_range(line, e),
        (None, None) => None,
    }
}

fn expect_range(line: &str, start: usize) -> Option<(usize, usize)> {
    let open = start + ".expect".len();
    closing(line, open).map(|close| (start, close + 1))
}

/// The last path segment of a receiver: `customer.preferred_method` → `preferred_method`,
/// `map.get(&key)` → `get`.
fn receiver_name(receiver: &str) -> String {
    let trimmed = receiver.trim_end_matches([')', ']']);
    let trimmed = match trimmed.rfind(['(', '[']) {
        Some(open) => &trimmed[..open],
        None => trimmed,
    };
    trimmed
        .rsplit(|c: char| !(c.is_alphanumeric() || c == '_'))
        .find(|s| !s.is_empty())
        .unwrap_or(receiver)
        .to_owned()
}

/// Defaults in scope related by name to the fault (`preferred_method` → `DEFAULT_METHOD`):
/// `const`/`static` items of the file named `DEFAULT_*`/`FALLBACK_*`, and `let default_*`
/// bindings of the enclosing function before the line.
fn defaults_in_scope(
    lines: &[&str],
    index: usize,
    function: &Function,
    words: &[String],
) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    for line in lines {
        let rest = line.trim_start();
        let rest = rest
            .strip_prefix("pub(crate) ")
            .or_else(|| rest.strip_prefix("pub(super) "))
            .or_else(|| rest.strip_prefix("pub "))
            .unwrap_or(rest);
        let Some(rest) = rest
            .strip_prefix("const ")
            .or_else(|| rest.strip_prefix("static "))
        else {
            continue;
        };
        let name = identifier_at(rest);
        if (name.starts_with("DEFAULT") || name.starts_with("FALLBACK"))
            && related(&name, words)
            && !found.contains(&name)
        {
            found.push(name);
        }
    }
    if let Some(start) = function.start {
        for line in &lines[start..index] {
            let Some(rest) = line.trim_start().strip_prefix("let ") else {
                continue;
            };
            let name = identifier_at(rest.trim_start_matches("mut "));
            if (name.starts_with("default") || name.starts_with("fallback"))
                && related(&name, words)
                && !found.contains(&name)
            {
                found.push(name);
            }
        }
    }
    found.truncate(2);
    found
}

fn index_edits(lines: &[&str], index: usize, function: &Function, out: &mut Vec<Edit>) {
    let target = lines[index];
    let code = code_part(target);
    let returns = function.returns();
    let error = function.error.clone();
    let bytes = code.as_bytes();
    let mut seen = 0;
    for (open, _) in code.match_indices('[') {
        if seen == 3 {
            break;
        }
        let Some(&prev) = open.checked_sub(1).and_then(|p| bytes.get(p)) else {
            continue;
        };
        if !(prev.is_ascii_alphanumeric() || prev == b'_' || prev == b')' || prev == b']') {
            continue; // an array literal, a slice type or an attribute
        }
        let Some(close) = closing(code, open) else {
            continue;
        };
        let rest = code[close + 1..].trim_start();
        let assigned = rest.starts_with('=') && !rest.starts_with("==")
            || ["+=", "-=", "*=", "/=", "%=", "|=", "&=", "^="]
                .iter()
                .any(|op| rest.starts_with(op));
        if assigned {
            continue;
        }
        let base_start = expression_start(&code[..open], b":");
        let base = &code[base_start..open];
        if base.is_empty() || base.ends_with('!') {
            continue;
        }
        seen += 1;
        let index_expr = &code[open + 1..close];
        let borrowed = code[..base_start].ends_with('&');
        let (start, element) = if borrowed {
            (base_start - 1, format!("{base}.get({index_expr})"))
        } else {
            (base_start, format!("{base}.get({index_expr}).cloned()"))
        };
        let (before, after) = (&target[..start], &target[close + 1..]);
        let name = receiver_name(base);
        let shown = format!("{base}[{index_expr}]");
        if !borrowed || index_expr.contains("..") {
            for default in defaults_in_scope(lines, index, function, &words(&name)) {
                if borrowed {
                    continue;
                }
                out.push(edit(
                    format!("{before}{element}.unwrap_or({default}){after}"),
                    "rust.index.get_or",
                    0.7,
                    format!(
                        "`{shown}` panics when the index is out of bounds; look it up with \
                         `.get` and fall back to `{default}`, the default already in scope"
                    ),
                ));
            }
            out.push(edit(
                format!("{before}{element}.unwrap_or_default(){after}"),
                "rust.index.get_or_default",
                0.6,
                format!(
                    "`{shown}` panics when the index is out of bounds; look it up with `.get` \
                     and use the type's `Default` when it is missing"
                ),
            ));
        }
        if returns == Returns::Option {
            out.push(edit(
                format!("{before}{element}?{after}"),
                "rust.index.question_mark",
                0.5,
                format!(
                    "`{shown}` panics when the index is out of bounds; return `None` to the \
                     caller instead"
                ),
            ));
        }
        if let (Returns::Result, Some(error)) = (returns, &error) {
            out.push(edit(
                format!("{before}{element}.ok_or_else(|| {error})?{after}"),
                "rust.index.early_error",
                0.45,
                format!(
                    "`{shown}` panics when the index is out of bounds; answer with the error \
                     this function already returns (`{error}`)"
                ),
            ));
        }
    }
}

fn overflow_edits(target: &str, failure: &str, function: &Function, out: &mut Vec<Edit>) {
    let ops: &[(&str, &str)] = if failure.contains("attempt to add") {
        &[("+", "add")]
    } else if failure.contains("attempt to subtract") {
        &[("-", "sub")]
    } else if failure.contains("attempt to multiply") {
        &[("*", "mul")]
    } else {
        &[("+", "add"), ("-", "sub"), ("*", "mul")]
    };
    let code = code_part(target);
    for (op, method) in ops {
        let Some((start, end, lhs, rhs)) = binary_operation(code, op) else {
            continue;
        };
        let (before, after) = (&target[..start], &target[end..]);
        let compound = code[start..end].contains(&format!("{op}="));
        let assign = |value: String| {
            if compound {
                format!("{before}{lhs} = {value}{after}")
            } else {
                format!("{before}{value}{after}")
            }
        };
        out.push(edit(
            assign(format!("{lhs}.saturating_{method}({rhs})")),
            "rust.overflow.saturating",
            0.6,
            format!(
                "`{lhs} {op} {rhs}` overflowed; saturate at the type's bounds instead of \
                 panicking"
            ),
        ));
        match function.returns() {
            Returns::Option => out.push(edit(
                assign(format!("{lhs}.checked_{method}({rhs})?")),
                "rust.overflow.checked_question_mark",
                0.5,
                format!("`{lhs} {op} {rhs}` overflowed; return `None` to the caller instead"),
            )),
            Returns::Result => {
                if let Some(error) = function.error.clone() {
                    out.push(edit(
                        assign(format!(
                            "{lhs}.checked_{method}({rhs}).ok_or_else(|| {error})?"
                        )),
                        "rust.overflow.checked_or_error",
                        0.5,
                        format!(
                            "`{lhs} {op} {rhs}` overflowed; answer with the error this function \
                             already returns (`{error}`)"
                        ),
                    ));
                }
            }
            Returns::Other => {}
        }
    }
}

/// The first ` op ` (or ` op= `) on the line with simple operands: (start, end, lhs, rhs).
fn binary_operation<'a>(code: &'a str, op: &str) -> Option<(usize, usize, &'a str, &'a str)> {
    for spaced in [format!(" {op}= "), format!(" {op} ")] {
        let Some(at) = code.find(&spaced) else {
            continue;
        };
        let left = &code[..at];
        let lhs_start = expression_start(left, b":");
        let lhs = &code[lhs_start..at];
        let right = &code[at + spaced.len()..];
        let rhs_len = operand_end(right, b":");
        let rhs = &right[..rhs_len];
        if lhs.is_empty() || rhs.is_empty() {
            continue;
        }
        return Some((lhs_start, at + spaced.len() + rhs_len, lhs, rhs));
    }
    None
}

/// What the function around a line returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Returns {
    Option,
    Result,
    Other,
}

/// The `fn` enclosing a line: where it starts and its signature.
#[derive(Debug, Default)]
struct Function {
    /// Index of the line holding `fn`.
    start: Option<usize>,
    signature: String,
    /// The first error the body builds before the line, e.g. `PaymentError::UnknownCustomer(..)`.
    error: Option<String>,
}

impl Function {
    fn around(lines: &[&str], index: usize) -> Self {
        let Some(start) = lines[..=index].iter().rposition(|line| is_fn_line(line)) else {
            return Self::default();
        };
        let mut signature = String::new();
        for line in &lines[start..=index] {
            match line.find('{') {
                Some(brace) => {
                    signature.push_str(&line[..brace]);
                    break;
                }
                None => signature.push_str(line.trim_end()),
            }
        }
        let mut function = Self {
            start: Some(start),
            signature,
            error: None,
        };
        function.error = function.find_error(lines, index);
        function
    }

    fn returns(&self) -> Returns {
        let Some((_, ret)) = self.signature.split_once("->") else {
            return Returns::Other;
        };
        let ret = ret.split(" where ").next().unwrap_or_default().trim();
        if ret.starts_with("Option<") {
            Returns::Option
        } else if ret.starts_with("Result<")
            || ret.starts_with("std::result::Result<")
            || ret.starts_with("anyhow::Result<")
            || ret.ends_with("Result")
            || ret.contains("Result<")
        {
            Returns::Result
        } else {
            Returns::Other
        }
    }

    /// The error expression of the first `ok_or_else(|| E)`, `ok_or(E)` or `Err(E)` in the body.
    fn find_error(&self, lines: &[&str], index: usize) -> Option<String> {
        let start = self.start?;
        for line in lines.iter().take(lines.len().min(index + 40)).skip(start) {
            let code = code_part(line);
            for (marker, closure) in [("ok_or_else(", true), ("ok_or(", false), ("Err(", false)] {
                let Some(at) = code.find(marker) else {
                    continue;
                };
                if marker == "Err(" && at > 0 && {
                    let prev = code.as_bytes()[at - 1];
                    prev.is_ascii_alphanumeric() || prev == b'_'
                } {
                    continue;
                }
                let open = at + marker.len() - 1;
                let Some(close) = closing(code, open) else {
                    continue;
                };
                let inner = code[open + 1..close].trim();
                let inner = if closure {
                    match inner.strip_prefix("||") {
                        Some(body) => body.trim(),
                        None => continue,
                    }
                } else {
                    inner
                };
                // `Err(e)` passes a variable on; only a constructed error is reusable here.
                let variable = inner
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
                if !inner.is_empty() && !variable {
                    return Some(inner.to_owned());
                }
            }
        }
        None
    }
}

fn is_fn_line(line: &str) -> bool {
    let code = code_part(line).trim_start();
    code.starts_with("fn ")
        || code.contains(" fn ")
        || code.starts_with("pub fn ")
        || code.starts_with("async fn ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(source: &str, line: usize, failure: &str) -> Vec<Edit> {
        let lines: Vec<&str> = source.split_inclusive('\n').collect();
        edits(&lines, line - 1, failure)
    }

    fn templates(found: &[Edit]) -> Vec<&str> {
        found.iter().map(|e| e.template.as_str()).collect()
    }

    const PAY: &str = "pub const DEFAULT_METHOD: M = M::Card;\npub const DEFAULT_LIMIT: u32 = 5;\n\npub fn pay(c: &C, id: &str) -> Result<R, E> {\n    let c = find(id).ok_or_else(|| E::Unknown(id.to_owned()))?;\n    let method = c.preferred_method.unwrap();\n    Ok(R)\n}\n";

    #[test]
    fn option_unwrap_gets_the_related_default_then_the_others() {
        let found = run(PAY, 6, "called `Option::unwrap()` on a `None` value");
        assert_eq!(
            templates(&found),
            [
                "rust.option_unwrap.unwrap_or",
                "rust.option_unwrap.unwrap_or_default",
                "rust.option_unwrap.early_error",
            ]
        );
        assert_eq!(
            found[0].replacement,
            "    let method = c.preferred_method.unwrap_or(DEFAULT_METHOD);\n"
        );
        assert_eq!(
            found[2].replacement,
            "    let method = c.preferred_method.ok_or_else(|| E::Unknown(id.to_owned()))?;\n"
        );
        assert!(
            !found
                .iter()
                .any(|e| e.replacement.contains("DEFAULT_LIMIT")),
            "an unrelated default is not offered"
        );
    }

    #[test]
    fn question_mark_only_where_the_return_type_takes_it() {
        let source = "fn first(xs: &[u32]) -> Option<u32> {\n    let x = xs.first().copied().unwrap();\n    Some(x)\n}\n";
        let found = run(source, 2, "called `Option::unwrap()` on a `None` value");
        assert!(templates(&found).contains(&"rust.option_unwrap.question_mark"));
        assert_eq!(
            found.last().unwrap().replacement,
            "    let x = xs.first().copied()?;\n"
        );

        let source = "fn parse(s: &str) -> Option<u32> {\n    Some(s.parse::<u32>().expect(\"number\"))\n}\n";
        let found = run(source, 2, "number: ParseIntError { kind: InvalidDigit }");
        assert!(templates(&found).contains(&"rust.unwrap.question_mark"));
        let found = run(source, 2, "called `Result::unwrap()` on an `Err` value: x");
        assert_eq!(
            found.last().unwrap().replacement,
            "    Some(s.parse::<u32>().ok()?)\n"
        );
    }

    #[test]
    fn expect_with_nested_parentheses_is_recognised() {
        let line = "    let x = y.expect(&format!(\"{}\", z));\n";
        let (start, end) = find_unwrap(line).unwrap();
        assert_eq!(&line[start..end], ".expect(&format!(\"{}\", z))");
    }

    #[test]
    fn index_out_of_bounds_becomes_a_checked_lookup() {
        let source = "const DEFAULT_RATE: u32 = 1;\nfn rate(rates: &[u32], i: usize) -> u32 {\n    let r = rates[i] * 2;\n    r\n}\n";
        let found = run(
            source,
            3,
            "index out of bounds: the len is 3 but the index is 7",
        );
        assert_eq!(
            templates(&found),
            ["rust.index.get_or", "rust.index.get_or_default"]
        );
        assert_eq!(
            found[0].replacement,
            "    let r = rates.get(i).cloned().unwrap_or(DEFAULT_RATE) * 2;\n"
        );
        let slice = "fn head(s: &str) -> &str {\n    &s[..4]\n}\n";
        let found = run(slice, 2, "byte index 4 is out of bounds of `ab`");
        assert_eq!(found[0].replacement, "    s.get(..4).unwrap_or_default()\n");
        let assignment = "fn set(v: &mut [u8]) {\n    v[9] = 1;\n}\n";
        assert!(run(assignment, 2, "index out of bounds").is_empty());
    }

    #[test]
    fn overflow_saturates_or_checks() {
        let source =
            "fn total(a: u64, b: u64) -> Option<u64> {\n    let t = fee(a) + b;\n    Some(t)\n}\n";
        let found = run(source, 2, "attempt to add with overflow");
        assert_eq!(
            found[0].replacement,
            "    let t = fee(a).saturating_add(b);\n"
        );
        assert_eq!(
            found[1].replacement,
            "    let t = fee(a).checked_add(b)?;\n"
        );
        let compound = "fn bump(&mut self) {\n    self.count -= step;\n}\n";
        let found = run(compound, 2, "attempt to subtract with overflow");
        assert_eq!(
            found[0].replacement,
            "    self.count = self.count.saturating_sub(step);\n"
        );
    }

    #[test]
    fn lines_without_a_known_fault_yield_nothing() {
        assert!(run(PAY, 7, "boom").is_empty());
    }
}
