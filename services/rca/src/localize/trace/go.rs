//! Go panics: `panic: MESSAGE` (or `fatal error: …`), then `goroutine N [running]:` and pairs of
//! lines — `pkg.function(args)` and `\t/path/file.go:LINE +0xOFFSET` — ending with an optional
//! `created by pkg.function in goroutine M`. Every goroutine block is a trace; the first one after
//! the panic is the goroutine that panicked.

use super::{Language, ParsedTrace};

/// Top-level packages of the Go standard library: a frame of one of them is the runtime's.
const STANDARD_PACKAGES: &[&str] = &[
    "archive",
    "bufio",
    "bytes",
    "cmp",
    "compress",
    "container",
    "context",
    "crypto",
    "database",
    "debug",
    "embed",
    "encoding",
    "errors",
    "expvar",
    "flag",
    "fmt",
    "go",
    "hash",
    "html",
    "image",
    "index",
    "internal",
    "io",
    "iter",
    "log",
    "maps",
    "math",
    "mime",
    "net",
    "os",
    "path",
    "plugin",
    "reflect",
    "regexp",
    "runtime",
    "slices",
    "sort",
    "strconv",
    "strings",
    "structs",
    "sync",
    "syscall",
    "testing",
    "text",
    "time",
    "unicode",
    "unique",
    "unsafe",
    "weak",
];

pub(super) fn is_signature(line: &str) -> bool {
    goroutine_header(line)
}

pub(super) fn parse(text: &str) -> Vec<ParsedTrace> {
    let mut traces = Vec::new();
    let mut message = String::new();
    let mut current: Option<ParsedTrace> = None;
    let mut pending_function: Option<String> = None;

    for line in super::lines(text) {
        let trimmed = line.trim();
        if goroutine_header(line) {
            if let Some(done) = current.take() {
                traces.push(done);
            }
            current = Some(ParsedTrace {
                language: Language::Go,
                message: std::mem::take(&mut message),
                frames: Vec::new(),
            });
            pending_function = None;
            continue;
        }
        let Some(trace) = current.as_mut() else {
            if let Some(text) = trimmed
                .strip_prefix("panic: ")
                .or_else(|| trimmed.strip_prefix("fatal error: "))
            {
                // `panic: x [recovered]` is followed by the re-panic; keep the first message.
                if message.is_empty() {
                    message = super::message(text);
                }
            }
            continue;
        };
        if line.starts_with('\t') || line.starts_with("    ") {
            if let (Some(function), Some((file, line))) =
                (pending_function.take(), location(trimmed))
            {
                let library = is_library(&function, file);
                super::push_frame(
                    &mut trace.frames,
                    super::frame(&function, file, line, 0, library),
                );
            }
            continue;
        }
        if let Some(function) = function_line(trimmed) {
            pending_function = Some(function);
            continue;
        }
        // A blank line or anything else ends the goroutine's stack.
        if let Some(done) = current.take() {
            traces.push(done);
        }
        pending_function = None;
    }
    if let Some(done) = current.take() {
        traces.push(done);
    }
    traces
}

/// `goroutine 1 [running]:`
fn goroutine_header(line: &str) -> bool {
    let Some(rest) = line.trim().strip_prefix("goroutine ") else {
        return false;
    };
    let Some((id, state)) = rest.split_once(' ') else {
        return false;
    };
    super::number(id).is_some() && state.starts_with('[') && state.ends_with("]:")
}

/// `pkg.(*T).Method(0x1, 0x2)` or `created by pkg.f in goroutine 1` → the function name.
fn function_line(line: &str) -> Option<String> {
    if let Some(creator) = line.strip_prefix("created by ") {
        let name = creator.split(" in goroutine ").next().unwrap_or(creator);
        return Some(name.trim().to_owned());
    }
    let open = line.rfind('(')?;
    if !line.ends_with(')') || open == 0 || line[..open].contains(' ') {
        return None;
    }
    Some(line[..open].to_owned())
}

/// `/path/file.go:12 +0x1d` → (`/path/file.go`, 12)
fn location(line: &str) -> Option<(&str, u32)> {
    let location = match line.rsplit_once(" +0x") {
        Some((location, _)) => location,
        None => line,
    };
    super::split_line(location.trim())
}

/// The standard library (by package, so `-trimpath` builds count too), the module cache and
/// vendored dependencies.
fn is_library(function: &str, file: &str) -> bool {
    let file = file.replace('\\', "/");
    if file.contains("/pkg/mod/") || file.contains("/vendor/") || file.starts_with("vendor/") {
        return true;
    }
    if [
        "/usr/local/go/src/",
        "/usr/lib/go/src/",
        "/usr/lib/golang/src/",
        "/usr/share/go/src/",
    ]
    .iter()
    .any(|root| file.starts_with(root))
        || file.contains("/go/pkg/")
    {
        return true;
    }
    // The package path is everything before the first `.` after the last `/`.
    let slash = function.rfind('/').map_or(0, |slash| slash + 1);
    let package_end = function[slash..]
        .find('.')
        .map_or(function.len(), |dot| slash + dot);
    let package = &function[..package_end];
    let first = package.split('/').next().unwrap_or(package);
    STANDARD_PACKAGES.contains(&first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_function_lines_with_receivers_and_arguments() {
        assert_eq!(
            function_line("example.com/orders/internal/cart.(*Cart).Add(...)").as_deref(),
            Some("example.com/orders/internal/cart.(*Cart).Add")
        );
        assert_eq!(
            function_line("sort.Slice({0x495380?, 0x19ff92090300?}, 0x19ff920387b8)").as_deref(),
            Some("sort.Slice")
        );
        assert_eq!(
            function_line("created by main.main in goroutine 1").as_deref(),
            Some("main.main")
        );
    }

    #[test]
    fn standard_packages_are_libraries_even_when_trimmed() {
        assert!(is_library("sort.Slice", "sort/slice.go"));
        assert!(is_library(
            "runtime.gopanic",
            "/usr/local/go/src/runtime/panic.go"
        ));
        assert!(is_library(
            "github.com/a/b.F",
            "/root/go/pkg/mod/github.com/a/b@v1.0.0/b.go"
        ));
        assert!(!is_library("main.main", "/srv/app/main.go"));
        assert!(!is_library(
            "example.com/orders/internal/cart.Pick",
            "example.com/orders/internal/cart/cart.go"
        ));
    }
}
