//! Stack-trace parsing: raw log text in, frames out. Pure functions over `&str`; no I/O.
//!
//! [`parse`] detects the language from the first line that only one language's traces contain
//! (a Rust panic header, a Python `Traceback` header, a Go `goroutine N [...]:` header, or a Java
//! or Node.js frame), then hands the text to that language's parser.
//!
//! Every parser is one forward pass over the lines and keeps at most [`MAX_TRACES`] traces of at
//! most [`MAX_FRAMES`] frames, skipping lines longer than [`MAX_LINE_BYTES`], so the work and the
//! memory are bounded by the input's length whatever it holds. Input is untrusted: parsers never
//! panic, and a line that does not have the expected shape is simply not a frame.
//!
//! Frames are ordered innermost first (the frame that failed, then its callers), whatever order the
//! language prints them in. A frame's `in_app` here only says that its path is not a standard
//! library, runtime or dependency path; whether it is in the repository is decided later.

mod go;
mod java;
mod node;
mod python;
mod rust;

use super::{Frame, Language};

/// The most traces kept from one text.
pub const MAX_TRACES: usize = 64;
/// The most frames kept per trace.
pub const MAX_FRAMES: usize = 256;
/// Lines longer than this are not frames (real frame lines are far shorter).
pub const MAX_LINE_BYTES: usize = 8 * 1024;
/// The longest message kept, in bytes.
const MAX_MESSAGE_BYTES: usize = 2 * 1024;

/// One exception or panic and the frames it unwound through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedTrace {
    pub language: Language,
    /// The error message, e.g. `TypeError: 'NoneType' object is not subscriptable`.
    pub message: String,
    /// Innermost first.
    pub frames: Vec<Frame>,
}

/// Parses every trace in `text`, most relevant first.
///
/// Independent traces come in text order. The exceptions of one chain (Java's `Caused by:`,
/// Python's chained tracebacks) come root cause first: the innermost cause is what broke.
pub fn parse(text: &str) -> Vec<ParsedTrace> {
    match detect(text) {
        Some(language) => parse_as(language, text),
        None => Vec::new(),
    }
}

/// Parses `text` as traces of `language`.
pub fn parse_as(language: Language, text: &str) -> Vec<ParsedTrace> {
    let mut traces = match language {
        Language::Rust => rust::parse(text),
        Language::Python => python::parse(text),
        Language::Java => java::parse(text),
        Language::Go => go::parse(text),
        Language::Node => node::parse(text),
    };
    traces.retain(|trace| !trace.frames.is_empty());
    traces.truncate(MAX_TRACES);
    traces
}

/// The language of the first line that only one language's stack traces contain.
pub fn detect(text: &str) -> Option<Language> {
    let mut previous = "";
    for line in lines(text) {
        if rust::is_signature(previous, line) {
            return Some(Language::Rust);
        }
        if python::is_signature(line) {
            return Some(Language::Python);
        }
        if go::is_signature(line) {
            return Some(Language::Go);
        }
        if java::is_signature(line) {
            return Some(Language::Java);
        }
        if node::is_signature(line) {
            return Some(Language::Node);
        }
        previous = line;
    }
    None
}

/// The lines of `text` short enough to be part of a trace; longer ones are replaced by "".
fn lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().map(|line| {
        if line.len() > MAX_LINE_BYTES {
            ""
        } else {
            line
        }
    })
}

/// `text` cut to at most [`MAX_MESSAGE_BYTES`] on a character boundary, trimmed.
fn message(text: &str) -> String {
    let text = text.trim();
    let mut end = text.len().min(MAX_MESSAGE_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// Splits `path:line` into its parts when `line` is a positive number.
fn split_line(location: &str) -> Option<(&str, u32)> {
    let (path, line) = location.rsplit_once(':')?;
    let line = number(line)?;
    (!path.is_empty()).then_some((path, line))
}

/// Splits `path:line:column` into its parts when both are numbers.
fn split_line_column(location: &str) -> Option<(&str, u32, u32)> {
    let (rest, column) = location.rsplit_once(':')?;
    let column = number(column)?;
    let (path, line) = split_line(rest)?;
    Some((path, line, column))
}

/// A decimal number of at most 9 digits (no sign, no spaces).
fn number(text: &str) -> Option<u32> {
    if text.is_empty() || text.len() > 9 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Pushes `frame` unless the trace already holds [`MAX_FRAMES`].
fn push_frame(frames: &mut Vec<Frame>, frame: Frame) {
    if frames.len() < MAX_FRAMES {
        frames.push(frame);
    }
}

/// A frame with `in_app` set from `is_library`.
fn frame(function: &str, file: &str, line: u32, column: u32, is_library: bool) -> Frame {
    Frame {
        function: function.to_owned(),
        file: file.to_owned(),
        line,
        column,
        in_app: !file.is_empty() && !is_library,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_nothing_in_plain_log_text() {
        assert_eq!(detect("INFO started\nWARN slow request\n"), None);
        assert!(parse("").is_empty());
    }

    #[test]
    fn splits_locations_only_when_numbers_are_numbers() {
        assert_eq!(split_line_column("src/a.rs:3:9"), Some(("src/a.rs", 3, 9)));
        assert_eq!(split_line_column("src/a.rs:x:9"), None);
        assert_eq!(split_line("a.go:12"), Some(("a.go", 12)));
        assert_eq!(split_line(":12"), None);
        assert_eq!(number("99999999999"), None);
    }

    #[test]
    fn cuts_messages_on_character_boundaries() {
        let long = "é".repeat(MAX_MESSAGE_BYTES);
        let cut = message(&long);
        assert!(cut.len() <= MAX_MESSAGE_BYTES);
        assert!(cut.chars().all(|c| c == 'é'));
    }
}
