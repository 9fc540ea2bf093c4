//! Rust panics: `thread 'NAME' (ID) panicked at FILE:LINE:COL:` then the message (Rust ≥ 1.73,
//! the thread id since 1.9x), or `thread 'NAME' panicked at 'MESSAGE', FILE:LINE:COL` (older),
//! optionally followed by `stack backtrace:` and numbered frames with `at FILE:LINE:COL` lines.

use super::{Frame, Language, ParsedTrace};

const PANIC_MARKER: &str = "panicked at ";

/// Whether `line` (after `previous`) can only be part of a Rust panic.
pub(super) fn is_signature(previous: &str, line: &str) -> bool {
    panic_header(line).is_some()
        || line.trim() == "stack backtrace:"
        || (frame_index(previous).is_some() && line.trim_start().starts_with("at "))
}

pub(super) fn parse(text: &str) -> Vec<ParsedTrace> {
    let mut traces = Vec::new();
    let mut current: Option<Panic> = None;
    let mut in_backtrace = false;
    let mut lines = super::lines(text).peekable();

    while let Some(line) = lines.next() {
        if let Some(header) = panic_header(line) {
            if let Some(done) = current.take() {
                traces.push(done.finish());
            }
            let old_form = header.old_form;
            let mut panic = Panic::from_header(header);
            // The old form may spread the message over lines before `', FILE:L:C`.
            if panic.location.is_none() && old_form {
                for _ in 0..32 {
                    let Some(next) = lines.next_if(|next| panic_header(next).is_none()) else {
                        break;
                    };
                    panic.message.push('\n');
                    panic.message.push_str(next);
                    if let Some((message, location)) = old_form_tail(&panic.message) {
                        panic.location = Some(location);
                        panic.message = message;
                        break;
                    }
                }
            }
            current = Some(panic);
            in_backtrace = false;
            continue;
        }
        let Some(panic) = current.as_mut() else {
            // Frames of a backtrace whose header was cut off still count.
            if line.trim() == "stack backtrace:" {
                current = Some(Panic::default());
                in_backtrace = true;
            }
            continue;
        };
        let trimmed = line.trim();
        if trimmed == "stack backtrace:" {
            in_backtrace = true;
            continue;
        }
        if !in_backtrace {
            if trimmed.starts_with("note:") || (trimmed.is_empty() && !panic.message.is_empty()) {
                panic.message_done = true;
            } else if !panic.message_done {
                if !panic.message.is_empty() {
                    panic.message.push('\n');
                }
                panic.message.push_str(trimmed);
                if panic.message.len() > 4096 {
                    panic.message_done = true;
                }
            } else if let Some(done) = current.take() {
                traces.push(done.finish());
            }
            continue;
        }
        if let Some(function) = frame_index(line) {
            panic.push_backtrace_frame(function);
        } else if let Some(location) = trimmed.strip_prefix("at ") {
            panic.attach_location(location);
        } else {
            // `note: Some details are omitted…` or any other line ends the backtrace.
            in_backtrace = false;
            if let Some(done) = current.take() {
                traces.push(done.finish());
            }
        }
    }
    if let Some(done) = current.take() {
        traces.push(done.finish());
    }
    traces
}

#[derive(Default)]
struct Panic {
    message: String,
    message_done: bool,
    /// FILE:LINE:COL of the panic itself.
    location: Option<(String, u32, u32)>,
    frames: Vec<Frame>,
    /// Whether the last backtrace frame already has its `at` line.
    last_has_location: bool,
}

impl Panic {
    fn from_header(header: Header<'_>) -> Self {
        let location = header.location.and_then(|location| {
            super::split_line_column(location)
                .map(|(file, line, column)| (file.to_owned(), line, column))
        });
        Panic {
            message: header.message.to_owned(),
            message_done: header.old_form && location.is_some(),
            location,
            ..Panic::default()
        }
    }

    fn push_backtrace_frame(&mut self, function: &str) {
        self.last_has_location = false;
        super::push_frame(
            &mut self.frames,
            super::frame(&clean_symbol(function), "", 0, 0, true),
        );
    }

    /// Sets the location of the last frame; a second `at` line (an inlined call in old
    /// toolchains) becomes a frame of its own with the same function.
    fn attach_location(&mut self, location: &str) {
        let Some((file, line, column)) = super::split_line_column(location)
            .or_else(|| super::split_line(location).map(|(file, line)| (file, line, 0)))
        else {
            return;
        };
        let library = is_library(file);
        if self.last_has_location {
            let function = self
                .frames
                .last()
                .map(|frame| frame.function.clone())
                .unwrap_or_default();
            super::push_frame(
                &mut self.frames,
                super::frame(&function, file, line, column, library),
            );
            return;
        }
        if let Some(last) = self.frames.last_mut() {
            *last = super::frame(&last.function, file, line, column, library);
            self.last_has_location = true;
        }
    }

    fn finish(mut self) -> ParsedTrace {
        // Without a backtrace, or with one that names no code of the service (release builds
        // without debug info), the panic location is the best frame there is.
        let has_app_frame = self.frames.iter().any(|frame| frame.in_app);
        if let Some((file, line, column)) = self.location.take().filter(|_| !has_app_frame) {
            let function = self
                .frames
                .iter()
                .find(|frame| frame.file == file && frame.line == line)
                .map(|frame| frame.function.clone())
                .unwrap_or_default();
            let panic_frame = super::frame(&function, &file, line, column, is_library(&file));
            self.frames.insert(0, panic_frame);
            self.frames.truncate(super::MAX_FRAMES);
        }
        ParsedTrace {
            language: Language::Rust,
            message: super::message(&self.message),
            frames: self.frames,
        }
    }
}

struct Header<'a> {
    message: &'a str,
    location: Option<&'a str>,
    old_form: bool,
}

/// Parses `thread 'NAME' [(ID)] panicked at …` anywhere in `line` (logs prefix it).
fn panic_header(line: &str) -> Option<Header<'_>> {
    let start = line.find("thread '")?;
    let rest = &line[start + "thread '".len()..];
    let at = rest.find(PANIC_MARKER)?;
    let after = &rest[at + PANIC_MARKER.len()..];
    if let Some(quoted) = after.strip_prefix('\'') {
        // Old form: 'MESSAGE', FILE:LINE:COL
        return Some(match old_form_tail(quoted) {
            Some((_, _)) => {
                let (message, location) = quoted.rsplit_once("', ").unwrap_or((quoted, ""));
                Header {
                    message,
                    location: Some(location.trim()),
                    old_form: true,
                }
            }
            None => Header {
                message: quoted,
                location: None,
                old_form: true,
            },
        });
    }
    // New form: FILE:LINE:COL: then the message on the next lines.
    let location = after
        .trim_end()
        .strip_suffix(':')
        .unwrap_or(after.trim_end());
    Some(Header {
        message: "",
        location: Some(location),
        old_form: false,
    })
}

/// Splits `MESSAGE', FILE:LINE:COL` when the tail is a location.
fn old_form_tail(text: &str) -> Option<(String, (String, u32, u32))> {
    let (message, location) = text.rsplit_once("', ")?;
    let (file, line, column) = super::split_line_column(location.trim())?;
    Some((message.to_owned(), (file.to_owned(), line, column)))
}

/// The symbol of a numbered backtrace line: `  12: SYMBOL` or `  12:   0x55d… - SYMBOL`.
fn frame_index(line: &str) -> Option<&str> {
    let trimmed = line.trim_start();
    let (index, rest) = trimmed.split_once(':')?;
    super::number(index)?;
    if !rest.starts_with(' ') {
        return None;
    }
    let rest = rest.trim_start();
    let symbol = match rest.strip_prefix("0x") {
        Some(address) => address.split_once(" - ").map_or("", |(_, symbol)| symbol),
        None => rest,
    };
    Some(symbol.trim())
}

/// Drops the hash suffix (`::h0123…`) and crate disambiguators (`std[e2829…]`) of a symbol.
fn clean_symbol(symbol: &str) -> String {
    let mut out = String::with_capacity(symbol.len());
    let mut rest = symbol;
    while let Some(open) = rest.find('[') {
        let tail = &rest[open + 1..];
        match tail.find(']') {
            Some(close) if close > 0 && tail[..close].bytes().all(|b| b.is_ascii_hexdigit()) => {
                out.push_str(&rest[..open]);
                rest = &tail[close + 1..];
            }
            _ => {
                out.push_str(&rest[..=open]);
                rest = tail;
            }
        }
    }
    out.push_str(rest);
    let hashed = out
        .rsplit_once("::h")
        .filter(|(_, hash)| hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(|(name, _)| name.len());
    if let Some(len) = hashed {
        out.truncate(len);
    }
    out
}

/// Toolchain sources (`/rustc/<hash>/library/…`, rust-src) and crates from the cargo registry or
/// git checkouts.
fn is_library(file: &str) -> bool {
    let file = file.replace('\\', "/");
    file.starts_with("/rustc/")
        || file.starts_with("./rustc/")
        || file.starts_with("rustc/")
        || file.contains("/rustlib/src/rust/")
        || file.contains("/.cargo/registry/")
        || file.contains("/.cargo/git/checkouts/")
        || file.contains("/cargo/registry/src/")
        || file.contains("/cargo/git/checkouts/")
        || file.starts_with("/usr/src/rustc-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_old_single_line_form() {
        let text = "thread 'main' panicked at 'called `Option::unwrap()` on a `None` value', src/main.rs:4:5\nnote: run with `RUST_BACKTRACE=1`\n";
        let traces = parse(text);
        assert_eq!(traces.len(), 1);
        assert_eq!(
            traces[0].message,
            "called `Option::unwrap()` on a `None` value"
        );
        assert_eq!(traces[0].frames[0].file, "src/main.rs");
        assert_eq!(
            (traces[0].frames[0].line, traces[0].frames[0].column),
            (4, 5)
        );
    }

    #[test]
    fn reads_the_old_form_with_a_message_over_several_lines() {
        let text = "thread 'w' panicked at 'bad\nthing', src/lib.rs:10:2\n";
        let traces = parse(text);
        assert_eq!(traces[0].message, "bad\nthing");
        assert_eq!(traces[0].frames[0].line, 10);
    }

    #[test]
    fn reads_the_form_without_thread_id_behind_a_log_prefix() {
        let text = "2026-01-01T00:00:00Z ERROR thread 'tokio-rt-worker' panicked at src/payments.rs:237:44:\ncalled `Option::unwrap()` on a `None` value\n";
        let traces = parse(text);
        assert_eq!(traces[0].frames[0].file, "src/payments.rs");
        assert_eq!(traces[0].frames[0].line, 237);
        assert_eq!(
            traces[0].message,
            "called `Option::unwrap()` on a `None` value"
        );
    }

    #[test]
    fn cleans_hashes_and_disambiguators_from_symbols() {
        assert_eq!(
            clean_symbol("inventory::main::h56172deffa13b138"),
            "inventory::main"
        );
        assert_eq!(
            clean_symbol("std[e28293b1aa0f68bd]::rt::lang_start_internal"),
            "std::rt::lang_start_internal"
        );
        assert_eq!(clean_symbol("<[T]>::iter"), "<[T]>::iter");
    }

    #[test]
    fn registry_and_toolchain_paths_are_libraries() {
        assert!(is_library(
            "/home/u/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/tokio-1.54.0/src/runtime/task/core.rs"
        ));
        assert!(is_library("/rustc/59807616e1fa/library/core/src/option.rs"));
        assert!(!is_library("./src/payments.rs"));
    }
}
