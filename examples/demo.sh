#!/usr/bin/env bash
# hupwatch in one command: three symlink-swap deploys to a real Gunicorn under live traffic.
#
#   examples/demo.sh                 # from a clone; builds hupwatch, needs bash, python3, PyPI
#   KEEP=1 examples/demo.sh          # keep the scratch deploy dir (logs included) afterwards
#   HUPWATCH_BIN=path examples/demo.sh   # use this binary instead of `cargo build`
#
# What it does, in a scratch directory (mktemp -d):
#   releases/1 + current -> releases/1, Gunicorn started in `current` on a free loopback port,
#   `hupwatch watch --release-link current` in the background, a request every ~20 ms, then
#   release 2 (good)   -> hupwatch reloads Gunicorn, the page says release 2
#   release 3 (broken) -> the preflight fails, nothing is signalled, release 2 keeps answering
#   release 4 (good)   -> reloaded again, the page says release 4
# and a summary of the traffic. Exit status 0 only if every step happened as described and no
# request failed. Everything it started is stopped on any exit. The virtualenv (pinned
# Gunicorn) is made once under target/demo-venv and reused.

set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
TARGET_DIR=${CARGO_TARGET_DIR:-target}
[[ $TARGET_DIR == /* ]] || TARGET_DIR=$REPO/$TARGET_DIR # cargo runs in $REPO below
PY=${PYTHON:-python3}
VENV=$TARGET_DIR/demo-venv
REQUIREMENTS="gunicorn==27.0.1 setproctitle==1.3.8"
CEILING=30 # seconds, for every wait

DEPLOY=""
GUNICORN_PID=""
HUPWATCH_PID=""
LOAD_PID=""
# shellcheck disable=SC2034 # read and set by name in show_new_lines
HUPWATCH_SHOWN=0 GUNICORN_SHOWN=0 # log lines already echoed

# ---------------------------------------------------------------------------------------------
# Output

step() { printf '\n==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }

# Lines a log gained since the last call, indented under a label.
show_new_lines() { # FILE VARNAME LABEL [FILTER-REGEX]
    local file=$1 var=$2 label=$3 filter=${4:-} total
    total=$(wc -l <"$file")
    if ((total > ${!var})); then
        tail -n "+$((${!var} + 1))" "$file" | head -n "$((total - ${!var}))" |
            sed -E 's/^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z +//' |
            { if [[ -n $filter ]]; then grep -E -- "$filter" || true; else cat; fi; } |
            sed "s/^/    $label | /"
    fi
    printf -v "$var" '%s' "$total"
}
show_hupwatch() { show_new_lines "$DEPLOY/hupwatch.log" HUPWATCH_SHOWN hupwatch; }
show_gunicorn() { show_new_lines "$DEPLOY/gunicorn.log" GUNICORN_SHOWN gunicorn 'signal|Booting|Shutting|Exiting|Error|error'; }

dump_logs() {
    local f
    for f in hupwatch.log gunicorn.log load.result load.log setup.log; do
        if [[ -n $DEPLOY && -s $DEPLOY/$f ]]; then
            printf '\n----- %s -----\n' "$f"
            cat "$DEPLOY/$f"
        fi
    done
}

# Stop the traffic loop (if running) so its counts so far land in load.result.
stop_load() {
    local deadline=$((SECONDS + 10))
    [[ -n $LOAD_PID ]] || return 0
    touch "$DEPLOY/load.stop"
    while [[ ! -s $DEPLOY/load.result ]] && kill -0 "$LOAD_PID" 2>/dev/null && ((SECONDS < deadline)); do
        sleep 0.1
    done
}

die() {
    set +e
    trap - ERR
    stop_load
    {
        printf '\nFAILED: %s\n' "$*"
        dump_logs
        printf '\nFAILED: %s\n' "$*"
    } >&2
    exit 1
}

# ---------------------------------------------------------------------------------------------
# Processes

# Run "$@" as the leader of a new session and process group, so the whole group (Gunicorn's
# workers, hupwatch's preflight) can be stopped at once. Only python3 is needed (no setsid).
exec_in_new_group() {
    exec "$PY" -c 'import os, sys; os.setsid(); os.execvp(sys.argv[1], sys.argv[1:])' "$@"
}

# Is any live (non-zombie) process left in process group $1?
group_alive() {
    local f stat fields
    for f in /proc/[0-9]*/stat; do
        read -r stat 2>/dev/null <"$f" || continue
        read -ra fields <<<"${stat##*) }" # state ppid pgrp ...
        if [[ ${fields[2]} == "$1" && ${fields[0]} != Z ]]; then
            return 0
        fi
    done
    return 1
}

# Send $2 to process group $1, wait up to $3 seconds for it to be gone, then SIGKILL it.
stop_group() {
    local pgid=$1 sig=$2 grace=$3 deadline
    group_alive "$pgid" || return 0
    kill "-$sig" -- "-$pgid" 2>/dev/null || true
    deadline=$((SECONDS + grace))
    while group_alive "$pgid"; do
        if ((SECONDS >= deadline)); then
            echo "    (process group $pgid still running after ${grace}s: SIGKILL)" >&2
            kill -KILL -- "-$pgid" 2>/dev/null || true
            sleep 0.2
            return 0
        fi
        sleep 0.1
    done
}

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM HUP ERR
    if ((rc > 128)); then
        echo "(interrupted: stopping everything the demo started)" >&2
    fi
    if [[ -n $LOAD_PID ]]; then
        kill "$LOAD_PID" 2>/dev/null
        wait "$LOAD_PID" 2>/dev/null
    fi
    if [[ -n $HUPWATCH_PID ]]; then
        stop_group "$HUPWATCH_PID" TERM 10
        wait "$HUPWATCH_PID" 2>/dev/null
    fi
    if [[ -n $GUNICORN_PID ]]; then
        # TERM is Gunicorn's graceful shutdown; graceful_timeout is 5 s in gunicorn.conf.py.
        stop_group "$GUNICORN_PID" TERM 15
        wait "$GUNICORN_PID" 2>/dev/null
    fi
    if [[ -n $DEPLOY && -d $DEPLOY ]]; then
        if [[ ${KEEP:-} == 1 ]]; then
            echo "(KEEP=1: left $DEPLOY in place, logs included)"
        else
            rm -rf -- "$DEPLOY"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
set -E # and say which command failed, should anything fail unexpectedly under set -e
trap 'die "unexpected failure (status $?) at line $LINENO: $BASH_COMMAND"' ERR
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# Poll COMMAND... every 100 ms until it succeeds; after $CEILING seconds, fail with the logs.
wait_until() { # DESCRIPTION COMMAND...
    local what=$1 deadline=$((SECONDS + CEILING))
    shift
    until "$@"; do
        if ((SECONDS >= deadline)); then
            die "timed out after ${CEILING}s waiting for $what"
        fi
        sleep 0.1
    done
}

# ---------------------------------------------------------------------------------------------
# HTTP and logs

url() { printf 'http://127.0.0.1:%s/' "$PORT"; }

# The page body, or failure if Gunicorn does not answer 200 within 5 s.
fetch() {
    "$PY" -c '
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=5) as r:
    if r.status != 200:
        sys.exit(1)
    sys.stdout.write(r.read().decode())
' "$(url)" 2>/dev/null
}

page_is_release() { # ID: does the page name release ID?
    local body
    body=$(fetch) || return 1
    [[ $body == "hello from release $1 "* ]]
}

show_page() {
    local body
    body=$(fetch) || die "GET $(url) failed"
    note "GET $(url) -> ${body%$'\n'}"
}

count() { # PATTERN FILE
    grep -c -- "$1" "$2" 2>/dev/null || true
}

hupwatch_count_is_at_least() { # PATTERN N
    local n
    n=$(count "$1" "$DEPLOY/hupwatch.log")
    if ((n >= $2)); then
        return 0
    fi
    if ! kill -0 "$HUPWATCH_PID" 2>/dev/null; then
        die "hupwatch exited unexpectedly"
    fi
    kill -0 "$GUNICORN_PID" 2>/dev/null ||
        die "the Gunicorn master exited: the site is down (see gunicorn.log below)"
    return 1
}

hupwatch_exited() {
    ! kill -0 "$HUPWATCH_PID" 2>/dev/null
}

gunicorn_answers() {
    kill -0 "$GUNICORN_PID" 2>/dev/null || return 0 # dead: stop waiting, checked below
    page_is_release 1
}

# ---------------------------------------------------------------------------------------------
# Deploys, the way Capistrano & co. do them: build releases/<id>, then swap `current` in one
# rename (a new link renamed over the old one, as `ln -s` + `mv -T`).

build_release() { # ID
    local dir=$DEPLOY/releases/$1
    cp -R "$REPO/examples/app" "$dir"
    rm -rf "$dir/__pycache__"
    printf '%s\n' "$1" >"$dir/RELEASE"
}

swap_current() { # ID
    ln -sfn "releases/$1" "$DEPLOY/current.tmp"
    mv -T "$DEPLOY/current.tmp" "$DEPLOY/current"
    note "current -> $(readlink "$DEPLOY/current")"
}

deploy_good() { # ID RELOADS-SO-FAR
    local id=$1 want=$(($2 + 1)) line
    step "Deploy release $id (good): build releases/$id, swap current"
    build_release "$id"
    swap_current "$id"
    wait_until "hupwatch to log 'reloaded master' for release $id" \
        hupwatch_count_is_at_least "reloaded master" "$want"
    show_hupwatch
    show_gunicorn
    line=$(grep -- "reloaded master" "$DEPLOY/hupwatch.log" | tail -n 1)
    [[ $line == *"releases/$id"* ]] || die "the reload did not report release $id: $line"
    page_is_release "$id" || die "right after the reload, the page is not release $id: $(fetch || true)"
    show_page
}

# ---------------------------------------------------------------------------------------------
# The load: one GET every ~20 ms until told to stop (or 5 minutes at most), counting answers.

LOAD_SCRIPT='
import collections, os, sys, time, urllib.request
url, stop_file, result_file = sys.argv[1:4]
deadline = time.monotonic() + 300
ok, failed, by_release, failures = 0, 0, collections.Counter(), []
while not os.path.exists(stop_file) and time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            body = r.read()
            if r.status == 200 and body.startswith(b"hello from release "):
                ok += 1
                by_release[r.headers.get("X-Release", "?")] += 1
            else:
                failed += 1
                failures.append(f"HTTP {r.status}: {body[:80]!r}")
    except Exception as e:
        failed += 1
        failures.append(f"{type(e).__name__}: {e}")
    time.sleep(0.02)
tmp = result_file + ".tmp"
with open(tmp, "w") as f:
    print(f"ok={ok}", file=f)
    print(f"failed={failed}", file=f)
    print("stopped=" + ("yes" if os.path.exists(stop_file) else "deadline"), file=f)
    print("releases=" + ", ".join(f"{k}: {v}" for k, v in sorted(by_release.items())), file=f)
    for line in failures[:10]:
        print("failure=" + line, file=f)
os.replace(tmp, result_file)
'

result_field() { # NAME: a key=value line of the load result
    sed -n "s/^$1=//p" "$DEPLOY/load.result" | head -n 1
}

# =============================================================================================

printf 'hupwatch demo: three release deploys to a live Gunicorn, under traffic\n'

DEPLOY=$(mktemp -d "${TMPDIR:-/tmp}/hupwatch-demo.XXXXXX")
DEPLOY=$(cd "$DEPLOY" && pwd -P) # resolved, as /proc shows Gunicorn's working directory

step "hupwatch binary"
if [[ -n ${HUPWATCH_BIN:-} ]]; then
    HUPWATCH=$HUPWATCH_BIN
    note "using HUPWATCH_BIN=$HUPWATCH"
else
    note "cargo build --quiet"
    (cd "$REPO" && cargo build --quiet </dev/null) || die "cargo build failed"
    HUPWATCH=$TARGET_DIR/debug/hupwatch
    note "built $HUPWATCH"
fi
[[ -x $HUPWATCH ]] || die "$HUPWATCH is not an executable"

step "Python virtualenv with Gunicorn ($REQUIREMENTS)"
if [[ -x $VENV/bin/python && "$(cat "$VENV/.demo-ready" 2>/dev/null)" == "$REQUIREMENTS" ]]; then
    note "reusing $VENV"
else
    note "creating $VENV (once; pip install from PyPI)"
    rm -rf -- "$VENV"
    "$PY" -m venv "$VENV" >"$DEPLOY/setup.log" 2>&1 </dev/null ||
        die "$PY -m venv $VENV failed (set PYTHON=/path/to/python3?)"
    # shellcheck disable=SC2086 # word splitting wanted: one argument per requirement
    PIP_NO_INPUT=1 "$VENV/bin/python" -m pip install --disable-pip-version-check -q \
        $REQUIREMENTS >>"$DEPLOY/setup.log" 2>&1 </dev/null || {
        rm -rf -- "$VENV"
        die "pip install $REQUIREMENTS failed"
    }
    # Written last: a venv without it is incomplete and is built again next time.
    printf '%s' "$REQUIREMENTS" >"$VENV/.demo-ready"
    note "done"
fi

step "Deploy tree in $DEPLOY"
mkdir "$DEPLOY/releases"
build_release 1
ln -s releases/1 "$DEPLOY/current"
note "releases/1   (a copy of examples/app: app.py, views.py, gunicorn.conf.py, RELEASE)"
note "current -> $(readlink "$DEPLOY/current")"

step "Start Gunicorn in current (cd $DEPLOY/current && gunicorn app:app)"
note "started through the link path with \$PWD set, so a HUP follows the next swap"
for attempt in 1 2 3; do
    PORT=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    (
        cd "$DEPLOY/current"
        export DEMO_PORT=$PORT DEMO_CONTROL_SOCKET=$DEPLOY/gunicorn.ctl
        exec_in_new_group "$VENV/bin/gunicorn" app:app
    ) >"$DEPLOY/gunicorn.log" 2>&1 </dev/null &
    GUNICORN_PID=$!
    wait_until "Gunicorn to answer on $(url)" gunicorn_answers
    if kill -0 "$GUNICORN_PID" 2>/dev/null; then
        break
    fi
    wait "$GUNICORN_PID" 2>/dev/null || true
    GUNICORN_PID=""
    if ((attempt < 3)) && grep -q "Address already in use" "$DEPLOY/gunicorn.log"; then
        note "port $PORT was taken meanwhile; trying another"
        continue
    fi
    die "Gunicorn exited before it answered"
done
note "master pid $GUNICORN_PID, listening on $(url)"
show_gunicorn
show_page

step "Start hupwatch watch --release-link $DEPLOY/current --match $DEPLOY"
note "--match: the one master whose working directory is in this scratch dir, whatever else runs here"
(
    # A clean environment for it: no HUPWATCH_* settings or systemd variables of the caller's.
    for var in $(compgen -e); do
        case $var in
        HUPWATCH_* | RUST_LOG | JOURNAL_STREAM | NOTIFY_SOCKET | WATCHDOG_* | LISTEN_*) unset "$var" ;;
        esac
    done
    export NO_COLOR=1
    exec_in_new_group "$HUPWATCH" watch --release-link "$DEPLOY/current" --match "$DEPLOY"
) >"$DEPLOY/hupwatch.log" 2>&1 </dev/null &
HUPWATCH_PID=$!
wait_until "hupwatch's 'ready' line" hupwatch_count_is_at_least "ready:" 1
wait_until "hupwatch to pick master $GUNICORN_PID" \
    hupwatch_count_is_at_least "target: master pid $GUNICORN_PID " 1
show_hupwatch

step "Start traffic: GET $(url) every ~20 ms until the end"
"$PY" -c "$LOAD_SCRIPT" "$(url)" "$DEPLOY/load.stop" "$DEPLOY/load.result" \
    >"$DEPLOY/load.log" 2>&1 </dev/null &
LOAD_PID=$!
sleep 1

deploy_good 2 0

step "Deploy release 3 (broken: views.py imports payments_sdk, which is not installed)"
build_release 3
cat >>"$DEPLOY/releases/3/views.py" <<'EOF'

# Release 3 starts charging cards, but nobody added the SDK to the virtualenv.
from payments_sdk import charge  # noqa: E402,F401
EOF
swap_current 3
wait_until "hupwatch to log 'release held back'" \
    hupwatch_count_is_at_least "release held back" 1
show_hupwatch
show_gunicorn
(($(count "reloaded master" "$DEPLOY/hupwatch.log") == 1)) ||
    die "hupwatch reloaded Gunicorn for the broken release"
(($(count "Handling signal: hup" "$DEPLOY/gunicorn.log") == 1)) ||
    die "Gunicorn got a HUP for the broken release"
for _ in 1 2 3 4 5; do
    page_is_release 2 || die "release 2 stopped answering after the broken deploy: $(fetch || true)"
done
note "no signal sent; Gunicorn still serves release 2 (5 of 5 requests) though current -> releases/3"
show_page

deploy_good 4 1

sleep 1
step "Stop traffic"
touch "$DEPLOY/load.stop"
wait_until "the traffic loop's counts" test -s "$DEPLOY/load.result"
wait "$LOAD_PID" || die "the traffic loop failed"
LOAD_PID=""
OK=$(result_field ok)
FAILED=$(result_field failed)
[[ $(result_field stopped) == yes ]] || die "the traffic loop ran out of time before the end"

step "Stop hupwatch (SIGTERM)"
kill -TERM "$HUPWATCH_PID"
wait_until "hupwatch to exit" hupwatch_exited
HUPWATCH_RC=0
wait "$HUPWATCH_PID" || HUPWATCH_RC=$?
HUPWATCH_PID=""
show_hupwatch
((HUPWATCH_RC == 0)) || die "hupwatch exited with status $HUPWATCH_RC on SIGTERM"

RELOADS=$(count "reloaded master" "$DEPLOY/hupwatch.log")
HELD=$(count "release held back" "$DEPLOY/hupwatch.log")
HUPS=$(count "Handling signal: hup" "$DEPLOY/gunicorn.log")
SERVED=$(result_field releases)

step "Summary"
note "release 2 (good)    reloaded, served"
note "release 3 (broken)  held back by the preflight, release 2 kept serving"
note "release 4 (good)    reloaded, served"
note "hupwatch: $RELOADS reloads, $HELD release held back; Gunicorn got $HUPS HUPs"
note "traffic:  $((OK + FAILED)) requests, $OK ok, $FAILED failed"
note "answered by release ${SERVED//, /, release }"
((RELOADS == 2 && HELD == 1 && HUPS == 2)) || die "expected 2 reloads, 1 held back, 2 HUPs"
[[ ", $SERVED" != *", 3:"* ]] || die "the broken release 3 answered requests"
((OK > 20)) || die "the traffic loop made only $OK requests"
if ((FAILED != 0)); then
    sed -n 's/^failure=/    failed request: /p' "$DEPLOY/load.result" >&2
    die "$FAILED of $((OK + FAILED)) requests failed"
fi
printf '\nPASS: 3 deploys under traffic (2 reloads, 1 broken release held back), 0 failed requests of %s.\n' "$OK"
