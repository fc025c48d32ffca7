#!/usr/bin/env bash
# Regenerates examples/quickstart.cassette.json: runs the quickstart through `wflo run
# --record-cassette` against a fake OpenAI server on loopback (crates/wflo-cli/tests/record_cassette.rs),
# so the cassette holds exactly the request the runtime sends for the `plan` step. Needs the Docker
# engine and the sandbox image, which `cargo xtask itest` brings up.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo xtask itest wflo-cli -- --ignored record_the_quickstart_cassette
git --no-pager diff --stat -- examples/quickstart.cassette.json
