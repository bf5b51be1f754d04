#!/usr/bin/env python3
"""hupwatch benchmark harness: hupwatch side by side with its peers, interleaved rounds.

Run it through `bench/run.sh`, which builds the release binaries and provisions the peers and
then runs this file. Everything is configured by environment variables (see `CONFIG` in harness.py and
BENCHMARKS.md); every process started here runs in its own process group and is killed on exit,
every file lives under one temporary directory that is removed on exit, and all traffic goes to
127.0.0.1.

Scenarios (BENCH_SCENARIOS, comma-separated; default all, in this order):
  tree       100k files: time to ready and peak RSS, then idle cost (wakeups, CPU) — goals 5, 6
  discovery  `hupwatch status --json` / `reload --dry-run` among 2,000 extra processes — goal 7
  save       save-to-signal latency vs watchexec, stand-in master — goal 1
  swap       release-link swap-to-signal latency, preflight off/on, SWAP_SETTLE=0 build — goal 2
  e2e        edit-to-new-code-served vs watchexec + kill -HUP vs gunicorn --reload — figure 3
  oneshot    `hupwatch reload --pid` vs `pkill -HUP -f 'gunicorn.*master'` — figure 4
  defaults   edit-to-new-code-served, every tool as a newcomer gets it (`hupwatch watch` and
             `hupwatch run` with the default debounce and preflight vs `gunicorn --reload`, polling
             and inotify), in-place and atomic saves (BENCH_DEFAULTS_SAVES) — figure 3b, issue 18
  stall      worst request during a reload, slow-importing app under load: HUP, upgrade, auto,
             `hupwatch run` (BENCH_STALL_STRATEGIES=…,run), `gunicorn --reload`; edit → served and
             the process tree's RSS during the switch — issues 11, 12 (bench/stall.py)
  rhythm     save-to-signal with saves 0.4 s apart vs isolated saves, vs watchexec — issue 11
             (bench/rhythm.py)
"""

import atexit
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

# The shared harness (one work directory, one list of children to stop) is harness.py, which
# the scenarios kept in files of their own import too; it imports none of them.
import rhythm
import stall
import stall_tools
import surge
from harness import (APP_TEMPLATE, CHILDREN, CONFIG, GUNICORN, LOGS, MS, PYTHON, RESULTS, WORK, Child, Gunicorn,
                     StandIn, free_port, http_body, hupwatch_watch, inotify_watches, kib, log, make_app_dir, note,
                     now, pct, wait_quiet_watchexec, wait_until, watchexec, write_app)

GUNICORN_INOTIFY = f"{CONFIG['venv_inotify']}/bin/gunicorn"
PGREP = "pgrep -f 'gunicorn.*master'"
QUIET_SPENT = 0.0  # seconds waited for a quiet machine, at most 2 × BENCH_QUIET_WAIT in a run


# ---------------------------------------------------------------------------------------------
# Processes


def cpu_busy(interval=1.0):
    """Share of all CPUs busy (any process) over `interval`, from /proc/stat."""
    def snap():
        f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        return sum(f), f[3] + f[4]
    t1, i1 = snap()
    time.sleep(interval)
    t2, i2 = snap()
    return 1.0 - (i2 - i1) / max(1, t2 - t1)


def wait_quiet(label):
    """Wait (bounded by BENCH_QUIET_WAIT s) until the machine is mostly idle; record what it was."""
    global QUIET_SPENT
    started = time.monotonic()
    limit = started + max(0.0, min(CONFIG["quiet_wait"], 2 * CONFIG["quiet_wait"] - QUIET_SPENT))
    busy = cpu_busy()
    while busy > 0.25 and time.monotonic() < limit:
        log(f"{label}: machine busy ({busy:.0%} CPU); waiting for quiet")
        time.sleep(4)
        busy = cpu_busy()
    QUIET_SPENT += time.monotonic() - started
    if busy > 0.25:
        note(f"{label}: started with the machine {busy:.0%} busy (other processes); figures are noisier")
    return round(busy, 3)


def cleanup():
    for child in reversed(list(CHILDREN)):
        try:
            child.stop(grace=3.0)
        except Exception as e:  # noqa: BLE001 - cleanup must go on
            log(f"cleanup of {child.name}: {e}")
    if CONFIG["keep"]:
        log(f"kept {WORK}")
    else:
        shutil.rmtree(WORK, ignore_errors=True)


def on_signal(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def status_field(pid, field):
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def thread_stats(pid):
    """{tid: (comm, runtime_ns, voluntary + involuntary switches)} of every thread."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        base = f"/proc/{pid}/task/{tid}"
        try:
            comm = Path(f"{base}/comm").read_text().strip()
            runtime = int(Path(f"{base}/schedstat").read_text().split()[0])
            switches = 0
            for line in Path(f"{base}/status").read_text().splitlines():
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    switches += int(line.split()[1])
            out[int(tid)] = (comm, runtime, switches)
        except OSError:
            continue
    return out


# ---------------------------------------------------------------------------------------------
# Statistics


def summary(ns_values):
    ms = [x / MS for x in ns_values]
    if not ms:
        return {"n": 0}
    return {
        "n": len(ms),
        "median_ms": round(statistics.median(ms), 3),
        "p99_ms": round(pct(ms, 99), 3),
        "min_ms": round(min(ms), 3),
        "max_ms": round(max(ms), 3),
        "mean_ms": round(statistics.fmean(ms), 3),
    }


# ---------------------------------------------------------------------------------------------
# Apps, stand-ins, Gunicorn


def write_app_atomic(dir_, version, prefix=""):
    """A tool's atomic save: write the new app.py to a `tempfile.mkstemp(dir=…)` file beside it
    (named tmpXXXXXXXX, a name the default excludes skip) and rename it over app.py, so the file
    is never seen half-written. Returns the time just before the temp file is opened."""
    path = Path(dir_) / "app.py"
    data = (prefix + APP_TEMPLATE.format(version=version)).encode()
    t0 = now()
    fd, tmp = tempfile.mkstemp(dir=dir_)
    os.write(fd, data)
    os.close(fd)
    os.replace(tmp, path)
    return t0


SAVES = {"inplace": write_app, "atomic": write_app_atomic}


def probe_until(port, want, timeout=15.0):
    """Poll every BENCH_POLL_MS until the body starts with `want`: the time it was received."""
    step = CONFIG["poll_ms"] * MS
    deadline = now() + int(timeout * 1e9)
    while now() < deadline:
        t_req = now()
        body = http_body(port)
        if body is not None and body.startswith(want):
            return now()
        rest = t_req + step - now()
        if rest > 0:
            time.sleep(rest / 1e9)
    raise TimeoutError(f"port {port} never served {want}")


def wait_armed(pid, expected, timeout=60.0):
    """The time at which `pid` held at least `expected` inotify watches (polled every 5 ms)."""
    def armed():
        n = inotify_watches(pid)
        return (now(), n) if n >= expected else None
    return wait_until(armed, timeout, step=0.005, what=f"{expected} inotify watches")


# ---------------------------------------------------------------------------------------------
# Scenario: save-to-signal (goal 1)


FLOOR_DEBOUNCED = "C inotify reader, sleep the debounce, kill"
FLOOR_WAKE = "C inotify reader, kill on wake (no debounce: the floor)"


def scenario_save():
    d = CONFIG["debounce_ms"]
    res = {"debounce_ms": d, "tools": {}}
    tools = ["hupwatch", "watchexec", "watchexec -n"]
    binaries = {"hupwatch": CONFIG["hupwatch"]}
    if CONFIG["hupwatch_alt"]:
        tools.insert(1, CONFIG["hupwatch_alt_label"])
        binaries[CONFIG["hupwatch_alt_label"]] = CONFIG["hupwatch_alt"]
    # The machine's floor (bench/floor/inotify_floor.c): the plainest debouncing reloader, and the
    # same reader signalling at once, whose whole latency is one wake-up plus signal delivery.
    floors = {}
    if CONFIG["floor"] and Path(CONFIG["floor"]).is_file():
        floors = {FLOOR_DEBOUNCED: d, FLOOR_WAKE: 0}
        tools += list(floors)
    else:
        note("no inotify_floor binary (BENCH_FLOOR): the floor rows are skipped")
    setup = {}
    for j, tool in enumerate(tools):
        dir_ = make_app_dir(WORK / "save" / f"t{j}")
        master = StandIn(f"save-standin-{j}", dir_)
        if tool in floors:
            w = Child(f"save-floor-{j}", [CONFIG["floor"], str(dir_), str(master.pid), str(floors[tool])])
            w.wait_line(r"\bready\b", timeout=10)
        elif tool in binaries:
            w = hupwatch_watch(f"save-hupwatch-{j}", binaries[tool], [
                "-w", dir_, "--debounce", f"{d}ms", "--no-preflight", "--pid", master.pid,
                "--verify-timeout", "10s",
            ])
        else:
            w = watchexec(f"save-watchexec-{j}", dir_, master.pid, no_shell=tool.endswith("-n"))
            wait_quiet_watchexec(w, dir_)
        setup[tool] = (dir_, master, w)
    lat = {t: [] for t in tools}
    extra = {t: 0 for t in tools}
    n = CONFIG["saves"]
    for i in range(n):
        order = tools[i % len(tools):] + tools[: i % len(tools)]
        for tool in order:
            dir_, master, w = setup[tool]
            before = len(master.hups())
            mark = w.mark()
            t0 = write_app(dir_, f"r{i:06d}")
            t_sig = master.wait_hup(before)
            lat[tool].append(t_sig - t0)
            if tool in binaries:
                w.wait_line(r"reloaded master|reload failed|ERROR", start=mark, timeout=15)
            time.sleep(0.25)
            extra[tool] += len(master.hups()) - before - 1
        if (i + 1) % 10 == 0:
            log(f"save: {i + 1}/{n} rounds")
    for tool, values in lat.items():
        s = summary(values)
        own = floors.get(tool, d)
        s["overhead_median_ms"] = round(s["median_ms"] - own, 3)
        s["overhead_p99_ms"] = round(s["p99_ms"] - own, 3)
        s["extra_signals"] = extra[tool]
        res["tools"][tool] = s
    res["raw_ns"] = lat
    for _, master, w in setup.values():
        w.stop()
        master.child.stop()
    return res


# ---------------------------------------------------------------------------------------------
# Scenario: release-link swap-to-signal (goal 2)


def make_releases(base):
    base = Path(base)
    for r in ("r1", "r2"):
        make_app_dir(base / "releases" / r, version=r, extra_modules=5)
    os.symlink("releases/r1", base / "current")
    return base


def swap(base):
    """Atomically point `current` at the other release; the time just before the rename."""
    link = base / "current"
    target = "releases/r2" if os.readlink(link).endswith("r1") else "releases/r1"
    tmp = base / "current.tmp"
    os.symlink(target, tmp)
    t0 = now()
    os.replace(tmp, link)
    return t0


def scenario_swap():
    variants = [("preflight off", ["--no-preflight"], CONFIG["hupwatch"], CONFIG["swaps"]),
                ("preflight on", ["--app", "app:app"], CONFIG["hupwatch"], CONFIG["swaps_preflight"])]
    if CONFIG["hupwatch_settle"] and Path(CONFIG["hupwatch_settle"]).is_file():
        variants.append((f"{CONFIG['hupwatch_settle_label']} build, preflight off", ["--no-preflight"],
                         CONFIG["hupwatch_settle"], CONFIG["swaps"]))
    else:
        note("no SWAP_SETTLE variant build (BENCH_HUPWATCH_SETTLE): that variant is skipped")
    if CONFIG["hupwatch_alt"]:
        variants.append((f"{CONFIG['hupwatch_alt_label']}, preflight off", ["--no-preflight"],
                         CONFIG["hupwatch_alt"], CONFIG["swaps"]))
    runs = []
    for j, (label, flags, binary, rounds) in enumerate(variants):
        base = make_releases(WORK / "swap" / f"v{j}")
        link = base / "current"
        master = StandIn(f"swap-standin-{j}", link, chdir=str(link))
        child = Child(f"swap-hupwatch-{j}", [binary, "watch", "--release-link", link, "--pid", master.pid,
                                             "--verify-timeout", "10s", *flags])
        child.wait_line(r"\bready\b", timeout=30)
        runs.append({"label": label, "base": base, "master": master, "child": child, "rounds": rounds,
                     "lat": [], "preflight_ms": [], "extra": 0})
    n = max(r["rounds"] for r in runs)
    for i in range(n):
        order = runs if i % 2 == 0 else list(reversed(runs))
        for run in order:
            if i >= run["rounds"]:
                continue
            master, child = run["master"], run["child"]
            before = len(master.hups())
            mark = child.mark()
            t0 = swap(run["base"])
            run["lat"].append(master.wait_hup(before, timeout=30) - t0)
            _, _, line = child.wait_line(r"reloaded master|reload failed|ERROR", start=mark, timeout=30)
            if "reloaded" not in line:
                note(f"swap {run['label']}: {line}")
            for _, text in child.lines[mark:]:
                m = re.search(r"preflight passed in (\d+)ms", text)
                if m:
                    run["preflight_ms"].append(int(m.group(1)))
            time.sleep(0.25)
            run["extra"] += len(master.hups()) - before - 1
        if (i + 1) % 10 == 0:
            log(f"swap: {i + 1}/{n} rounds")
    res = {"variants": {}}
    for run in runs:
        s = summary(run["lat"])
        s["extra_signals"] = run["extra"]
        if run["preflight_ms"]:
            p = run["preflight_ms"]
            s["preflight_logged_median_ms"] = statistics.median(p)
            s["preflight_logged_p99_ms"] = round(pct(p, 99), 1)
            s["preflight_logged_n"] = len(p)
        res["variants"][run["label"]] = s
        run["child"].stop()
        run["master"].child.stop()
    return res


# ---------------------------------------------------------------------------------------------
# Scenario: end to end against real Gunicorn (figure 3)


def scenario_e2e():
    d = CONFIG["debounce_ms"]
    tools = ["hupwatch (preflight off)", "hupwatch (preflight on)", "watchexec + kill -HUP", "gunicorn --reload"]
    setups = {}
    for j, tool in enumerate(tools):
        app_dir = make_app_dir(WORK / "e2e" / f"t{j}")
        extra = ["--reload"] if tool == "gunicorn --reload" else []
        g = Gunicorn(f"bench-e2e-{j}", app_dir, extra=extra)
        watcher = None
        if tool.startswith("hupwatch"):
            flags = ["--no-preflight"] if "off" in tool else ["--app", "app:app"]
            watcher = hupwatch_watch(f"e2e-hupwatch-{j}", CONFIG["hupwatch"], ["-w", app_dir, "--debounce", f"{d}ms", "--pid", g.pid,
                                                          "--verify-timeout", "20s", *flags])
        elif tool.startswith("watchexec"):
            watcher = watchexec(f"e2e-watchexec-{j}", app_dir, g.pid)
            wait_quiet_watchexec(watcher, app_dir)
        setups[tool] = {"dir": app_dir, "g": g, "w": watcher, "lat": [], "preflight_ms": []}
    if "gunicorn --reload" in setups:
        time.sleep(1.5)  # the reloader has taken its first mtime snapshot
    n = CONFIG["e2e_rounds"]
    for i in range(n):
        order = tools[i % len(tools):] + tools[: i % len(tools)]
        for tool in order:
            s = setups[tool]
            g, w = s["g"], s["w"]
            old = g.workers_now()
            mark = w.mark() if w else 0
            version = f"e{i:05d}"
            t0 = write_app(s["dir"], version)
            s["lat"].append(probe_until(g.port, version) - t0)
            if tool.startswith("hupwatch"):
                w.wait_line(r"reloaded master|reload failed|ERROR", start=mark, timeout=40)
                for _, text in w.lines[mark:]:
                    m = re.search(r"preflight passed in (\d+)ms", text)
                    if m:
                        s["preflight_ms"].append(int(m.group(1)))
            g.wait_replaced(old)
            time.sleep(0.3 if tool != "gunicorn --reload" else 1.2)
        log(f"e2e: {i + 1}/{n} rounds")
    res = {"debounce_ms": d, "poll_ms": CONFIG["poll_ms"], "tools": {}}
    for tool in tools:
        s = setups[tool]
        sm = summary(s["lat"])
        if s["preflight_ms"]:
            sm["preflight_logged_median_ms"] = statistics.median(s["preflight_ms"])
        res["tools"][tool] = sm
        if s["w"]:
            s["w"].stop()
        s["g"].child.stop()
    return res


# ---------------------------------------------------------------------------------------------
# Scenario: edit → new code served, every tool with its defaults (figure 3b)


class RunServer:
    """`hupwatch run -- gunicorn -b 127.0.0.1:PORT app:app` started in the app directory with
    nothing else set: it watches the current directory with the default quiet period, and a
    deploy is a new generation that serves once its workers booted; then the old one stops."""

    def __init__(self, name, app_dir):
        self.port = free_port()
        args = [CONFIG["hupwatch"], "run", "--", GUNICORN, "-b", f"127.0.0.1:{self.port}", "app:app"]
        env = {"PYTHONDONTWRITEBYTECODE": "1", "PWD": str(app_dir), "HUPWATCH_STRATEGY": None}
        self.child = Child(name, args, cwd=app_dir, env=env)
        self.child.wait_line(stall_tools.RunTarget.GENERATION_UP, timeout=60, fail=r"ERROR")
        wait_until(lambda: http_body(self.port), 15, step=0.05, what=f"{name} serving")


def defaults_setup(tool, j):
    """One tool of the defaults scenario serving its own copy of the app: {dir, g (Gunicorn or
    RunServer), w (hupwatch's log, or None)}."""
    app_dir = make_app_dir(WORK / "defaults" / f"t{j}")
    # Each master gets a control socket of its own, as Gunicorn's default gives one (outside the
    # app directory): hupwatch's `auto` asks it whether the app is preloaded. The row whose label
    # says `--no-control-socket` has none, so `auto` cannot tell and upgrades.
    ctl = None if "--no-control-socket" in tool else WORK / "defaults" / f"t{j}.ctl"
    if tool.startswith("hupwatch run"):
        r = RunServer(f"defaults-run-{j}", app_dir)
        return {"dir": app_dir, "g": r, "w": r.child}
    if tool.startswith("hupwatch"):
        pidfile = WORK / "defaults" / f"t{j}.pid"
        g = Gunicorn(f"bench-defaults-{j}", app_dir, extra=["-p", str(pidfile)], titled_by_name=False,
                     control_socket=ctl)
        # A row's label names the one hupwatch flag it sets, after `hupwatch watch` (none for
        # the defaults rows).
        extra = [] if "(defaults)" in tool else tool.split()[2:]
        w = Child(f"defaults-hupwatch-{j}", [CONFIG["hupwatch"], "watch", "--pidfile", pidfile, *extra],
                  cwd=app_dir, env={"HUPWATCH_STRATEGY": None})
        w.wait_line(r"ready: ", timeout=60)
        # The warm checker is started ahead of the first change; let it finish.
        try:
            w.wait_line(r"warm preflight checker started", timeout=20)
        except TimeoutError:
            note(f"{tool}: no warm checker line (older build?)")
        return {"dir": app_dir, "g": g, "w": w}
    if "inotify" in tool:
        g = Gunicorn(f"bench-defaults-{j}", app_dir, extra=["--reload", "--reload-engine", "inotify"],
                     gunicorn=GUNICORN_INOTIFY, control_socket=ctl)
    else:
        g = Gunicorn(f"bench-defaults-{j}", app_dir, extra=["--reload"], control_socket=ctl)
    return {"dir": app_dir, "g": g, "w": None}


def defaults_once(tool, s, save, version):
    """One save of kind `save` and the wait for `version` to be served; then the tool is let
    finish its deploy (old workers or generation gone), so the next save starts from rest.
    Returns (edit → served, edit → hupwatch's `deploy due` line or None), ns."""
    g, w = s["g"], s["w"]
    run = tool.startswith("hupwatch run")
    old = None if run else g.workers_now()
    mark = w.mark() if w else 0
    t0 = SAVES[save](s["dir"], version)
    served = probe_until(g.port, version) - t0
    due = None
    if run:
        stall.run_switched(g, mark, timeout=40)
    elif w:
        _, _, line = w.wait_line(r"reloaded master|reload failed|ERROR", start=mark, timeout=40)
        # `auto` (the default strategy) upgrades when it cannot tell whether the app is
        # preloaded (a titled master hides its command line): a new master then serves.
        m = re.search(r"-> new master (\d+)", line)
        if m:
            g.pid = int(m.group(1))
        for _, text in w.lines[mark:]:
            m = re.search(r"preflight passed in (\d+)ms", text)
            if m:
                s["preflight_ms"].append(int(m.group(1)))
            m = re.search(r"auto chose (\w+)", text)
            if m:
                s["strategies"][m.group(1)] = s["strategies"].get(m.group(1), 0) + 1
    if w:
        # When hupwatch decided: right after the save for an atomic one, after the quiet period
        # for an in-place one. The line's time is when the bench read it (a few µs later).
        _, t_due, _ = w.wait_line(r"deploy due", start=mark, timeout=5)
        due = t_due - t0
    if not run:
        g.wait_replaced(old)
    time.sleep(0.3 if w else 1.2)  # gunicorn --reload polls mtimes once a second
    return served, due


def scenario_defaults():
    """Edit → new code served, every tool with its defaults: `hupwatch watch --pidfile P` run in
    the app directory with nothing else set (default debounce, default preflight on the warm
    checker), `hupwatch run -- gunicorn …` (the same, a new generation per deploy), `gunicorn
    --reload` as `pip install gunicorn` gives it (polling: no `inotify` package) and with
    `--reload-engine inotify` (the `inotify` package installed in a venv of its own). Plus
    `watch` with only --debounce changed (BENCH_DEFAULTS_ALT_DEBOUNCE), to show what the quiet
    period costs, and against a master without a control socket (`auto` then upgrades). Each tool gets each save kind of BENCH_DEFAULTS_SAVES: `inplace` (truncate
    and write, an editor's save, which waits out the quiet period) and `atomic` (a temp file
    renamed over app.py: complete as it lands, so hupwatch deploys it at once — issue 18)."""
    alt = CONFIG["defaults_alt_debounce"]
    saves = [k.strip() for k in CONFIG["defaults_saves"].split(",") if k.strip()]
    unknown = [k for k in saves if k not in SAVES]
    if unknown:
        raise ValueError(f"BENCH_DEFAULTS_SAVES: unknown {unknown} (known: {', '.join(SAVES)})")
    # With setproctitle installed the master's command line is hidden: `auto` learns whether the
    # app is preloaded from the control socket, and without one it upgrades (a new master boots
    # for every deploy): the second row shows what that costs.
    tools = ["hupwatch watch (defaults)", "hupwatch watch (defaults), master --no-control-socket",
             f"hupwatch watch --debounce {alt}", "hupwatch run (defaults)", "gunicorn --reload",
             "gunicorn --reload --reload-engine inotify"]
    if not Path(GUNICORN_INOTIFY).exists():
        note(f"no {GUNICORN_INOTIFY}: the --reload-engine inotify row is skipped")
        tools.remove("gunicorn --reload --reload-engine inotify")
    if not alt:
        tools.remove(f"hupwatch watch --debounce {alt}")
    setups = {}
    for j, tool in enumerate(tools):
        setups[tool] = defaults_setup(tool, j)
        setups[tool].update(preflight_ms=[], strategies={}, lat={k: [] for k in saves}, due={k: [] for k in saves})
    time.sleep(1.5)  # the polling reloader has taken its first mtime snapshot
    n = CONFIG["defaults_rounds"]
    for i in range(n):
        # Interleaved: every tool's turn rotates, and so does which save kind goes first.
        kinds = saves[i % len(saves):] + saves[: i % len(saves)]
        for save in kinds:
            order = tools[i % len(tools):] + tools[: i % len(tools)]
            for tool in order:
                s = setups[tool]
                served, due = defaults_once(tool, s, save, f"d{i:05d}{save[0]}")
                s["lat"][save].append(served)
                if due is not None:
                    s["due"][save].append(due)
        log(f"defaults: {i + 1}/{n} rounds")
    res = {"rounds": n, "poll_ms": CONFIG["poll_ms"], "saves": {k: {} for k in saves}}
    for tool in tools:
        s = setups[tool]
        for save in saves:
            sm = summary(s["lat"][save])
            sm["p90_ms"] = round(pct([x / MS for x in s["lat"][save]], 90), 1)
            sm["samples_ms"] = [round(x / MS, 1) for x in s["lat"][save]]
            if s["due"][save]:
                sm["deploy_due_median_ms"] = round(statistics.median(s["due"][save]) / MS, 1)
                sm["deploy_due_ms"] = [round(x / MS, 1) for x in s["due"][save]]
            res["saves"][save][tool] = sm
        if s["preflight_ms"]:
            res.setdefault("preflight_logged_median_ms", {})[tool] = statistics.median(s["preflight_ms"])
        if s["strategies"]:
            res.setdefault("auto_chose", {})[tool] = s["strategies"]
        if s["w"]:
            s["w"].stop(grace=15.0)
        if not tool.startswith("hupwatch run"):
            s["g"].child.stop()
    return res


# ---------------------------------------------------------------------------------------------
# Scenario: one-shot reload (figure 4)


def scenario_oneshot():
    app_dir = make_app_dir(WORK / "oneshot" / "app")
    # A private PID namespace, so that `pkill -f 'gunicorn.*master'` (restricted with --ns to
    # that namespace) cannot reach any other Gunicorn on the host.
    unshare = shutil.which("unshare")
    wrap = [unshare, "--pid", "--fork", "--kill-child"] if unshare else []
    g = Gunicorn("bench-oneshot", app_dir, wrap=wrap)
    pkill = ["pkill", "-HUP", "-f", "gunicorn.*master"]
    if unshare:
        pkill[1:1] = ["--ns", str(g.pid), "--nslist", "pid"]
    else:
        pkill = ["pkill", "-HUP", "-f", r"gunicorn: master \[bench-oneshot\]"]
        note("unshare unavailable: pkill used a pattern naming only the benchmark's master")
    H = CONFIG["hupwatch"]
    variants = {
        "hupwatch reload --no-preflight": [H, "reload", "--pid", str(g.pid), "--no-preflight"],
        "hupwatch reload (preflight)": [H, "reload", "--pid", str(g.pid), "--app", "app:app"],
        "pkill -HUP -f 'gunicorn.*master'": pkill,
    }
    data = {k: {"served": [], "exit": [], "codes": [], "preflight_ms": []} for k in variants}
    n = CONFIG["oneshot_rounds"]
    names = list(variants)
    for i in range(n):
        order = names[i % len(names):] + names[: i % len(names)]
        for name in order:
            old = g.workers_now()
            version = f"o{i:05d}{names.index(name)}"
            write_app(app_dir, version)
            time.sleep(0.05)
            out_path = LOGS / f"oneshot-{i}-{names.index(name)}.out"
            exited = {}
            with open(out_path, "wb") as out_file:
                t0 = now()
                p = subprocess.Popen(variants[name], stdin=subprocess.DEVNULL, stdout=out_file,
                                     stderr=subprocess.STDOUT)
            waiter = threading.Thread(target=lambda: (p.wait(), exited.setdefault("t", now())))
            waiter.start()
            t_served = probe_until(g.port, version, timeout=30)
            waiter.join(60)
            t_exit = exited["t"]
            out = out_path.read_bytes()
            data[name]["served"].append(t_served - t0)
            data[name]["exit"].append(t_exit - t0)
            data[name]["codes"].append(p.returncode)
            m = re.search(rb"preflight passed in (\d+)ms", out)
            if m:
                data[name]["preflight_ms"].append(int(m.group(1)))
            g.wait_replaced(old)
            time.sleep(0.3)
        log(f"oneshot: {i + 1}/{n} rounds")
    res = {"variants": {}}
    for name, d in data.items():
        res["variants"][name] = {
            "served": summary(d["served"]),
            "returned": summary(d["exit"]),
            "exit_codes": sorted(set(d["codes"])),
            "preflight_logged_median_ms": statistics.median(d["preflight_ms"]) if d["preflight_ms"] else None,
        }
    res["pkill_command"] = " ".join(pkill)
    # pkill returns before the new workers serve: the time it returned vs the time served.
    g.child.stop()
    return res


# ---------------------------------------------------------------------------------------------
# Scenario: 100k files, ready time, peak RSS, idle cost (goals 5 and 6)


def make_tree(root, files, dirs):
    """`dirs` leaf directories in sqrt(dirs) groups, `files` small .py files spread over them."""
    root = Path(root)
    groups = max(1, int(dirs ** 0.5))
    leaves = []
    for i in range(dirs):
        leaf = root / f"g{i % groups:03d}" / f"d{i:05d}"
        leaf.mkdir(parents=True, exist_ok=True)
        leaves.append(leaf)
    body = b"X = 1\n"
    for n in range(files):
        fd = os.open(leaves[n % dirs] / f"m{n:06d}.py", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, body)
        os.close(fd)
    return 1 + groups + dirs


def scenario_tree():
    root = WORK / "tree"
    t = time.monotonic()
    total_dirs = make_tree(root, CONFIG["files"], CONFIG["dirs"])
    nfiles = sum(len(f) for _, _, f in os.walk(root))
    log(f"tree: {nfiles} files in {total_dirs} directories, made in {time.monotonic() - t:.1f}s")
    master = StandIn("tree-standin", WORK)
    d = CONFIG["debounce_ms"]
    tools = {
        "hupwatch": lambda: Child("tree-hupwatch", [CONFIG["hupwatch"], "watch", "-w", root, "--debounce", f"{d}ms",
                                                    "--no-preflight", "--pid", master.pid]),
        "watchexec": lambda: watchexec("tree-watchexec", root, master.pid),
    }
    data = {k: {"armed": [], "ready_line": [], "hwm_kib": [], "rss_kib": [], "watches": []} for k in tools}
    rounds = CONFIG["ready_rounds"]
    running = {}
    for r in range(rounds):
        order = ["hupwatch", "watchexec"] if r % 2 == 0 else ["watchexec", "hupwatch"]
        last = r == rounds - 1
        for tool in order:
            child = tools[tool]()
            t_armed, _ = wait_armed(child.pid, total_dirs)
            data[tool]["armed"].append(t_armed - child.t_spawn)
            if tool == "hupwatch":
                _, t_line, _ = child.wait_line(r"\bready\b", timeout=60)
                data[tool]["ready_line"].append(t_line - child.t_spawn)
            time.sleep(1.0)
            data[tool]["watches"].append(inotify_watches(child.pid))
            data[tool]["hwm_kib"].append(kib(status_field(child.pid, "VmHWM")))
            data[tool]["rss_kib"].append(kib(status_field(child.pid, "VmRSS")))
            if last:
                running[tool] = child
            else:
                child.stop()
    res = {"files": nfiles, "directories": total_dirs, "tools": {}}
    # Idle: both keep watching the tree, nothing changes.
    time.sleep(2.0)
    secs = CONFIG["idle_secs"]
    perf = shutil.which("perf")
    perfs = {}
    before = {tool: thread_stats(c.pid) for tool, c in running.items()}
    for tool, c in running.items():
        if perf:
            out = LOGS / f"idle-perf-{tool}.txt"
            perfs[tool] = (out, subprocess.Popen(
                [perf, "stat", "-x", ",", "-o", str(out), "-e", "raw_syscalls:sys_enter,sched:sched_switch",
                 "-p", str(c.pid), "--", "sleep", str(secs)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    log(f"tree: idle for {secs}s")
    time.sleep(secs)
    after = {tool: thread_stats(c.pid) for tool, c in running.items()}
    for tool, (_, p) in perfs.items():
        p.wait(30)
    for tool, c in running.items():
        b, a = before[tool], after[tool]
        cpu_ns = sum(a[t][1] - b[t][1] for t in a if t in b) + sum(a[t][1] for t in a if t not in b)
        switches = {f"{a[t][0]}[{t}]": a[t][2] - b.get(t, (None, 0, 0))[2] for t in a}
        idle = {
            "seconds": secs,
            "cpu_ms_per_min": round(cpu_ns / 1e6 * 60 / secs, 3),
            "context_switches": sum(switches.values()),
            "context_switches_by_thread": {k: v for k, v in switches.items() if v},
            "threads": len(a),
        }
        if tool in perfs:
            counts = {}
            for line in perfs[tool][0].read_text().splitlines():
                parts = line.split(",")
                if len(parts) > 2 and parts[0].strip().isdigit():
                    counts[parts[2]] = int(parts[0])
                elif len(parts) > 2 and parts[0].strip() == "<not counted>":
                    counts[parts[2]] = 0  # the task never ran while counting
            idle["perf_syscalls"] = counts.get("raw_syscalls:sys_enter")
            idle["perf_sched_switch"] = counts.get("sched:sched_switch")
        dt = data[tool]
        res["tools"][tool] = {
            "armed": summary(dt["armed"]),
            "ready_line": summary(dt["ready_line"]) if dt["ready_line"] else None,
            "peak_rss_mib": round(max(dt["hwm_kib"]) / 1024, 2),
            "peak_rss_after_idle_mib": round(kib(status_field(c.pid, "VmHWM")) / 1024, 2),
            "rss_mib": round(max(dt["rss_kib"]) / 1024, 2),
            "inotify_watches": max(dt["watches"]),
            "idle": idle,
        }
    for c in running.values():
        c.stop()
    master.child.stop()
    shutil.rmtree(root, ignore_errors=True)
    return res


# ---------------------------------------------------------------------------------------------
# Scenario: discovery among 2,000 processes (goal 7)


def time_command(args, runs):
    times = []
    for _ in range(runs):
        t0 = now()
        p = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        times.append(now() - t0)
        if p.returncode != 0:
            raise RuntimeError(f"{args}: exit {p.returncode}: {p.stderr.decode()[-500:]}")
    return summary(times)


def spawn_sleepers(count, program):
    procs = []
    first = subprocess.Popen([program, "900"], process_group=0, stdin=subprocess.DEVNULL)
    procs.append(first)
    for _ in range(count - 1):
        procs.append(subprocess.Popen([program, "900"], process_group=first.pid, stdin=subprocess.DEVNULL))
    return procs


def kill_sleepers(procs):
    if not procs:
        return
    try:
        os.killpg(procs[0].pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for p in procs:
        p.wait()


def scenario_discovery():
    app_dir = make_app_dir(WORK / "discovery" / "app")
    g = Gunicorn("bench-discovery", app_dir)
    H = CONFIG["hupwatch"]
    runs = CONFIG["discovery_runs"]
    cmds = {
        "status --json": [H, "status", "--json"],
        "status --json --pid": [H, "status", "--json", "--pid", str(g.pid)],
        "reload --dry-run --pid": [H, "reload", "--dry-run", "--no-preflight", "--pid", str(g.pid)],
        PGREP: ["pgrep", "-f", "gunicorn.*master"],
    }
    res = {"procs_extra": CONFIG["procs"], "cases": {}}

    def measure(label):
        count = sum(1 for e in os.listdir("/proc") if e.isdigit())
        res["cases"][label] = {"processes_on_host": count, "commands": {k: time_command(v, runs) for k, v in cmds.items()}}
        log(f"discovery [{label}]: {count} processes: "
            + ", ".join(f"{k} {v['median_ms']}ms" for k, v in res["cases"][label]["commands"].items()))

    measure("baseline")
    sleepers = []
    try:
        sleepers = spawn_sleepers(CONFIG["procs"], "sleep")
        time.sleep(1.0)
        measure(f"+{CONFIG['procs']} sleep")
    finally:
        kill_sleepers(sleepers)
    # Worst case for the comm pre-filter: the extra processes are named python3, so each one's
    # cmdline (and exe) is read.
    fake = WORK / "bin" / "python3"
    fake.parent.mkdir(exist_ok=True)
    shutil.copy(shutil.which("sleep"), fake)
    sleepers = []
    try:
        sleepers = spawn_sleepers(CONFIG["procs"], str(fake))
        time.sleep(1.0)
        measure(f"+{CONFIG['procs']} named python3")
    finally:
        kill_sleepers(sleepers)
    g.child.stop()
    return res


# ---------------------------------------------------------------------------------------------
# Machine and report


def cmd_out(args):
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=20).stdout.strip() or \
            subprocess.run(args, capture_output=True, text=True, timeout=20).stderr.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    sysctl = {k: Path(f"/proc/sys/fs/inotify/{k}").read_text().strip()
              for k in ("max_user_watches", "max_user_instances", "max_queued_events")}
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "memory": cmd_out(["free", "-h"]).splitlines()[1] if shutil.which("free") else None,
        "loadavg_at_start": Path("/proc/loadavg").read_text().strip(),
        "hupwatch": cmd_out([CONFIG["hupwatch"], "--version"]),
        "hupwatch_rev": os.environ.get("BENCH_HUPWATCH_REV"),
        "watchexec": next(iter((cmd_out([CONFIG["watchexec"], "--version"]) or "not installed").splitlines()), None),
        "gunicorn": cmd_out([GUNICORN, "--version"]),
        "python": cmd_out([PYTHON, "--version"]),
        "setproctitle": cmd_out([PYTHON, "-c", "import importlib.metadata as m; print(m.version('setproctitle'))"]),
        "rustc": cmd_out(["rustc", "--version"]),
        "pkill": cmd_out(["pkill", "--version"]),
        "perf": cmd_out(["perf", "--version"]),
        "inotify": sysctl,
        "inotify_raised_from": os.environ.get("BENCH_INOTIFY_RAISED_FROM"),
    }


def fmt(v, unit="ms"):
    return "–" if v is None else f"{v:g} {unit}"


def markdown(r):
    L = []
    m = r["machine"]
    L.append(f"Machine: {m['nproc']} cores, {m['cpu']}, Linux {m['kernel']}; load at start {m['loadavg_at_start']}")
    L.append(f"hupwatch {m['hupwatch']} ({m['hupwatch_rev']}), {m['watchexec']}, {m['gunicorn']}, {m['python']}, "
             f"setproctitle {m['setproctitle']}")
    L.append("")
    L.append("| figure | hupwatch | peer(s) | goal |")
    L.append("|---|---|---|---|")
    sc = r["scenarios"]
    if "save" in sc and "tools" in sc["save"]:
        s = sc["save"]

        def lat(x):
            return f"{x['median_ms']} / {x['p99_ms']} ms (+{x['overhead_median_ms']} / +{x['overhead_p99_ms']})"
        h = s["tools"]["hupwatch"]
        peers = [f"{k}: {lat(v)}" for k, v in s["tools"].items() if k != "hupwatch"]
        L.append(f"| save → SIGHUP, debounce {s['debounce_ms']} ms: median / p99 (overhead above debounce) | "
                 f"{lat(h)} | {'; '.join(peers)} | overhead ≤ 1 ms median and < watchexec |")
    if "swap" in sc and "variants" in sc["swap"]:
        v = sc["swap"]["variants"]
        off = v.get("preflight off")
        cell = f"{off['median_ms']} / {off['p99_ms']} ms" if off else "–"
        peers = []
        for k, x in v.items():
            if k == "preflight off":
                continue
            extra = f" (preflight logged {x['preflight_logged_median_ms']} ms)" if "preflight_logged_median_ms" in x else ""
            peers.append(f"{k}: {x['median_ms']} / {x['p99_ms']} ms{extra}")
        L.append(f"| release-link swap → SIGHUP, preflight off: median / p99 | {cell} | {'; '.join(peers)} | ≤ 5 ms median |")
    if "e2e" in sc and "tools" in sc["e2e"]:
        t = sc["e2e"]["tools"]
        cells = [f"{k}: {v['median_ms']} / {v['p99_ms']} ms" for k, v in t.items()]
        L.append(f"| edit → new code served (real Gunicorn, debounce {sc['e2e']['debounce_ms']} ms): median / p99 | "
                 f"{cells[0]}; {cells[1]} | {'; '.join(cells[2:])} | – |")
    if "defaults" in sc and "saves" in sc["defaults"]:
        for save, t in sc["defaults"]["saves"].items():
            cells = [f"{k}: {v['median_ms']} / {v['p90_ms']} / {v['max_ms']} ms" for k, v in t.items()]
            L.append(f"| edit → new code served, every tool's defaults, {save} save (n={sc['defaults']['rounds']}): "
                     f"median / p90 / max | {'; '.join(c for c in cells if c.startswith('hupwatch'))} | "
                     f"{'; '.join(c for c in cells if not c.startswith('hupwatch'))} | ≤ ½ `gunicorn --reload`, "
                     f"≤ inotify engine |")
    if "oneshot" in sc and "variants" in sc["oneshot"]:
        v = sc["oneshot"]["variants"]
        cells = [f"{k}: served {x['served']['median_ms']} ms, returns {x['returned']['median_ms']} ms"
                 for k, x in v.items()]
        L.append(f"| one-shot reload, start → new code served / command returns (median) | {cells[0]}; {cells[1]} | "
                 f"{cells[2]} (returns before anything is verified) | – |")
    if "tree" in sc and "tools" in sc["tree"]:
        t = sc["tree"]["tools"]
        h, w = t["hupwatch"], t["watchexec"]
        L.append(f"| {sc['tree']['files']} files / {sc['tree']['directories']} dirs: start → all watches armed (median) | "
                 f"{h['armed']['median_ms']} ms (`ready` logged at {h['ready_line']['median_ms']} ms) | "
                 f"watchexec {w['armed']['median_ms']} ms | ≤ 1000 ms |")
        L.append(f"| peak RSS (VmHWM) watching them | {h['peak_rss_after_idle_mib']} MiB | watchexec {w['peak_rss_after_idle_mib']} MiB | ≤ 32 MiB and < watchexec |")
        hi, wi = h["idle"], w["idle"]
        L.append(f"| idle {hi['seconds']} s watching them: wakeups (context switches) | {hi['context_switches']} "
                 f"(syscalls {hi.get('perf_syscalls')}) | watchexec {wi['context_switches']} (syscalls {wi.get('perf_syscalls')}) | 0 |")
        L.append(f"| idle CPU per minute | {hi['cpu_ms_per_min']} ms | watchexec {wi['cpu_ms_per_min']} ms | ≤ 20 ms |")
    if "discovery" in sc and "cases" in sc["discovery"]:
        cases = sc["discovery"]["cases"]
        for label, case in cases.items():
            if label == "baseline":
                continue
            c = case["commands"]
            L.append(f"| discovery, {case['processes_on_host']} processes ({label}): median / max | "
                     f"status --json {c['status --json']['median_ms']} / {c['status --json']['max_ms']} ms; "
                     f"reload --dry-run --pid {c['reload --dry-run --pid']['median_ms']} / {c['reload --dry-run --pid']['max_ms']} ms | "
                     f"pgrep -f {c[PGREP]['median_ms']} ms | ≤ 50 ms |")
    for name, table in EXTRA_TABLES.items():
        if name in sc and "error" not in sc[name]:
            L += table(sc[name])
    if r["notes"]:
        L.append("")
        L += [f"- {n}" for n in r["notes"]]
    return "\n".join(L) + "\n"


EXTRA_TABLES = {"stall": stall.markdown_stall, "rhythm": rhythm.markdown_rhythm, "surge": surge.markdown_surge}

SCENARIOS = {
    "tree": scenario_tree,
    "discovery": scenario_discovery,
    "save": scenario_save,
    "swap": scenario_swap,
    "e2e": scenario_e2e,
    "oneshot": scenario_oneshot,
    "defaults": scenario_defaults,
    "stall": stall.scenario_stall,
    "rhythm": rhythm.scenario_rhythm,
    "surge": surge.scenario_surge,
}


def main():
    atexit.register(cleanup)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    RESULTS["machine"] = machine()
    log(f"work dir {WORK}; machine: {RESULTS['machine']['nproc']} cores, {RESULTS['machine']['cpu']}")
    started = time.monotonic()
    try:
        run_scenarios()
    except KeyboardInterrupt as e:
        note(f"interrupted ({e}); results so far are kept")
    finish(started)


def run_scenarios():
    for name in [s.strip() for s in CONFIG["scenarios"].split(",") if s.strip()]:
        if name not in SCENARIOS:
            note(f"unknown scenario {name!r}")
            continue
        busy = wait_quiet(name)
        log(f"scenario {name}: start (CPU busy {busy:.0%}, load {Path('/proc/loadavg').read_text().split()[0]})")
        t = time.monotonic()
        try:
            RESULTS["scenarios"][name] = SCENARIOS[name]()
        except KeyboardInterrupt:
            raise
        except Exception as e:  # noqa: BLE001 - one failed scenario must not lose the others
            import traceback
            traceback.print_exc()
            RESULTS["scenarios"][name] = {"error": f"{type(e).__name__}: {e}"}
            note(f"scenario {name} failed: {type(e).__name__}: {str(e)[:300]}")
            for child in reversed(list(CHILDREN)):
                child.stop(grace=2.0)
        RESULTS["scenarios"].setdefault(name, {})["seconds"] = round(time.monotonic() - t, 1)
        RESULTS["scenarios"][name]["cpu_busy_before"] = busy
        log(f"scenario {name}: done in {time.monotonic() - t:.0f}s")


def finish(started):
    RESULTS["total_seconds"] = round(time.monotonic() - started, 1)
    RESULTS["machine"]["loadavg_at_end"] = Path("/proc/loadavg").read_text().strip()
    out = Path(CONFIG["out"])
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out / f"results-{stamp}.json").write_text(json.dumps(RESULTS, indent=2, default=str))
    md = markdown(RESULTS)
    (out / f"results-{stamp}.md").write_text(md)
    (out / "latest.json").write_text(json.dumps(RESULTS, indent=2, default=str))
    (out / "latest.md").write_text(md)
    print(md)
    log(f"results in {out}/results-{stamp}.{{json,md}} (total {RESULTS['total_seconds']}s)")


if __name__ == "__main__":
    main()
