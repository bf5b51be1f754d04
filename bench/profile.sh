#!/usr/bin/env bash
# Profiles behind BENCHMARKS.md's findings. `perf stat -e instructions` is not supported on this
# VM (no PMU), so instruction profiles come from valgrind --tool=callgrind and syscall/time
# splits from `perf trace -s` (tracepoints work). Builds a line-tables release binary from
# `git archive HEAD` under /tmp (src/ is never touched). Everything it makes is removed.
#
#   bench/profile.sh                 # all; ~3 min
#   bench/profile.sh ready|status|save|siblings
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
what="${1:-all}"
prof_target=/tmp/bench-target-prof
work="$(mktemp -d /tmp/hupwatch-profile.XXXXXX)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -9 -- "-$p" 2>/dev/null || kill -9 "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
say() { printf '\n== %s\n' "$*"; }

src="$work/src"; mkdir -p "$src"
git -C "$repo" archive HEAD | tar -x -C "$src"
(cd "$src" && CARGO_PROFILE_RELEASE_DEBUG=line-tables-only CARGO_TARGET_DIR="$prof_target" \
    cargo build --release --locked --quiet)
H="$prof_target/release/hupwatch"
venv="${BENCH_VENV:-/tmp/bench-venv}"
say "hupwatch $(git -C "$repo" rev-parse --short HEAD), line tables, $H"

if [[ "$what" == all || "$what" == ready ]]; then
    say "ready: 100k files in ~2k directories"
    "$venv/bin/python3" - "$work/tree" <<'PY'
import sys
from pathlib import Path
root = Path(sys.argv[1]); leaves = []
for i in range(2000):
    leaf = root / f"g{i % 44:03d}" / f"d{i:05d}"; leaf.mkdir(parents=True, exist_ok=True); leaves.append(leaf)
for n in range(100_000):
    (leaves[n % 2000] / f"m{n:06d}.py").write_bytes(b"X = 1\n")
PY
    perf trace -s -o "$work/ready.trace" -- timeout -s INT 3 "$H" watch -w "$work/tree" --no-preflight --pid 999999 \
        >/dev/null 2>&1 || true
    grep -A12 -E '^ (hupwatch|notify-rs)' "$work/ready.trace" | grep -E 'hupwatch|notify|futex|inotify_add|getdents|openat|statx|epoll_wait|read '
    timeout -s INT 60 valgrind --tool=callgrind --callgrind-out-file="$work/ready.cg" \
        "$H" watch -w "$work/tree" --no-preflight --pid 999999 >/dev/null 2>&1 || true
    callgrind_annotate --inclusive=yes "$work/ready.cg" 2>/dev/null |
        grep -E 'PROGRAM TOTALS|add_tree|GlobRules::matches|GlobSet::is_match \[|Scope::relative \[|Candidate::from_cow|watch_dir' |
        head -12 | cut -c1-150
fi

if [[ "$what" == all || "$what" == status ]]; then
    say "status --json with 2,000 extra processes named python3"
    mkdir -p "$work/bin" && cp "$(command -v sleep)" "$work/bin/python3"
    setsid bash -c "for i in \$(seq 2000); do '$work/bin/python3' 600 & done; wait" &
    pids+=($!)
    sleep 3
    for i in 1 2 3; do /usr/bin/time -f "status --json: %e s" "$H" status --json >/dev/null; done
    perf trace -s -o "$work/status.trace" -- "$H" status --json >/dev/null 2>&1 || true
    grep -A10 -E '^ hupwatch' "$work/status.trace" | grep -E 'read|openat|close|statx|getdents'
    valgrind --tool=callgrind --callgrind-out-file="$work/status.cg" "$H" status --json >/dev/null 2>&1 || true
    callgrind_annotate --inclusive=yes "$work/status.cg" 2>/dev/null |
        grep -E 'PROGRAM TOTALS|all_masters \[|read_stat \[|read_cmdline \[|default_read_to_end|cmdline::parse \[' |
        head -8 | cut -c1-150
    kill -9 -- "-${pids[-1]}" 2>/dev/null || true
fi

if [[ "$what" == all || "$what" == save ]]; then
    say "save → SIGHUP breakdown (no tracer attached)"
    "$venv/bin/python3" "$here/profile/inotify_wake.py"
    "$venv/bin/python3" "$here/profile/inotify_mask.py"
    "$venv/bin/python3" "$here/profile/save_breakdown.py" "$H"
fi

if [[ "$what" == all || "$what" == siblings ]]; then
    say "wake-ups from file activity that is never a change"
    "$venv/bin/python3" "$here/profile/sibling_wakeups.py" "$H"
fi
