#!/usr/bin/env bash
# Runs every benchmark, one after the other, and writes their tables into
# docs/performance.md between the "all benchmarks" markers (the rest of the
# file, with its before/after history, is left alone).
#
#     benches/all.sh                                   # 10 s per row, 1M-event replay
#     BENCH_SECONDS=5 REPLAY_EVENTS=200000 benches/all.sh   # quicker
#     BENCHES="create_runner instances" benches/all.sh      # some only
#
# Needs what .ci/install-deps installs (pgbench, slapd, node for the login
# bench). Takes about 15 minutes on the 2-core reference machine; run it
# on a quiet machine, nothing else compiling.
set -euo pipefail
cd "$(dirname "$0")/.."
export BENCH_SECONDS=${BENCH_SECONDS:-10}
export REPLAY_EVENTS=${REPLAY_EVENTS:-1000000}
benches=${BENCHES:-create_runner runner_protocol instances login replay file_transfer}
out=$(mktemp /tmp/warden-bench-all.XXXXXX)
trap 'rm -f "$out"' EXIT

cargo bench --locked --no-run --quiet
{
    echo "Run of $(date -u '+%Y-%m-%d %H:%M UTC') on $(nproc) cores, commit $(git rev-parse --short HEAD):"
    echo "\`BENCH_SECONDS=$BENCH_SECONDS REPLAY_EVENTS=$REPLAY_EVENTS benches/all.sh\`."
    for bench in $benches; do
        [ "$bench" = file_transfer ] && continue
        echo
        echo "### \`cargo bench --bench $bench\`"
        echo
        # Keep the tables and their captions; drop progress and NOTICE lines.
        cargo bench --locked --quiet --bench "$bench" 2>/dev/null |
            grep -v -e '^NOTICE' -e '^running' -e '^test result' || {
            echo "(failed: see \`cargo bench --bench $bench\`)"
        }
    done
    if [[ " $benches " == *" file_transfer "* ]]; then
        echo
        echo "### \`benches/file_transfer.sh\` (SIZE_MB=100)"
        echo
        SIZE_MB=100 benches/file_transfer.sh 2>/dev/null || echo "(failed: see benches/file_transfer.sh)"
    fi
} > "$out"

python3 - "$out" <<'EOF'
import sys
start, end = "<!-- all benchmarks: start -->", "<!-- all benchmarks: end -->"
path = "docs/performance.md"
text = open(path).read()
if start not in text:
    text += f"\n## Latest run of every benchmark\n\n{start}\n{end}\n"
head, rest = text.split(start, 1)
_, tail = rest.split(end, 1)
body = open(sys.argv[1]).read().strip()
open(path, "w").write(f"{head}{start}\n{body}\n{end}{tail}")
print(f"wrote {len(body.splitlines())} lines into {path}")
EOF
