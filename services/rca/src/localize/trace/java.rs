//! JVM stack traces (Java, Kotlin, Scala): an exception line, `\tat pkg.Class.method(File.java:42)`
//! frames, `... N more`, and `Caused by:` sections. The last `Caused by:` is the root cause.
//!
//! A JVM frame names a file without its directory; the package gives the directory, so
//! `com.example.Pricing.total(Pricing.java:5)` becomes `com/example/Pricing.java`, which the
//! repository lookup matches as a path suffix (`src/main/java/com/example/Pricing.java`).

use super::{Frame, Language, ParsedTrace};

/// Packages of the JVM, its languages' standard libraries and its tooling.
const LIBRARY_PREFIXES: &[&str] = &[
    "java.",
    "javax.",
    "jdk.",
    "sun.",
    "com.sun.",
    "kotlin.",
    "kotlinx.",
    "scala.",
    "groovy.",
    "org.codehaus.groovy.",
    "org.junit.",
    "junit.",
];

pub(super) fn is_signature(line: &str) -> bool {
    jvm_frame(line).is_some()
}

pub(super) fn parse(text: &str) -> Vec<ParsedTrace> {
    let mut traces = Vec::new();
    // The sections of the trace being read: the top exception, then each `Caused by:`.
    let mut chain: Vec<ParsedTrace> = Vec::new();
    let mut previous = "";

    for line in super::lines(text) {
        let trimmed = line.trim();
        if let Some(frame) = jvm_frame(line) {
            if chain.is_empty() {
                chain.push(section(exception_message(previous)));
            }
            if let Some(last) = chain.last_mut() {
                super::push_frame(&mut last.frames, frame);
            }
        } else if let Some(cause) = trimmed.strip_prefix("Caused by: ") {
            if !chain.is_empty() {
                chain.push(section(cause));
            }
        } else if trimmed.starts_with("... ") && trimmed.ends_with(" more") {
            // Frames shared with the enclosing section; nothing new.
        } else if trimmed.starts_with("Suppressed: ") {
            // A suppressed exception's frames are not part of the failure; they get a section
            // of their own that the root-cause ordering puts last.
            if !chain.is_empty() {
                let mut suppressed = section(trimmed);
                suppressed.message.insert(0, '\u{0}');
                chain.push(suppressed);
            }
        } else {
            finish(&mut chain, &mut traces);
        }
        previous = line;
    }
    finish(&mut chain, &mut traces);
    traces
}

fn section(message: &str) -> ParsedTrace {
    ParsedTrace {
        language: Language::Java,
        message: super::message(message),
        frames: Vec::new(),
    }
}

/// Orders a finished chain root cause first, suppressed sections last.
fn finish(chain: &mut Vec<ParsedTrace>, traces: &mut Vec<ParsedTrace>) {
    let (mut suppressed, mut causes): (Vec<_>, Vec<_>) = chain
        .drain(..)
        .partition(|section| section.message.starts_with('\u{0}'));
    causes.reverse();
    for section in &mut suppressed {
        section.message.remove(0);
    }
    traces.append(&mut causes);
    traces.append(&mut suppressed);
}

/// `Exception in thread "main" java.lang.X: msg` → `java.lang.X: msg`.
fn exception_message(line: &str) -> &str {
    let line = line.trim();
    match line.find("Exception in thread \"") {
        Some(start) => {
            let rest = &line[start + "Exception in thread \"".len()..];
            rest.split_once("\" ").map_or(rest, |(_, message)| message)
        }
        None => line,
    }
}

/// `at [loader//][module@version/]pkg.Class.method(File.java:42)`
fn jvm_frame(line: &str) -> Option<Frame> {
    let rest = line.trim().strip_prefix("at ")?;
    let rest = rest.strip_suffix(')')?;
    let (qualified, location) = rest.split_once('(')?;
    if qualified.is_empty() || qualified.contains(' ') || location.contains('(') {
        return None;
    }
    let (module, qualified) = match qualified.rsplit_once('/') {
        Some((module, qualified)) => (module, qualified),
        None => ("", qualified),
    };
    let (class, _method) = qualified.rsplit_once('.')?;
    let library = module.starts_with("java.")
        || module.starts_with("jdk.")
        || LIBRARY_PREFIXES
            .iter()
            .any(|prefix| class.starts_with(prefix));
    let (file_name, line) = match super::split_line(location) {
        Some((file_name, line)) => (file_name, line),
        None if location == "Native Method"
            || location == "Unknown Source"
            || location.ends_with(".java")
            || location.ends_with(".kt") =>
        {
            ("", 0)
        }
        None => return None,
    };
    if file_name.contains('/') || file_name.contains('\\') {
        return None;
    }
    let file = match (file_name, class.rsplit_once('.')) {
        ("", _) => String::new(),
        (name, Some((package, _))) => format!("{}/{name}", package.replace('.', "/")),
        (name, None) => name.to_owned(),
    };
    Some(super::frame(qualified, &file, line, 0, library))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derives_the_file_path_from_the_package() {
        let frame =
            jvm_frame("\tat com.example.orders.Pricing.total(Pricing.java:5)").expect("frame");
        assert_eq!(frame.file, "com/example/orders/Pricing.java");
        assert_eq!(frame.function, "com.example.orders.Pricing.total");
        assert!(frame.in_app);
    }

    #[test]
    fn reads_kotlin_frames() {
        let frame =
            jvm_frame("    at com.example.cart.CartKt.total(Cart.kt:17)").expect("kotlin frame");
        assert_eq!(frame.file, "com/example/cart/Cart.kt");
        assert_eq!(frame.line, 17);
    }

    #[test]
    fn jdk_modules_and_native_methods_are_libraries() {
        let frame = jvm_frame("\tat java.base/java.lang.Integer.parseInt(Integer.java:668)")
            .expect("frame");
        assert!(!frame.in_app);
        let native =
            jvm_frame("\tat jdk.internal.reflect.NativeMethodAccessorImpl.invoke0(Native Method)")
                .expect("frame");
        assert!(!native.in_app);
        assert!(jvm_frame("    at lineTotal (/srv/app/lib/cart.js:4:21)").is_none());
    }

    #[test]
    fn puts_suppressed_sections_after_the_causes() {
        let text = "java.lang.IllegalStateException: outer\n\tat a.B.c(B.java:1)\n\tSuppressed: java.io.IOException: close\n\t\tat a.D.e(D.java:2)\nCaused by: java.lang.NullPointerException\n\tat a.F.g(F.java:3)\n";
        let traces = parse(text);
        let messages: Vec<_> = traces.iter().map(|t| t.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                "java.lang.NullPointerException",
                "java.lang.IllegalStateException: outer",
                "Suppressed: java.io.IOException: close"
            ]
        );
    }
}
