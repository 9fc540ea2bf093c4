//! Python tracebacks: `Traceback (most recent call last):`, then `  File "PATH", line N, in FUNC`
//! lines (each followed by source and caret lines), then the exception line. Chained exceptions
//! ("During handling of the above exception…", "The above exception was the direct cause…") print
//! the earliest exception first; it is the chain's root cause.

use super::{Frame, Language, ParsedTrace};

const HEADER: &str = "Traceback (most recent call last):";
const CHAIN_MARKERS: [&str; 2] = [
    "During handling of the above exception, another exception occurred:",
    "The above exception was the direct cause of the following exception:",
];

pub(super) fn is_signature(line: &str) -> bool {
    line.contains(HEADER)
}

pub(super) fn parse(text: &str) -> Vec<ParsedTrace> {
    let mut traces = Vec::new();
    // The tracebacks of the chain being read, earliest first.
    let mut chain: Vec<ParsedTrace> = Vec::new();
    let mut current: Option<Vec<Frame>> = None;
    // Whether the last finished traceback may be continued by a chained one.
    let mut chain_open = false;

    for line in super::lines(text) {
        if line.contains(HEADER) {
            if !chain_open {
                flush(&mut chain, &mut traces);
            }
            current = Some(Vec::new());
            chain_open = false;
            continue;
        }
        let trimmed = line.trim();
        if let Some(frames) = current.as_mut() {
            if let Some(frame) = file_line(trimmed) {
                super::push_frame(frames, frame);
                continue;
            }
            // Source lines, carets and `[Previous line repeated N more times]` are indented.
            if line.starts_with(' ') || line.starts_with('\t') || trimmed.is_empty() {
                continue;
            }
            // The first unindented line is the exception.
            let mut frames = current.take().unwrap_or_default();
            frames.reverse();
            chain.push(ParsedTrace {
                language: Language::Python,
                message: super::message(trimmed),
                frames,
            });
            chain_open = true;
            continue;
        }
        if CHAIN_MARKERS.contains(&trimmed) {
            chain_open = true;
        } else if !trimmed.is_empty() {
            chain_open = false;
            flush(&mut chain, &mut traces);
        }
    }
    if let Some(mut frames) = current.take() {
        // A traceback cut off before its exception line.
        frames.reverse();
        chain.push(ParsedTrace {
            language: Language::Python,
            message: String::new(),
            frames,
        });
    }
    flush(&mut chain, &mut traces);
    traces
}

fn flush(chain: &mut Vec<ParsedTrace>, traces: &mut Vec<ParsedTrace>) {
    traces.append(chain);
}

/// `File "PATH", line N, in FUNC`
fn file_line(line: &str) -> Option<Frame> {
    let rest = line.strip_prefix("File \"")?;
    let (path, rest) = rest.split_once("\", line ")?;
    let (number, function) = match rest.split_once(", in ") {
        Some((number, function)) => (number, function),
        None => (rest, ""),
    };
    let line = super::number(number.trim())?;
    Some(super::frame(
        function.trim(),
        path,
        line,
        0,
        is_library(path),
    ))
}

/// The interpreter's own modules, installed packages, and code without a file.
fn is_library(path: &str) -> bool {
    let path = path.replace('\\', "/");
    path.starts_with('<')
        || path.contains("/site-packages/")
        || path.contains("/dist-packages/")
        || path.contains("/lib/python2")
        || path.contains("/lib/python3")
        || path.contains("/lib64/python")
        || path.contains("/lib/pypy")
        || path.contains("/Lib/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_frame_line() {
        let frame =
            file_line(r#"File "/srv/app/shop/pricing.py", line 6, in total"#).expect("frame");
        assert_eq!(frame.file, "/srv/app/shop/pricing.py");
        assert_eq!((frame.line, frame.function.as_str()), (6, "total"));
        assert!(frame.in_app);
    }

    #[test]
    fn frozen_and_installed_modules_are_libraries() {
        assert!(is_library("<frozen importlib._bootstrap>"));
        assert!(is_library("/usr/lib/python3.11/json/decoder.py"));
        assert!(is_library(
            "/venv/lib/python3.12/site-packages/flask/app.py"
        ));
        assert!(!is_library("/srv/app/main.py"));
    }

    #[test]
    fn keeps_a_traceback_cut_off_before_its_exception() {
        let text = "Traceback (most recent call last):\n  File \"app.py\", line 3, in main\n";
        let traces = parse(text);
        assert_eq!(traces.len(), 1);
        assert_eq!(traces[0].frames[0].line, 3);
    }
}
