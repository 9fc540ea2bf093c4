//! Property tests of the trace parsers on untrusted input: they never panic, keep their bounds,
//! and never report an in-app frame without a file.

use proptest::prelude::*;
use selfheal_rca::localize::trace;

/// Pieces of real trace lines of every language, to be shuffled into plausible garbage.
const FRAGMENTS: &[&str] = &[
    "thread 'main' (1) panicked at src/a.rs:1:2:\n",
    "thread 'w' panicked at 'msg', src/a.rs:3:4\n",
    "stack backtrace:\n",
    "   0: app::f\n",
    "             at ./src/a.rs:5:6\n",
    "Traceback (most recent call last):\n",
    "  File \"/srv/app/a.py\", line 7, in f\n",
    "During handling of the above exception, another exception occurred:\n",
    "ValueError: x\n",
    "\tat com.example.A.f(A.java:8)\n",
    "Caused by: java.lang.NullPointerException\n",
    "\t... 3 more\n",
    "panic: boom\n",
    "goroutine 1 [running]:\n",
    "main.f(...)\n",
    "\t/srv/app/main.go:9 +0x1d\n",
    "    at f (/srv/app/a.js:10:11)\n",
    "    at /srv/app/a.js:12:13\n",
    "\n",
    ":::\n",
    "at (\n",
    "é\u{0}\u{1b}[0m",
];

fn check_bounds(text: &str) {
    let traces = trace::parse(text);
    assert!(traces.len() <= trace::MAX_TRACES);
    for parsed in &traces {
        assert!(!parsed.frames.is_empty());
        assert!(parsed.frames.len() <= trace::MAX_FRAMES);
        for frame in &parsed.frames {
            assert!(!frame.in_app || !frame.file.is_empty());
        }
    }
}

proptest! {
    #[test]
    fn arbitrary_text_never_breaks_the_parsers(text in any::<String>()) {
        check_bounds(&text);
    }

    #[test]
    fn shuffled_trace_fragments_never_break_the_parsers(
        picks in proptest::collection::vec(0..FRAGMENTS.len(), 0..200)
    ) {
        let text: String = picks.iter().map(|&i| FRAGMENTS[i]).collect();
        check_bounds(&text);
    }
}
