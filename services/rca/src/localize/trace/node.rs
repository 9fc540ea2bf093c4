//! Node.js errors: `TypeError: message` then `    at fn (/path/file.js:10:15)`,
//! `    at /path/file.js:10:15`, `    at async fn (file:///path/file.mjs:3:9)` frames. Uncaught
//! errors are preceded by the failing source line and a caret, and followed by `Node.js vX`.

use super::{Frame, Language, ParsedTrace};

pub(super) fn is_signature(line: &str) -> bool {
    node_frame(line).is_some_and(|frame| !frame.file.is_empty())
}

pub(super) fn parse(text: &str) -> Vec<ParsedTrace> {
    let mut traces = Vec::new();
    let mut current: Option<ParsedTrace> = None;
    let mut previous = "";

    for line in super::lines(text) {
        match node_frame(line) {
            Some(frame) => {
                let trace = current.get_or_insert_with(|| ParsedTrace {
                    language: Language::Node,
                    message: super::message(previous),
                    frames: Vec::new(),
                });
                super::push_frame(&mut trace.frames, frame);
            }
            None => {
                if let Some(done) = current.take() {
                    traces.push(done);
                }
            }
        }
        previous = line;
    }
    if let Some(done) = current.take() {
        traces.push(done);
    }
    // A run of `at` lines none of which names a file is not a Node.js trace.
    traces.retain(|trace| trace.frames.iter().any(|frame| !frame.file.is_empty()));
    traces
}

/// One `at …` line; `None` when the line is not a V8 frame.
fn node_frame(line: &str) -> Option<Frame> {
    let rest = line.trim().strip_prefix("at ")?;
    let rest = rest.strip_prefix("async ").unwrap_or(rest);
    let (function, location) = match rest.strip_suffix(')').and_then(|r| r.split_once(" (")) {
        Some((function, location)) => (function, location),
        None => ("", rest),
    };
    if function.is_empty() && (location.contains(' ') || location.contains('(')) {
        return None;
    }
    let location = location.strip_prefix("file://").unwrap_or(location);
    match super::split_line_column(location) {
        Some((file, line, column)) => {
            Some(super::frame(function, file, line, column, is_library(file)))
        }
        // `Array.map (<anonymous>)`, `Promise.all (index 0)`, `native`
        None if !function.is_empty() => Some(super::frame(function, "", 0, 0, true)),
        None => None,
    }
}

/// Node's own modules, installed packages and code without a file.
fn is_library(file: &str) -> bool {
    let file = file.replace('\\', "/");
    file.starts_with("node:")
        || file.starts_with("internal/")
        || file.starts_with('<')
        || file.contains("/node_modules/")
        || file.starts_with("node_modules/")
        || file == "native"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_named_anonymous_async_and_url_frames() {
        let named = node_frame("    at lineTotal (/srv/app/lib/cart.js:4:21)").expect("named");
        assert_eq!(
            (named.function.as_str(), named.file.as_str()),
            ("lineTotal", "/srv/app/lib/cart.js")
        );
        assert_eq!((named.line, named.column), (4, 21));
        let bare = node_frame("    at /srv/app/lib/cart.js:14:13").expect("bare");
        assert_eq!((bare.function.as_str(), bare.line), ("", 14));
        let url = node_frame("    at file:///srv/app/server.mjs:9:1").expect("url");
        assert_eq!(url.file, "/srv/app/server.mjs");
        let awaited = node_frame(
            "    at async ModuleLoader.import (node:internal/modules/esm/loader:606:24)",
        )
        .expect("async");
        assert!(!awaited.in_app);
    }

    #[test]
    fn dependencies_and_builtins_are_libraries() {
        assert!(is_library(
            "/srv/app/node_modules/express/lib/router/layer.js"
        ));
        assert!(is_library("node:internal/modules/cjs/loader"));
        assert!(is_library("internal/modules/cjs/loader.js"));
        assert!(!is_library("/srv/app/app.js"));
    }

    #[test]
    fn jvm_frames_are_not_node_frames() {
        assert!(node_frame("\tat com.example.orders.Main.main(Main.java:10)").is_none());
    }
}
