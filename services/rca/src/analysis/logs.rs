//! Log lines, read as a stream: which lines start or continue a stack trace, which report an
//! error, and a keeper that retains a bounded number of lines and bytes, preferring stack-trace
//! blocks over error lines over everything else. Counts cover every line read, kept or not.
//!
//! Everything here is pure and bounded: a line longer than [`MAX_LINE_BYTES`] is cut, a block
//! longer than [`MAX_BLOCK_LINES`] is split, and the keeper never holds more than its budget (plus
//! one line while deciding what to drop).

use std::collections::{BTreeMap, VecDeque};

use selfheal_proto::v1::{LogLine, LogStats};

/// Longer lines are cut to this many bytes (at a character boundary).
pub const MAX_LINE_BYTES: usize = 8 * 1024;
/// A stack-trace block holds at most this many lines; the rest of a longer one is ordinary.
pub const MAX_BLOCK_LINES: usize = 256;

/// How much a line matters to the analysis, least first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Importance {
    Ordinary,
    Error,
    Trace,
}

/// Whether `line` opens a panic, exception or traceback.
pub fn starts_trace(line: &str) -> bool {
    let trimmed = line.trim_start();
    (trimmed.starts_with("thread '") && line.contains(" panicked at "))
        || trimmed.starts_with("panicked at ")
        || trimmed.starts_with("Traceback (most recent call last)")
        || trimmed.starts_with("panic: ")
        || trimmed.starts_with("fatal error: ")
        || trimmed.starts_with("Exception in thread ")
        || trimmed.starts_with("Unhandled exception")
        || trimmed.starts_with("Uncaught ")
}

/// Whether `line`, inside a block, still belongs to the trace.
fn continues_trace(line: &str) -> bool {
    if line.starts_with([' ', '\t']) {
        return !line.trim().is_empty();
    }
    const MARKERS: &[&str] = &[
        "stack backtrace:",
        "note: ",
        "called `",
        "Caused by",
        "caused by",
        "Traceback",
        "During handling",
        "The above exception",
        "goroutine ",
        "created by ",
        "[signal ",
        "[recovered]",
        "...",
        "Suppressed:",
        "at ",
    ];
    if MARKERS.iter().any(|m| line.starts_with(m)) {
        return true;
    }
    // A Go frame's function line: `pkg.Func(args)` or `main.(*T).M(...)`, no spaces.
    let code = line.trim_end();
    code.ends_with(')') && code.contains('(') && !code.contains(' ')
}

/// Whether `line` is a frame line that may follow an exception message printed on its own line
/// (Java's `\tat …`, Node's `    at …`).
fn is_frame_line(line: &str) -> bool {
    let trimmed = line.trim_start();
    line.len() > trimmed.len() && trimmed.starts_with("at ")
}

/// Whether `line` reports an error (any language, level names or words).
pub fn is_error_line(line: &str) -> bool {
    const WORDS: &[&str] = &[
        "ERROR",
        "Error",
        "error",
        "FATAL",
        "Fatal",
        "fatal",
        "Exception",
        "exception",
        "PANIC",
        "panic",
        "CRITICAL",
        "failed",
        "FAILED",
        "refused",
        "timed out",
        "Traceback",
    ];
    WORDS.iter().any(|w| line.contains(w))
}

/// Whether `line` reports running out of a resource.
pub fn is_resource_line(line: &str) -> bool {
    const WORDS: &[&str] = &[
        "out of memory",
        "OutOfMemory",
        "memory allocation of",
        "Cannot allocate memory",
        "Too many open files",
        "No space left on device",
        "oom-kill",
        "OOMKilled",
    ];
    WORDS.iter().any(|w| line.contains(w))
}

/// Whether `line` reports bad configuration.
pub fn is_configuration_line(line: &str) -> bool {
    let lower = line.to_ascii_lowercase();
    [
        "invalid configuration",
        "config error",
        "configuration error",
        "missing environment variable",
        "invalid config",
        "environment variable not found",
        "missing required setting",
    ]
    .iter()
    .any(|w| lower.contains(w))
}

/// Cuts `text` to at most `max` bytes at a character boundary.
pub fn truncate(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

/// Reads one service's lines in order and says what each one is.
#[derive(Debug, Default)]
pub struct BlockTracker {
    /// Lines in the current block; 0 when outside one.
    in_block: usize,
    /// The current block started with a Python traceback (ends on its unindented message).
    python: bool,
    /// The line before was ordinary and unindented (it may be an exception message).
    previous_plain: bool,
}

/// What [`BlockTracker::classify`] decided for one line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Classified {
    pub importance: Importance,
    /// This line starts a new block.
    pub starts_block: bool,
    /// The previous line belongs to this new block too (an exception message before `at`).
    pub adopts_previous: bool,
}

impl BlockTracker {
    pub fn classify(&mut self, line: &str) -> Classified {
        let plain = |importance| Classified {
            importance,
            starts_block: false,
            adopts_previous: false,
        };
        if starts_trace(line) {
            self.in_block = 1;
            self.python = line.trim_start().starts_with("Traceback");
            self.previous_plain = false;
            return Classified {
                importance: Importance::Trace,
                starts_block: true,
                adopts_previous: false,
            };
        }
        if self.in_block > 0 && self.in_block < MAX_BLOCK_LINES {
            // The first line after a Rust panic header is its message, whatever it looks like.
            let message_line = self.in_block == 1 && !self.python;
            if message_line || continues_trace(line) {
                self.in_block += 1;
                return plain(Importance::Trace);
            }
            if self.python && !line.trim().is_empty() {
                // A traceback ends with the exception's own, unindented line.
                self.in_block = 0;
                self.python = false;
                self.previous_plain = false;
                return plain(Importance::Trace);
            }
        }
        self.in_block = 0;
        self.python = false;
        if is_frame_line(line) {
            let adopts = self.previous_plain;
            self.in_block = 2;
            self.previous_plain = false;
            return Classified {
                importance: Importance::Trace,
                starts_block: true,
                adopts_previous: adopts,
            };
        }
        self.previous_plain = !line.starts_with([' ', '\t']) && !line.trim().is_empty();
        if is_error_line(line) {
            plain(Importance::Error)
        } else {
            plain(Importance::Ordinary)
        }
    }
}

/// The stack-trace blocks among one service's lines, in order, each as its text.
pub fn trace_blocks<'a>(lines: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut tracker = BlockTracker::default();
    let mut blocks: Vec<String> = Vec::new();
    let mut current: Option<String> = None;
    let mut previous: Option<&str> = None;
    for line in lines {
        let seen = tracker.classify(line);
        if seen.starts_block {
            if let Some(done) = current.take() {
                blocks.push(done);
            }
            let mut text = String::new();
            if seen.adopts_previous
                && let Some(previous) = previous
            {
                text.push_str(previous);
                text.push('\n');
            }
            text.push_str(line);
            text.push('\n');
            current = Some(text);
        } else if seen.importance == Importance::Trace {
            if let Some(text) = current.as_mut() {
                text.push_str(line);
                text.push('\n');
            }
        } else if let Some(done) = current.take() {
            blocks.push(done);
        }
        previous = Some(line);
    }
    blocks.extend(current);
    blocks
}

#[derive(Debug)]
struct Kept {
    seq: u64,
    block: u64,
    line: LogLine,
}

#[derive(Debug, Default)]
struct ServiceState {
    tracker: BlockTracker,
    stats: LogStats,
    /// Sequence number and tier of the line before, when it was not part of a block.
    last_plain: Option<(u64, usize)>,
    block: u64,
}

/// Retains at most `max_lines` lines and `max_bytes` bytes of text from any number of lines
/// read. When over budget it drops ordinary lines first, then error lines, then whole
/// stack-trace blocks, oldest first in each tier.
#[derive(Debug)]
pub struct LogKeeper {
    max_lines: usize,
    max_bytes: usize,
    /// Indexed by [`Importance`].
    tiers: [VecDeque<Kept>; 3],
    lines: usize,
    bytes: usize,
    seq: u64,
    next_block: u64,
    services: BTreeMap<String, ServiceState>,
}

impl LogKeeper {
    pub fn new(max_lines: usize, max_bytes: usize) -> Self {
        LogKeeper {
            max_lines: max_lines.max(1),
            max_bytes: max_bytes.max(1),
            tiers: Default::default(),
            lines: 0,
            bytes: 0,
            seq: 0,
            next_block: 1,
            services: BTreeMap::new(),
        }
    }

    /// Bytes of text held now.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Lines held now.
    pub fn lines(&self) -> usize {
        self.lines
    }

    /// Reads one line (of `line.service`).
    pub fn push(&mut self, mut line: LogLine) {
        let original = line.text.len();
        truncate(&mut line.text, MAX_LINE_BYTES);
        let state = self.services.entry(line.service.clone()).or_default();
        state.stats.service.clone_from(&line.service);
        state.stats.lines_seen += 1;
        state.stats.bytes_seen += original as u64;
        let seen = state.tracker.classify(&line.text);
        if seen.starts_block {
            state.stats.stack_traces += 1;
            state.block = self.next_block;
            self.next_block += 1;
        }
        if seen.importance >= Importance::Error && is_error_line(&line.text) {
            state.stats.error_lines += 1;
        }
        let block = match seen.importance {
            Importance::Trace => state.block,
            _ => 0,
        };
        let adopt = seen.adopts_previous.then_some(state.last_plain).flatten();
        state.last_plain =
            (seen.importance != Importance::Trace).then_some((self.seq, seen.importance as usize));
        // The exception message printed before its frames joins the block.
        if let Some((previous, tier)) = adopt {
            let from = &mut self.tiers[tier];
            if let Some(mut kept) = from
                .iter()
                .rposition(|k| k.seq == previous)
                .and_then(|position| from.remove(position))
            {
                kept.block = block;
                let trace = &mut self.tiers[Importance::Trace as usize];
                let at = trace.partition_point(|k| k.seq < kept.seq);
                trace.insert(at, kept);
            }
        }
        self.lines += 1;
        self.bytes += line.text.len();
        self.tiers[seen.importance as usize].push_back(Kept {
            seq: self.seq,
            block,
            line,
        });
        self.seq += 1;
        self.shrink();
    }

    fn over(&self) -> bool {
        self.lines > self.max_lines || self.bytes > self.max_bytes
    }

    fn drop_front(&mut self, tier: usize) {
        if let Some(kept) = self.tiers[tier].pop_front() {
            self.lines -= 1;
            self.bytes -= kept.line.text.len();
        }
    }

    fn shrink(&mut self) {
        while self.over() {
            if !self.tiers[Importance::Ordinary as usize].is_empty() {
                self.drop_front(Importance::Ordinary as usize);
            } else if !self.tiers[Importance::Error as usize].is_empty() {
                self.drop_front(Importance::Error as usize);
            } else {
                let trace = Importance::Trace as usize;
                let Some(oldest) = self.tiers[trace].front().map(|k| k.block) else {
                    break;
                };
                if self.tiers[trace].back().is_some_and(|k| k.block == oldest) {
                    // Only the block being read is left: cut it from the front.
                    self.drop_front(trace);
                } else {
                    while self.tiers[trace].front().is_some_and(|k| k.block == oldest) {
                        self.drop_front(trace);
                    }
                }
            }
        }
    }

    /// The kept lines in the order they were read, and what was seen of each service.
    pub fn finish(self) -> (Vec<LogLine>, Vec<LogStats>) {
        let mut kept: Vec<Kept> = self.tiers.into_iter().flatten().collect();
        kept.sort_by_key(|k| k.seq);
        let mut stats: BTreeMap<String, LogStats> = self
            .services
            .into_iter()
            .map(|(service, state)| (service, state.stats))
            .collect();
        for k in &kept {
            if let Some(s) = stats.get_mut(&k.line.service) {
                s.lines_kept += 1;
                s.bytes_kept += k.line.text.len() as u64;
            }
        }
        (
            kept.into_iter().map(|k| k.line).collect(),
            stats.into_values().collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(service: &str, text: &str) -> LogLine {
        LogLine {
            service: service.to_owned(),
            at: None,
            stream: "stderr".to_owned(),
            text: text.to_owned(),
        }
    }

    const RUST_PANIC: &[&str] = &[
        "thread 'tokio-runtime-worker' panicked at src/payments.rs:237:44:",
        "called `Option::unwrap()` on a `None` value",
        "note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace",
    ];

    #[test]
    fn finds_blocks_of_every_language() {
        let text = "\
INFO listening on 8080
thread 'main' (19992) panicked at src/stock.rs:15:51:
called `Option::unwrap()` on a `None` value
note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace
INFO next
Traceback (most recent call last):
  File \"/srv/app/app.py\", line 3, in <module>
    main()
ValueError: bad
INFO after python
java.lang.NullPointerException: boom
\tat com.example.Pay.run(Pay.java:12)
\tat com.example.Main.main(Main.java:5)
INFO after java
panic: runtime error: index out of range [5] with length 3

goroutine 1 [running]:
main.main()
\t/srv/app/main.go:8 +0x1d
INFO done";
        let blocks = trace_blocks(text.lines());
        assert_eq!(blocks.len(), 4, "{blocks:#?}");
        assert!(blocks[0].contains("unwrap()") && blocks[0].contains("RUST_BACKTRACE"));
        assert!(blocks[1].ends_with("ValueError: bad\n"), "{}", blocks[1]);
        assert!(
            blocks[2].starts_with("java.lang.NullPointerException"),
            "{}",
            blocks[2]
        );
        assert!(blocks[2].contains("Main.java:5"));
        assert!(blocks[3].contains("main.go:8"), "{}", blocks[3]);
        assert!(!blocks.iter().any(|b| b.contains("INFO")), "{blocks:#?}");
    }

    #[test]
    fn keeps_traces_over_errors_over_ordinary_lines_within_budget() {
        let mut keeper = LogKeeper::new(8, 100_000);
        keeper.push(line("a", "ERROR first failure"));
        for text in RUST_PANIC {
            keeper.push(line("a", text));
        }
        for n in 0..100 {
            keeper.push(line("a", &format!("INFO request {n} ok")));
        }
        keeper.push(line("a", "ERROR later failure"));
        assert!(keeper.lines() <= 8);
        let (kept, stats) = keeper.finish();
        let texts: Vec<&str> = kept.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(&texts[1..4], RUST_PANIC, "{texts:#?}");
        assert_eq!(texts[0], "ERROR first failure");
        assert!(texts.contains(&"ERROR later failure"));
        assert_eq!(texts.last(), Some(&"ERROR later failure"));
        assert_eq!(stats[0].lines_seen, 105);
        assert_eq!(stats[0].stack_traces, 1);
        assert_eq!(
            stats[0].error_lines, 3,
            "two error lines and the panic header"
        );
        assert_eq!(stats[0].lines_kept, 8);
    }

    #[test]
    fn drops_whole_old_blocks_when_traces_alone_overflow() {
        let mut keeper = LogKeeper::new(7, 100_000);
        for _ in 0..5 {
            for text in RUST_PANIC {
                keeper.push(line("a", text));
            }
        }
        let (kept, _) = keeper.finish();
        assert_eq!(kept.len(), 6, "two whole blocks fit, not a cut third");
        assert!(kept[0].text.contains("panicked at"));
        assert!(kept[3].text.contains("panicked at"));
    }

    #[test]
    fn long_lines_are_cut_and_bytes_stay_bounded() {
        let mut keeper = LogKeeper::new(1_000, 20_000);
        for _ in 0..100 {
            keeper.push(line("a", &"é".repeat(10_000)));
        }
        assert!(keeper.bytes() <= 20_000);
        let (kept, stats) = keeper.finish();
        assert!(kept.iter().all(|l| l.text.len() <= MAX_LINE_BYTES));
        assert_eq!(stats[0].bytes_seen, 100 * 20_000);
    }

    #[test]
    fn an_exception_message_before_its_frames_joins_the_block() {
        let mut keeper = LogKeeper::new(3, 100_000);
        keeper.push(line("a", "java.lang.IllegalStateException: no method"));
        keeper.push(line("a", "\tat com.example.Pay.run(Pay.java:12)"));
        for n in 0..10 {
            keeper.push(line("a", &format!("INFO {n}")));
        }
        let (kept, stats) = keeper.finish();
        assert_eq!(kept[0].text, "java.lang.IllegalStateException: no method");
        assert_eq!(kept[1].text, "\tat com.example.Pay.run(Pay.java:12)");
        assert_eq!(stats[0].stack_traces, 1);
    }
}
