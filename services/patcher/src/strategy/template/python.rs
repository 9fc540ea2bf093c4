//! Python fix templates for a value that is unexpectedly `None`:
//! - `AttributeError: 'NoneType' object has no attribute 'x'` (an attribute read or a method
//!   call on `None`);
//! - `TypeError: 'NoneType' object is not subscriptable` / `is not callable`.
//!
//! Each guards the expression with `... if <receiver> is not None else <fallback>`, the fallback
//! being a default constant in scope, or `None`; or returns early with the error answer the
//! function already gives when the receiver is a plain name.

use super::{closing, edit, expression_start, identifier_at, related, words};
use crate::strategy::Edit;

const KEYWORDS: &[&str] = &[
    "if", "elif", "while", "for", "in", "not", "and", "or", "return", "print", "assert", "del",
    "lambda", "yield", "await", "else", "is", "with", "import", "from", "raise",
];

/// What was `None`, from the failure text.
#[derive(Debug, PartialEq, Eq)]
enum Fault {
    Attribute(String),
    Subscript,
    Call,
}

pub(super) fn edits(lines: &[&str], index: usize, failure: &str) -> Vec<Edit> {
    let Some(fault) = fault(failure) else {
        return Vec::new();
    };
    let target = lines[index];
    let code = code_part(target);
    let mut out = Vec::new();
    for access in accesses(code, &fault).into_iter().take(2) {
        guards(lines, index, &access, &fault, &mut out);
    }
    out
}

fn fault(failure: &str) -> Option<Fault> {
    const ATTRIBUTE: &str = "'NoneType' object has no attribute '";
    if let Some(at) = failure.find(ATTRIBUTE) {
        let name = identifier_at(&failure[at + ATTRIBUTE.len()..]);
        return (!name.is_empty()).then_some(Fault::Attribute(name));
    }
    if failure.contains("'NoneType' object is not subscriptable") {
        return Some(Fault::Subscript);
    }
    if failure.contains("'NoneType' object is not callable") {
        return Some(Fault::Call);
    }
    None
}

/// One expression on the line that reads through a possibly-`None` receiver.
#[derive(Debug, PartialEq, Eq)]
struct Access {
    /// Byte range of the receiver (`item.supplier`).
    receiver: (usize, usize),
    /// End of the whole expression (`item.supplier.lead_time_days`, a call included).
    end: usize,
}

fn accesses(code: &str, fault: &Fault) -> Vec<Access> {
    let bytes = code.as_bytes();
    let mut out = Vec::new();
    match fault {
        Fault::Attribute(name) => {
            let needle = format!(".{name}");
            for (dot, _) in code.match_indices(&needle) {
                let after = dot + needle.len();
                if bytes
                    .get(after)
                    .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
                {
                    continue;
                }
                let start = expression_start(&code[..dot], &[]);
                if start == dot || starts_with_digit(&code[start..dot]) {
                    continue;
                }
                let end = match bytes.get(after) {
                    Some(b'(') => closing(code, after).map_or(after, |close| close + 1),
                    _ => after,
                };
                out.push(Access {
                    receiver: (start, dot),
                    end,
                });
            }
        }
        Fault::Subscript | Fault::Call => {
            let open_ch = if *fault == Fault::Subscript { '[' } else { '(' };
            for (open, _) in code.match_indices(open_ch) {
                let Some(&prev) = open.checked_sub(1).and_then(|p| bytes.get(p)) else {
                    continue;
                };
                if !(prev.is_ascii_alphanumeric() || prev == b'_' || prev == b')' || prev == b']') {
                    continue;
                }
                let start = expression_start(&code[..open], &[]);
                let receiver = &code[start..open];
                if receiver.is_empty()
                    || starts_with_digit(receiver)
                    || KEYWORDS.contains(&receiver)
                    || (*fault == Fault::Call && !receiver.contains('.') && is_builtin(receiver))
                {
                    continue;
                }
                let Some(close) = closing(code, open) else {
                    continue;
                };
                out.push(Access {
                    receiver: (start, open),
                    end: close + 1,
                });
            }
        }
    }
    out
}

fn guards(lines: &[&str], index: usize, access: &Access, fault: &Fault, out: &mut Vec<Edit>) {
    let target = lines[index];
    let (start, dot) = access.receiver;
    let receiver = &target[start..dot];
    let expression = &target[start..access.end];
    let (before, after) = (&target[..start], &target[access.end..]);
    let whole = is_whole_value(before, after);
    let what = match fault {
        Fault::Attribute(name) => {
            format!("`{receiver}` is None for some requests, so `.{name}` fails")
        }
        Fault::Subscript => format!("`{receiver}` is None for some requests, so indexing it fails"),
        Fault::Call => format!("`{receiver}` is None for some requests, so calling it fails"),
    };

    // A receiver with a call is evaluated once, through an assignment expression.
    let guarded = |fallback: &str| {
        let value = if receiver.contains('(') {
            let name = format!("_{}", receiver_name(receiver));
            format!(
                "{name}{} if ({name} := {receiver}) is not None else {fallback}",
                &target[dot..access.end]
            )
        } else {
            format!("{expression} if {receiver} is not None else {fallback}")
        };
        if whole {
            format!("{before}{value}{after}")
        } else {
            format!("{before}({value}){after}")
        }
    };

    let mut names = match fault {
        Fault::Attribute(name) => words(name),
        _ => Vec::new(),
    };
    names.extend(words(&receiver_name(receiver)));
    let family = match fault {
        Fault::Attribute(_) => "python.none_attribute",
        Fault::Subscript => "python.none_subscript",
        Fault::Call => "python.none_call",
    };
    let certain = matches!(fault, Fault::Attribute(_));
    for default in defaults_in_scope(lines, index, &names) {
        out.push(edit(
            guarded(&default),
            &format!("{family}.guard_default"),
            if certain { 0.85 } else { 0.6 },
            format!(
                "{what}; guard it and fall back to `{default}`, the default already in scope, so \
                 the request succeeds the way it did before the change"
            ),
        ));
    }
    out.push(edit(
        guarded("None"),
        &format!("{family}.guard_none"),
        if certain { 0.55 } else { 0.45 },
        format!("{what}; guard it and use None instead"),
    ));
    if !receiver.contains('(')
        && let Some(answer) = early_answer(lines, index)
    {
        let indent: String = target
            .chars()
            .take_while(|c| c.is_whitespace() && *c != '\n')
            .collect();
        out.push(edit(
            format!("{indent}if {receiver} is None:\n{indent}    {answer}\n{target}"),
            &format!("{family}.early_return"),
            0.45,
            format!("{what}; answer early the way this function already answers errors"),
        ));
    }
}

/// Whether the expression is the whole right-hand side of an assignment or a `return`, so the
/// conditional expression needs no parentheses.
fn is_whole_value(before: &str, after: &str) -> bool {
    let rest = after.trim();
    if !(rest.is_empty() || rest.starts_with('#')) {
        return false;
    }
    let lead = before.trim_end();
    lead.trim_start() == "return"
        || (lead.ends_with('=') && !["==", "!=", "<=", ">="].iter().any(|op| lead.ends_with(op)))
}

/// The last name of an expression: `self.items.get(sku)` → `get`, `item.supplier` → `supplier`.
fn receiver_name(receiver: &str) -> String {
    let mut text = receiver;
    while let Some(stripped) = text.strip_suffix(')').or_else(|| text.strip_suffix(']')) {
        let open = stripped.rfind(['(', '[']).unwrap_or(0);
        text = &stripped[..open];
    }
    text.rsplit('.').next().unwrap_or(text).to_owned()
}

/// Module-level constants named `DEFAULT_*`/`FALLBACK_*` and `default_*` locals of the enclosing
/// function before the line, related by a word to the names around the fault.
fn defaults_in_scope(lines: &[&str], index: usize, names: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    for line in lines {
        if line.starts_with(char::is_whitespace) {
            continue;
        }
        let name = identifier_at(line);
        let rest = line[name.len()..].trim_start();
        let assigned = rest.starts_with('=') && !rest.starts_with("==") || rest.starts_with(':');
        let upper = name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        if assigned
            && upper
            && (name.starts_with("DEFAULT") || name.starts_with("FALLBACK"))
            && related(&name, names)
            && !found.contains(&name)
        {
            found.push(name);
        }
    }
    if let Some(def) = enclosing_def(lines, index) {
        for line in &lines[def + 1..index] {
            let trimmed = line.trim_start();
            let name = identifier_at(trimmed);
            let rest = trimmed[name.len()..].trim_start();
            if (name.starts_with("default") || name.starts_with("fallback"))
                && rest.starts_with('=')
                && !rest.starts_with("==")
                && related(&name, names)
                && !found.contains(&name)
            {
                found.push(name);
            }
        }
    }
    found.truncate(2);
    found
}

fn indentation(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// The index of the `def` line of the function holding `index`.
fn enclosing_def(lines: &[&str], index: usize) -> Option<usize> {
    let mut indent = indentation(lines[index]);
    for i in (0..index).rev() {
        let line = lines[i];
        if line.trim().is_empty() {
            continue;
        }
        let here = indentation(line);
        if here < indent {
            let trimmed = line.trim_start();
            if trimmed.starts_with("def ") || trimmed.starts_with("async def ") {
                return Some(i);
            }
            indent = here;
        }
    }
    None
}

/// A `return` of the enclosing function that answers an error (a 4xx status or an `error`).
fn early_answer(lines: &[&str], index: usize) -> Option<String> {
    let def = enclosing_def(lines, index)?;
    let body_indent = indentation(lines[def]);
    lines[def + 1..]
        .iter()
        .take_while(|line| line.trim().is_empty() || indentation(line) > body_indent)
        .map(|line| code_part(line).trim())
        .find(|code| {
            code.starts_with("return ") && (code.contains("error") || has_client_error_status(code))
        })
        .map(str::to_owned)
}

fn has_client_error_status(code: &str) -> bool {
    code.as_bytes().windows(3).enumerate().any(|(i, w)| {
        w[0] == b'4'
            && w[1].is_ascii_digit()
            && w[2].is_ascii_digit()
            && (i == 0 || !code.as_bytes()[i - 1].is_ascii_digit())
            && code
                .as_bytes()
                .get(i + 3)
                .is_none_or(|b| !b.is_ascii_digit())
    })
}

/// The line without a trailing `#` comment (strings are respected).
fn code_part(line: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '#' => return &line[..i],
            None => {}
        }
    }
    line
}

fn starts_with_digit(text: &str) -> bool {
    text.starts_with(|c: char| c.is_ascii_digit())
}

fn is_builtin(name: &str) -> bool {
    [
        "len",
        "int",
        "str",
        "float",
        "dict",
        "list",
        "set",
        "tuple",
        "min",
        "max",
        "sum",
        "sorted",
        "isinstance",
        "getattr",
        "range",
        "enumerate",
        "zip",
        "any",
        "all",
        "print",
        "repr",
        "abs",
        "round",
        "super",
        "bool",
        "open",
        "iter",
        "next",
        "type",
        "format",
    ]
    .contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CATALOG: &str = "DEFAULT_LEAD_TIME_DAYS = 14\nCATALOG_SIZE = 10\n\n\ndef availability(item):\n    available = item.on_hand - item.reserved\n    lead_days = item.supplier.lead_time_days\n    return {\"lead\": lead_days}\n";
    const ERROR: &str = "AttributeError: 'NoneType' object has no attribute 'lead_time_days'";

    fn run(source: &str, line: usize, failure: &str) -> Vec<Edit> {
        let lines: Vec<&str> = source.split_inclusive('\n').collect();
        edits(&lines, line - 1, failure)
    }

    #[test]
    fn attribute_on_none_is_guarded_with_the_related_default_first() {
        let found = run(CATALOG, 7, ERROR);
        let templates: Vec<_> = found.iter().map(|e| e.template.as_str()).collect();
        assert_eq!(
            templates,
            [
                "python.none_attribute.guard_default",
                "python.none_attribute.guard_none"
            ]
        );
        assert_eq!(
            found[0].replacement,
            "    lead_days = item.supplier.lead_time_days if item.supplier is not None else DEFAULT_LEAD_TIME_DAYS\n"
        );
        assert!(!found.iter().any(|e| e.replacement.contains("CATALOG_SIZE")));
    }

    #[test]
    fn method_calls_on_a_call_result_are_guarded_once_in_parentheses() {
        let source =
            "def h(self, sku):\n    return 200, render(self.items.get(sku).describe(full=True))\n";
        let found = run(
            source,
            2,
            "AttributeError: 'NoneType' object has no attribute 'describe'",
        );
        assert_eq!(
            found[0].replacement,
            "    return 200, render((_get.describe(full=True) if (_get := self.items.get(sku)) is not None else None))\n"
        );
    }

    #[test]
    fn early_return_reuses_the_functions_error_answer() {
        let source = "def get_item(self, sku):\n    item = self.items.get(sku)\n    if sku == \"\":\n        return 404, {\"error\": \"unknown\"}\n    name = item.name.upper()\n    return 200, name\n";
        let found = run(
            source,
            5,
            "AttributeError: 'NoneType' object has no attribute 'name'",
        );
        let early = found.last().unwrap();
        assert_eq!(early.template, "python.none_attribute.early_return");
        assert_eq!(
            early.replacement,
            "    if item is None:\n        return 404, {\"error\": \"unknown\"}\n    name = item.name.upper()\n"
        );
    }

    #[test]
    fn subscripts_and_calls_on_none_are_guarded() {
        let source = "def f(cfg):\n    limit = cfg[\"limit\"] + 1\n";
        let found = run(
            source,
            2,
            "TypeError: 'NoneType' object is not subscriptable",
        );
        assert_eq!(
            found[0].replacement,
            "    limit = (cfg[\"limit\"] if cfg is not None else None) + 1\n"
        );
        let source = "def f(hooks):\n    x = len(hooks.on_save(1))\n";
        let found = run(source, 2, "TypeError: 'NoneType' object is not callable");
        assert_eq!(
            found[0].replacement,
            "    x = len((hooks.on_save(1) if hooks.on_save is not None else None))\n"
        );
    }

    #[test]
    fn other_failures_and_comments_yield_nothing() {
        assert!(run(CATALOG, 7, "KeyError: 'x'").is_empty());
        let source = "x = 1  # see item.supplier.lead_time_days\n";
        assert!(run(source, 1, ERROR).is_empty());
    }
}
