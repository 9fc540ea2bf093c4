//! Static policy: what a fix may change, checked on its diff before anything is built.
//!
//! - size: added plus removed lines within the limit (the smaller of the manifest's and the gate's);
//! - paths: nothing under a forbidden path (manifest `[policy]` plus gate config), only allowed
//!   paths when a list is configured;
//! - dependencies: no dependency manifest or lockfile touched (a fix must not pull in code);
//! - secrets: no key or token in the added lines;
//! - `unsafe`: no new `unsafe` block, function, impl or trait.

use selfheal_manifest::{Policy, path_matches};

use crate::diff::DiffSummary;

/// Files that declare or pin dependencies, for any toolchain the gate may meet.
const DEPENDENCY_FILES: &[&str] = &[
    "Cargo.toml",
    "Cargo.lock",
    "requirements.txt",
    "requirements-dev.txt",
    "pyproject.toml",
    "poetry.lock",
    "Pipfile",
    "Pipfile.lock",
    "setup.py",
    "setup.cfg",
    "uv.lock",
    "package.json",
    "package-lock.json",
    "yarn.lock",
    "pnpm-lock.yaml",
    "go.mod",
    "go.sum",
    "Gemfile",
    "Gemfile.lock",
    "pom.xml",
    "build.gradle",
    "build.gradle.kts",
];

/// The limits a fix is checked against.
#[derive(Clone, Debug)]
pub(crate) struct Limits {
    pub(crate) max_changed_lines: u32,
    pub(crate) forbidden_paths: Vec<String>,
    pub(crate) allowed_paths: Vec<String>,
}

impl Limits {
    /// The manifest's `[policy]` combined with the gate's configuration: the stricter size,
    /// the union of forbidden paths, the union of allowed paths.
    pub(crate) fn combine(
        manifest: &Policy,
        max_changed_lines: u32,
        forbidden: &[String],
        allowed: &[String],
    ) -> Self {
        Self {
            max_changed_lines: manifest
                .max_changed_lines
                .map_or(max_changed_lines, |m| m.min(max_changed_lines)),
            forbidden_paths: manifest
                .forbidden_paths
                .iter()
                .chain(forbidden)
                .cloned()
                .collect(),
            allowed_paths: manifest
                .allowed_paths
                .iter()
                .chain(allowed)
                .cloned()
                .collect(),
        }
    }
}

/// Every rule the diff breaks, one sentence each; empty when it keeps them all.
pub(crate) fn violations(diff: &DiffSummary, limits: &Limits) -> Vec<String> {
    let mut found = Vec::new();
    if diff.changed_lines() > limits.max_changed_lines {
        found.push(format!(
            "changes {} lines (+{} -{}), over the limit of {}",
            diff.changed_lines(),
            diff.added,
            diff.removed,
            limits.max_changed_lines
        ));
    }
    for path in diff.paths() {
        if let Some(entry) = limits
            .forbidden_paths
            .iter()
            .find(|entry| path_matches(entry, path))
        {
            found.push(format!("touches {path}, a forbidden path ({entry})"));
        }
        if !limits.allowed_paths.is_empty()
            && !limits
                .allowed_paths
                .iter()
                .any(|entry| path_matches(entry, path))
        {
            found.push(format!(
                "touches {path}, outside the allowed paths ({})",
                limits.allowed_paths.join(", ")
            ));
        }
        if let Some(name) = DEPENDENCY_FILES
            .iter()
            .find(|name| path.rsplit('/').next() == Some(**name))
        {
            found.push(format!(
                "touches {path}: a fix may not add or change dependencies ({name})"
            ));
        }
    }
    if diff.binary {
        found.push("carries a binary patch, which cannot be reviewed".into());
    }
    for (file, line) in &diff.added_lines {
        if let Some(kind) = secret_in(line) {
            found.push(format!("adds what looks like a secret ({kind}) to {file}"));
        }
        if file.ends_with(".rs") && adds_unsafe(line) {
            found.push(format!("adds `unsafe` code to {file}: {}", line.trim()));
        }
    }
    found.dedup();
    found
}

/// The kind of secret `line` seems to contain.
pub(crate) fn secret_in(line: &str) -> Option<&'static str> {
    if line.contains("-----BEGIN") && line.contains("PRIVATE KEY") {
        return Some("a private key");
    }
    let tokens = [
        ("AKIA", 16, "an AWS access key id"),
        ("ghp_", 30, "a GitHub token"),
        ("gho_", 30, "a GitHub token"),
        ("github_pat_", 30, "a GitHub token"),
        ("xoxb-", 20, "a Slack token"),
        ("xoxp-", 20, "a Slack token"),
        ("sk_live_", 20, "a Stripe key"),
        ("sk-", 32, "an API key"),
        ("glpat-", 20, "a GitLab token"),
    ];
    for (prefix, min_len, kind) in tokens {
        for (i, _) in line.match_indices(prefix) {
            let word_start = i == 0
                || !line[..i]
                    .chars()
                    .next_back()
                    .is_some_and(|c| c.is_ascii_alphanumeric());
            let tail = line[i + prefix.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
                .count();
            if word_start && tail >= min_len {
                return Some(kind);
            }
        }
    }
    // `password = "..."`, `api_key: '...'`: a secret-looking name given a long literal.
    let lower = line.to_ascii_lowercase();
    let names = [
        "password",
        "passwd",
        "secret",
        "api_key",
        "apikey",
        "access_key",
        "private_key",
        "token",
    ];
    for name in names {
        let Some(at) = lower.find(name) else { continue };
        let rest = &lower[at + name.len()..];
        // The value follows `=` (after an optional type annotation) or a `:` key separator.
        let value = match rest.find('=') {
            Some(eq) if !rest[eq + 1..].starts_with('=') => &rest[eq + 1..],
            _ => match rest.trim_start_matches(['"', '\'', ' ']).strip_prefix(':') {
                Some(after) => after,
                None => continue,
            },
        };
        let rest = value.trim_start();
        let quote = match rest.chars().next() {
            Some(q @ ('"' | '\'')) => q,
            _ => continue,
        };
        let literal: String = rest[1..].chars().take_while(|c| *c != quote).collect();
        if literal.len() >= 8 && !literal.contains(' ') && !literal.contains('{') {
            return Some("a credential assigned a literal");
        }
    }
    None
}

/// Whether a Rust line (outside a line comment) opens `unsafe` code.
pub(crate) fn adds_unsafe(line: &str) -> bool {
    let code = line.split("//").next().unwrap_or_default();
    code.match_indices("unsafe").any(|(i, _)| {
        let before_ok = !code[..i]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        let after = &code[i + "unsafe".len()..];
        let after_ok = after.starts_with('{')
            || after.starts_with(char::is_whitespace)
                && ["{", "fn", "impl", "trait", "extern"]
                    .iter()
                    .any(|k| after.trim_start().starts_with(k));
        before_ok && after_ok
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff;

    fn limits() -> Limits {
        Limits::combine(
            &Policy {
                forbidden_paths: vec!["selfheal.toml".into(), ".git/".into()],
                allowed_paths: vec![],
                max_changed_lines: Some(40),
            },
            200,
            &["deploy/".into()],
            &[],
        )
    }

    fn one_file(path: &str, added: &[&str]) -> DiffSummary {
        let mut text = format!(
            "--- a/{path}\n+++ b/{path}\n@@ -1,1 +1,{} @@\n-old\n",
            added.len()
        );
        for line in added {
            text.push('+');
            text.push_str(line);
            text.push('\n');
        }
        diff::parse(&text).unwrap()
    }

    #[test]
    fn a_small_fix_in_source_keeps_every_rule() {
        let d = one_file("src/payments.rs", &["let m = p.unwrap_or(DEFAULT_METHOD);"]);
        assert_eq!(violations(&d, &limits()), Vec::<String>::new());
    }

    #[test]
    fn the_stricter_size_limit_applies() {
        assert_eq!(limits().max_changed_lines, 40);
        let lines: Vec<String> = (0..45).map(|i| format!("// {i}")).collect();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let v = violations(&one_file("src/a.rs", &refs), &limits());
        assert!(v[0].contains("over the limit of 40"), "{v:?}");
    }

    #[test]
    fn forbidden_dependency_and_allowed_paths_are_named() {
        let v = violations(&one_file("selfheal.toml", &["x = 1"]), &limits());
        assert!(v[0].contains("forbidden path (selfheal.toml)"), "{v:?}");
        let v = violations(&one_file("deploy/k8s.yaml", &["x: 1"]), &limits());
        assert!(v[0].contains("(deploy/)"), "{v:?}");
        let v = violations(&one_file("sub/Cargo.lock", &["x"]), &limits());
        assert!(v[0].contains("dependencies"), "{v:?}");
        let mut only_src = limits();
        only_src.allowed_paths = vec!["src/".into()];
        let v = violations(&one_file("build.rs", &["x"]), &only_src);
        assert!(v[0].contains("outside the allowed paths"), "{v:?}");
    }

    #[test]
    fn secrets_are_found_and_ordinary_code_is_not() {
        for line in [
            "let key = \"AKIAIOSFODNN7EXAMPLE\";",
            "-----BEGIN RSA PRIVATE KEY-----",
            "const T: &str = \"ghp_abcdefghijklmnopqrstuvwxyz0123456789\";",
            "password = \"hunter2hunter2\"",
            "let api_key: &str = \"0123456789abcdef\";",
        ] {
            assert!(secret_in(line).is_some(), "{line}");
        }
        for line in [
            "let token = next_token(&mut lexer);",
            "let password = read_password()?;",
            "fn desk-top() {}",
            "format!(\"{token}\")",
        ] {
            assert_eq!(secret_in(line), None, "{line}");
        }
    }

    #[test]
    fn new_unsafe_code_is_found_outside_comments() {
        for line in [
            "unsafe { ptr.read() }",
            "    pub unsafe fn f() {}",
            "unsafe impl Send for X {}",
            "let x = unsafe{ y };",
        ] {
            assert!(adds_unsafe(line), "{line}");
        }
        for line in [
            "// this is not unsafe { }",
            "let unsafe_count = 1;",
            "#![forbid(unsafe_code)]",
        ] {
            assert!(!adds_unsafe(line), "{line}");
        }
    }
}
