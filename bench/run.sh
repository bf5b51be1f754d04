#!/usr/bin/env bash
# hupwatch benchmarks: builds the release binaries, provisions the peers, runs every scenario
# with interleaved rounds, prints the results table and writes bench/results/latest.{md,json}.
#
#   bench/run.sh                       # everything, ~20-25 min on 2 cores once tools are built
#   BENCH_SCENARIOS=save,swap bench/run.sh
#   BENCH_SCENARIOS=stall BENCH_SETTLE_VARIANT=0 bench/run.sh    # worst request during a reload, ~7 min
#   BENCH_SCENARIOS=stall BENCH_SETTLE_VARIANT=0 BENCH_STALL_STRATEGIES=hup,upgrade,auto,run bench/run.sh
#                                      # … with `hupwatch run` beside them (issue 12), ~9 min
#   BENCH_SCENARIOS=rhythm BENCH_SETTLE_VARIANT=0 bench/run.sh   # save rhythm, ~3 min
#   BENCH_SCENARIOS=surge BENCH_SETTLE_VARIANT=0 bench/run.sh    # run --max-surge (issue 22), ~4 min;
#                                      # also redraws docs/img/rolling-memory.svg, reload-latency.svg
#
# Not part of `cargo test`. Needs root only to raise fs.inotify.max_user_watches when it is too
# low for the 100k-file tree (the original value is recorded). Loopback only. Knobs (defaults):
#   BENCH_SCENARIOS=tree,discovery,save,swap,e2e,oneshot,defaults,stall,rhythm   BENCH_DEBOUNCE_MS=100
#   BENCH_DEFAULTS=8 BENCH_DEFAULTS_ALT_DEBOUNCE=100ms BENCH_VENV_INOTIFY=/tmp/bench-venv-inotify
#   BENCH_DEFAULTS_SAVES=inplace,atomic (defaults: truncate+write, and a mkstemp file renamed over app.py)
#   BENCH_SAVES=30 BENCH_SWAPS=30 BENCH_SWAPS_PREFLIGHT=10 BENCH_E2E=15 BENCH_ONESHOT=8
#   BENCH_FILES=100000 BENCH_DIRS=2000 BENCH_READY_ROUNDS=3 BENCH_IDLE_SECS=60
#   BENCH_PROCS=2000 BENCH_DISCOVERY_RUNS=20 BENCH_POLL_MS=5 BENCH_KEEP=0 BENCH_OUT=bench/results
#   BENCH_QUIET_WAIT=90 (s to wait for <25% CPU before a scenario; 2x that per run at most)
#   BENCH_TIMEOUT=1800 (s, hard bound on the measuring part)
#   stall (bench/stall.py, bench/stall_tools.py): BENCH_STALL_STRATEGIES=hup,upgrade,auto (each a
#     `hupwatch reload --strategy` value, or `run`: `hupwatch run --watch APPDIR --debounce 50ms --
#     gunicorn -w 2 -b 127.0.0.1:PORT app:app`, serving the app itself and deploying the edit from its
#     own watch; a value the binary does not offer is skipped with a note; issue 12's table:
#     BENCH_STALL_STRATEGIES=hup,upgrade,auto,run) BENCH_STALL_GUNICORN_RELOAD=1 BENCH_STALL_IMPORTS=0,1.5,5
#     (s the app's import sleeps) BENCH_STALL_ROUNDS=3 BENCH_STALL_WORKERS=2 BENCH_STALL_CLIENTS=4
#     BENCH_STALL_PAUSE_MS=20 BENCH_STALL_STEADY_SECS=3 BENCH_STALL_TAIL_MS=500 BENCH_STALL_PREFLIGHT=1
#     BENCH_STALL_RSS_MS=50 (ms between two samples of the tool's process-tree RSS)
#   surge (bench/surge.py, plots by bench/svg_plot.py): BENCH_SURGE_TOOLS=run,surge1,surge2,hup,auto,reload
#     BENCH_SURGE_ROUNDS=2 BENCH_SURGE_WORKERS=4 BENCH_SURGE_MIB=40 (each worker's own memory)
#     BENCH_SURGE_IMPORT=1.0 (s) BENCH_SURGE_STEADY_SECS=3 BENCH_SURGE_PLOTS=docs/img
#   rhythm (bench/rhythm.py): BENCH_RHYTHM_SPACINGS=0.4,1.6 (s between saves) BENCH_RHYTHM_SAVES=9
#     (per train; the first is left out) BENCH_RHYTHM_ROUNDS=3 BENCH_RHYTHM_DEBOUNCE_MS=50
#   BENCH_SETTLE_VARIANT=1  also build a copy of the source with SWAP_SETTLE flipped 50ms<->0 (in /tmp)
#   BENCH_HUPWATCH_ALT=/path/to/hupwatch BENCH_HUPWATCH_ALT_LABEL=name  an extra build (e.g. a proposed
#                     patch) measured side by side in the save, swap and rhythm scenarios
#   CARGO_TARGET_DIR=/tmp/bench-target  BENCH_TOOLS=/tmp/bench-tools  BENCH_VENV=/tmp/bench-venv
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/tmp/bench-target}"
tools="${BENCH_TOOLS:-/tmp/bench-tools}"
venv="${BENCH_VENV:-/tmp/bench-venv}"
bin_dir="$CARGO_TARGET_DIR/bench-bin"
mkdir -p "$bin_dir"

say() { printf '[run.sh] %s\n' "$*" >&2; }

# 1. hupwatch, release. The working tree is built; if it does not compile (someone is mid-edit),
#    the last commit is built instead, from a `git archive` copy under /tmp.
rev="$(git -C "$repo" describe --always --dirty 2>/dev/null || echo unknown)"
say "building hupwatch ($rev) into $CARGO_TARGET_DIR"
if ! (cd "$repo" && cargo build --release --locked --quiet); then
    say "working tree does not build; building HEAD instead"
    src="$(mktemp -d /tmp/bench-src.XXXXXX)"
    git -C "$repo" archive HEAD | tar -x -C "$src"
    (cd "$src" && cargo build --release --locked --quiet)
    rm -rf "$src"
    rev="$(git -C "$repo" rev-parse --short HEAD) (HEAD; working tree did not build)"
fi
cp "$CARGO_TARGET_DIR/release/hupwatch" "$bin_dir/hupwatch"
export BENCH_HUPWATCH="$bin_dir/hupwatch" BENCH_HUPWATCH_REV="$rev"

# 2. The same source with SWAP_SETTLE flipped (50 ms <-> 0), built from a copy under /tmp (src/
#    is never touched): swap-to-signal with and without the settle period, in the same run.
if [[ "${BENCH_SETTLE_VARIANT:-1}" == 1 ]]; then
    src=/tmp/bench-src-settle
    rm -rf "$src" && mkdir -p "$src"
    (cd "$repo" && tar -c --exclude=./target --exclude=./bench --exclude=./.git . ) | tar -x -C "$src"
    decl='SWAP_SETTLE: Duration = '
    file="$(grep -rl "$decl" "$src/src" | head -1 || true)"
    label=""
    if [[ -n "$file" ]] && grep -q "${decl}Duration::from_millis(50)" "$file"; then
        sed -i "s/${decl}Duration::from_millis(50)/${decl}Duration::ZERO/" "$file"; label="SWAP_SETTLE=0"
    elif [[ -n "$file" ]] && grep -q "${decl}Duration::ZERO" "$file"; then
        sed -i "s/${decl}Duration::ZERO/${decl}Duration::from_millis(50)/" "$file"; label="SWAP_SETTLE=50ms"
    fi
    if [[ -n "$label" ]]; then
        say "building the $label variant"
        if (cd "$src" && CARGO_TARGET_DIR="$CARGO_TARGET_DIR-settle" cargo build --release --locked --quiet); then
            cp "$CARGO_TARGET_DIR-settle/release/hupwatch" "$bin_dir/hupwatch-settle"
            export BENCH_HUPWATCH_SETTLE="$bin_dir/hupwatch-settle" BENCH_HUPWATCH_SETTLE_LABEL="$label"
        else
            say "$label variant did not build; skipped"
        fi
    else
        say "no SWAP_SETTLE of 50ms or ZERO in the source; settle variant skipped"
    fi
    rm -rf "$src"
fi

# 2b. The floor: a bare inotify reader in C (bench/floor/inotify_floor.c), if a C compiler exists.
if command -v cc >/dev/null && cc -O2 -o "$bin_dir/inotify_floor" "$here/floor/inotify_floor.c"; then
    export BENCH_FLOOR="$bin_dir/inotify_floor"
else
    say "no C compiler: the save scenario's floor rows are skipped"
fi

# 3. watchexec, compiled from crates.io (a few minutes on 2 cores, once), when a scenario uses it.
export BENCH_WATCHEXEC="$tools/bin/watchexec"
scenarios="${BENCH_SCENARIOS:-tree,discovery,save,swap,e2e,oneshot,defaults,stall,rhythm}"
if [[ ! -x "$BENCH_WATCHEXEC" && "$scenarios" =~ (tree|save|e2e|rhythm) ]]; then
    say "installing watchexec-cli into $tools (compiles for a few minutes)"
    CARGO_INSTALL_ROOT="$tools" CARGO_TARGET_DIR=/tmp/bench-watchexec-target \
        cargo install watchexec-cli --locked --quiet
fi

# 4. Gunicorn 27.0.1 (+ setproctitle, so masters are titled) in a venv of its own.
export BENCH_VENV="$venv"
want="gunicorn==27.0.1 setproctitle==1.3.8"
if [[ "$(cat "$venv/.bench-ready" 2>/dev/null)" != "$want" ]]; then
    say "creating $venv ($want)"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet $want
    echo "$want" > "$venv/.bench-ready"
fi

# 4b. The same with the `inotify` package, for `gunicorn --reload --reload-engine inotify`
#     (the defaults scenario; without the package Gunicorn's --reload polls once a second).
export BENCH_VENV_INOTIFY="${BENCH_VENV_INOTIFY:-/tmp/bench-venv-inotify}"
want_inotify="$want inotify==0.2.12"
if [[ "$scenarios" == *defaults* && "$(cat "$BENCH_VENV_INOTIFY/.bench-ready" 2>/dev/null)" != "$want_inotify" ]]; then
    say "creating $BENCH_VENV_INOTIFY ($want_inotify)"
    rm -rf "$BENCH_VENV_INOTIFY"
    python3 -m venv "$BENCH_VENV_INOTIFY"
    "$BENCH_VENV_INOTIFY/bin/pip" install --quiet $want_inotify
    echo "$want_inotify" > "$BENCH_VENV_INOTIFY/.bench-ready"
fi

# 5. inotify: each watcher needs one watch per directory (~2k); raise the per-user limit if it
#    could not hold a watch per file and directory for two watchers at once.
files="${BENCH_FILES:-100000}"
need=$(( 2 * (files + ${BENCH_DIRS:-2000}) + 20000 ))
have="$(sysctl -n fs.inotify.max_user_watches)"
if (( have < need )); then
    if sysctl -q -w fs.inotify.max_user_watches="$need"; then
        say "raised fs.inotify.max_user_watches from $have to $need"
        export BENCH_INOTIFY_RAISED_FROM="$have -> $need"
    else
        say "fs.inotify.max_user_watches is $have (< $need) and cannot be raised"
    fi
fi

# 6. The run itself, bounded: on BENCH_TIMEOUT (s) it is sent TERM, stops every process it
#    started, removes its files and still writes the results it has.
exec timeout --signal=TERM --kill-after=30 "${BENCH_TIMEOUT:-1800}" "$venv/bin/python3" "$here/bench.py"
