#!/usr/bin/env bash
# The full test suite against real servers: installs and starts every backing server the
# tests need (idempotent; caches reused), then runs formatting, lints and every test.
#
#   bash scripts/test.sh            # everything
#   bash scripts/test.sh -p selfheal-audit   # extra arguments go to `cargo test`
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

# One shared target directory outside the checkout keeps repeated runs (and fresh clones)
# incremental.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/selfheal/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# Incremental compilation caches grow by gigabytes per checkout path and buy nothing for a
# build that runs once; the shared target directory already keeps dependencies warm.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
# Two cores: keep the linker and test threads from thrashing.
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"

step() { printf '\n==> %s (%ss)\n' "$1" "$SECONDS"; }

step "starting real backing servers"
bash scripts/backends.sh start
eval "$(bash scripts/backends.sh env)"

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo test"
cargo test --workspace --no-fail-fast "$@"

step "done"
