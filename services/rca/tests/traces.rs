//! Parses the checked-in corpus of real stack traces (`tests/fixtures/traces`, recreated by
//! `tests/fixtures/regenerate.sh`) and checks the first frame in the program's own code.

use selfheal_rca::localize::trace::{self, ParsedTrace};
use selfheal_rca::localize::{Frame, Language};

fn fixture(path: &str) -> String {
    let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/traces")
        .join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// The first trace and its first in-app frame.
fn first_app_frame(path: &str) -> (ParsedTrace, Frame) {
    let traces = trace::parse(&fixture(path));
    let first = traces
        .first()
        .unwrap_or_else(|| panic!("{path}: no trace"))
        .clone();
    let frame = first
        .frames
        .iter()
        .find(|frame| frame.in_app)
        .unwrap_or_else(|| panic!("{path}: no in-app frame in {:#?}", first.frames))
        .clone();
    (first, frame)
}

fn assert_frame(frame: &Frame, file: &str, line: u32, function: &str) {
    assert_eq!(
        (frame.file.as_str(), frame.line, frame.function.as_str()),
        (file, line, function)
    );
}

#[test]
fn rust_panic_without_backtrace_points_at_the_panic_location() {
    let (trace, frame) = first_app_frame("rust/panic_no_backtrace.txt");
    assert_eq!(trace.language, Language::Rust);
    assert_eq!(trace.message, "called `Option::unwrap()` on a `None` value");
    assert_eq!(trace.frames.len(), 1);
    assert_frame(&frame, "src/stock.rs", 15, "");
    assert_eq!(frame.column, 51);
}

#[test]
fn rust_backtrace_skips_std_frames() {
    let (trace, frame) = first_app_frame("rust/panic_backtrace.txt");
    assert_eq!(trace.language, Language::Rust);
    assert_frame(&frame, "./src/stock.rs", 15, "reserve");
    let std_frames = trace.frames.iter().take_while(|f| !f.in_app).count();
    assert_eq!(std_frames, 5, "rust_begin_unwind … unwrap<u32> come first");
}

#[test]
fn rust_full_backtrace_loses_hashes_and_addresses() {
    let (trace, frame) = first_app_frame("rust/panic_full_backtrace.txt");
    assert_frame(&frame, "/srv/app/src/stock.rs", 15, "reserve");
    assert!(trace.frames.iter().any(|f| f.function == "inventory::main"));
    assert!(
        !trace
            .frames
            .iter()
            .any(|f| f.function.contains("[e28293b1aa0f68bd]"))
    );
}

#[test]
fn rust_thread_panic_in_a_closure() {
    let (trace, frame) = first_app_frame("rust/thread_panic_backtrace.txt");
    assert_frame(&frame, "./src/stock.rs", 15, "reserve");
    let caller = trace
        .frames
        .iter()
        .filter(|f| f.in_app)
        .nth(1)
        .expect("caller");
    assert_frame(
        caller,
        "./src/stock.rs",
        20,
        "inventory::stock::Stock::reserve_all::{{closure}}",
    );
}

#[test]
fn rust_backtrace_with_absolute_and_root_relative_paths() {
    let (_, frame) = first_app_frame("rust/panic_backtrace_absolute.txt");
    assert_frame(&frame, "/srv/app/src/stock.rs", 15, "reserve");
    let (trace, frame) = first_app_frame("rust/panic_backtrace_from_root.txt");
    assert_frame(&frame, "./srv/app/src/stock.rs", 15, "reserve");
    assert!(
        trace
            .frames
            .iter()
            .filter(|f| f.file.contains("rustc/"))
            .all(|f| !f.in_app),
        "toolchain sources are never the service's code"
    );
}

#[test]
fn python_traceback_innermost_frame_first() {
    let (trace, frame) = first_app_frame("python/type_error.txt");
    assert_eq!(trace.language, Language::Python);
    assert_eq!(
        trace.message,
        "TypeError: 'NoneType' object is not subscriptable"
    );
    assert_frame(&frame, "/srv/app/shop/pricing.py", 6, "total");
    assert_eq!(
        trace.frames.last().map(|f| f.function.as_str()),
        Some("<module>")
    );
    let (_, frame) = first_app_frame("python/absolute_paths.txt");
    assert_frame(&frame, "/srv/app/shop/pricing.py", 6, "total");
}

#[test]
fn python_chains_put_the_root_cause_first() {
    for name in ["chained_during_handling", "chained_direct_cause"] {
        let traces = trace::parse(&fixture(&format!("python/{name}.txt")));
        assert_eq!(traces.len(), 2, "{name}");
        assert_eq!(
            traces[0].message,
            "TypeError: 'NoneType' object is not subscriptable"
        );
        assert_eq!(
            traces[1].message,
            "shop.orders.OrderError: order 7 cannot be priced"
        );
        let frame = traces[0].frames.iter().find(|f| f.in_app).expect("frame");
        assert_frame(frame, "/srv/app/shop/pricing.py", 6, "total");
    }
}

#[test]
fn python_stdlib_frames_are_not_app_frames() {
    let (trace, frame) = first_app_frame("python/stdlib_frames.txt");
    assert!(trace.message.starts_with("json.decoder.JSONDecodeError"));
    assert_frame(&frame, "/srv/app/shop/pricing.py", 10, "load_rules");
    assert_eq!(trace.frames.iter().take_while(|f| !f.in_app).count(), 3);
}

#[test]
fn java_root_cause_is_the_last_caused_by() {
    let traces = trace::parse(&fixture("java/caused_by_chain.txt"));
    assert_eq!(traces.len(), 3);
    assert_eq!(traces[0].language, Language::Java);
    assert!(
        traces[0]
            .message
            .starts_with("java.lang.NullPointerException: Cannot invoke")
    );
    assert_eq!(
        traces[2].message,
        "java.lang.RuntimeException: checkout failed"
    );
    let frame = traces[0].frames.iter().find(|f| f.in_app).expect("frame");
    assert_frame(
        frame,
        "com/example/orders/Pricing.java",
        5,
        "com.example.orders.Pricing.total",
    );
}

#[test]
fn java_jdk_frames_are_skipped() {
    let (trace, frame) = first_app_frame("java/jdk_frames_first.txt");
    assert_eq!(
        trace.message,
        "java.lang.NumberFormatException: For input string: \"12x\""
    );
    assert_frame(
        &frame,
        "com/example/orders/Pricing.java",
        10,
        "com.example.orders.Pricing.parseAmount",
    );
}

#[test]
fn go_panic_in_a_package_function() {
    let (trace, frame) = first_app_frame("go/index_out_of_range.txt");
    assert_eq!(trace.language, Language::Go);
    assert_eq!(
        trace.message,
        "runtime error: index out of range [5] with length 3"
    );
    assert_frame(
        &frame,
        "/srv/app/internal/cart/cart.go",
        16,
        "example.com/orders/internal/cart.Pick",
    );
}

#[test]
fn go_trimpath_build_names_module_paths() {
    let (trace, frame) = first_app_frame("go/nil_map_trimpath.txt");
    assert_eq!(trace.message, "assignment to entry in nil map");
    assert_frame(
        &frame,
        "example.com/orders/internal/cart/cart.go",
        11,
        "example.com/orders/internal/cart.(*Cart).Add",
    );
}

#[test]
fn go_goroutine_panic_skips_the_sort_package() {
    let (trace, frame) = first_app_frame("go/goroutine_sort_panic.txt");
    assert_eq!(trace.message, "ambiguous order for b");
    assert_frame(
        &frame,
        "/srv/app/internal/cart/cart.go",
        22,
        "main.main.func1.SortByQuantity.1",
    );
    let sort_frames: Vec<_> = trace
        .frames
        .iter()
        .filter(|f| f.function.starts_with("sort."))
        .collect();
    assert_eq!(sort_frames.len(), 3);
    assert!(sort_frames.iter().all(|f| !f.in_app));
    assert_eq!(
        trace.frames.last().map(|f| f.function.as_str()),
        Some("main.main")
    );
}

#[test]
fn node_type_error_skips_builtins() {
    let (trace, frame) = first_app_frame("node/type_error.txt");
    assert_eq!(trace.language, Language::Node);
    assert_eq!(
        trace.message,
        "TypeError: Cannot read properties of undefined (reading 'amount')"
    );
    assert_frame(&frame, "/srv/app/lib/cart.js", 4, "lineTotal");
    assert_eq!(frame.column, 21);
    assert!(
        trace
            .frames
            .iter()
            .filter(|f| f.file.starts_with("node:"))
            .all(|f| !f.in_app)
    );
}

#[test]
fn node_anonymous_async_and_esm_frames() {
    let (_, frame) = first_app_frame("node/anonymous_function.txt");
    assert_frame(&frame, "/srv/app/lib/cart.js", 14, "");
    let (trace, frame) = first_app_frame("node/async_rejection.txt");
    assert_eq!(trace.message, "RangeError: no price for a");
    assert_frame(&frame, "/srv/app/lib/cart.js", 21, "fetchPrice");
    let (trace, frame) = first_app_frame("node/esm_file_urls.txt");
    assert_frame(&frame, "/srv/app/lib/cart.js", 4, "lineTotal");
    assert!(
        trace
            .frames
            .iter()
            .any(|f| f.file == "/srv/app/server.mjs" && f.line == 9)
    );
}

#[test]
fn every_fixture_yields_an_app_frame_in_its_own_language() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/traces");
    let mut seen = 0;
    for (dir, language) in [
        ("rust", Language::Rust),
        ("python", Language::Python),
        ("java", Language::Java),
        ("go", Language::Go),
        ("node", Language::Node),
    ] {
        for entry in std::fs::read_dir(root.join(dir)).expect("fixture directory") {
            let path = entry.expect("entry").path();
            let text = std::fs::read_to_string(&path).expect("fixture");
            assert_eq!(trace::detect(&text), Some(language), "{}", path.display());
            let traces = trace::parse(&text);
            assert!(
                traces.iter().any(|t| t.frames.iter().any(|f| f.in_app)),
                "{}",
                path.display()
            );
            seen += 1;
        }
    }
    assert!(seen >= 20, "the corpus has {seen} traces");
}

#[test]
fn garbled_and_truncated_traces_give_no_frames_or_partial_ones() {
    assert!(trace::parse("thread 'main' (1) panicked at").is_empty());
    assert!(trace::parse("Traceback (most recent call last):\n  File \"x.py\", line").is_empty());
    assert!(trace::parse("goroutine 1 [running]:\nmain.main(\n").is_empty());
    assert!(trace::parse("\u{0}\u{1}at (:::)\n\tat (\n    at  ( )\n").is_empty());
    // A Rust backtrace cut off after its first frames still gives them.
    let full = fixture("rust/panic_backtrace.txt");
    let cut = &full[..full.find("   6:").expect("frame 6")];
    let traces = trace::parse(cut);
    assert_eq!(
        traces[0].frames.iter().find(|f| f.in_app).map(|f| f.line),
        Some(15)
    );
}

#[test]
fn huge_inputs_are_parsed_in_one_bounded_pass() {
    // 20 MB of frames: the parser keeps at most MAX_FRAMES of them per trace.
    let frame = "   1: app::f\n             at ./src/lib.rs:1:1\n";
    let mut text =
        String::from("thread 'main' (1) panicked at src/lib.rs:1:1:\nboom\nstack backtrace:\n");
    while text.len() < 20 * 1024 * 1024 {
        text.push_str(frame);
    }
    let traces = trace::parse(&text);
    assert_eq!(traces.len(), 1);
    assert_eq!(traces[0].frames.len(), trace::MAX_FRAMES);
    // 20 MB on one line, and 20 MB of headers.
    assert!(trace::parse(&"x".repeat(20 * 1024 * 1024)).is_empty());
    let headers = "Traceback (most recent call last):\n".repeat(600_000);
    assert!(trace::parse(&headers).len() <= trace::MAX_TRACES);
}
