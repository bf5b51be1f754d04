"""Scenario `stall`: the worst request during a reload (issue 11), called from bench.py.

An app whose import sleeps N s (`time.sleep`, not CPU: two cores do not distort it), for each N
in BENCH_STALL_IMPORTS; Gunicorn 27.0.1 `-w 2` on 127.0.0.1; four client threads sending steady
requests (each waits BENCH_STALL_PAUSE_MS between two). Each round, per tool:

  steady   BENCH_STALL_STEADY_SECS of load with nothing happening: the worst request wholly in it;
  reload   app.py rewritten with a new version, then the reload: `hupwatch reload --pidfile P
           --strategy S` (one-shot, started right after the edit), or nothing at all for
           `gunicorn --reload` (Gunicorn's own reloader notices the edit). The window runs from the
           edit until the hupwatch command has returned and every new worker (`-w` distinct pids)
           has answered with the new version, plus BENCH_STALL_TAIL_MS; a request counts in it if
           it was in flight at any moment of that window. Its worst request, and failed requests.

One Gunicorn per tool, only the measured one under load; rounds interleaved (the tools' order
rotates every round). Strategies come from BENCH_STALL_STRATEGIES; one the binary does not list
in `hupwatch reload --help` is skipped with a note.
"""

import os
import re
import statistics
import subprocess
import threading
import time

import bench as h

GUNICORN_RELOAD = "gunicorn --reload"

STALL_CONFIG = {
    "imports": [float(x) for x in os.environ.get("BENCH_STALL_IMPORTS", "0,1.5,5").split(",") if x.strip()],
    "strategies": [s.strip() for s in os.environ.get("BENCH_STALL_STRATEGIES", "hup,upgrade,auto").split(",")
                   if s.strip()],
    "gunicorn_reload": os.environ.get("BENCH_STALL_GUNICORN_RELOAD", "1") not in ("", "0"),
    "rounds": h.env_int("BENCH_STALL_ROUNDS", 3),
    "workers": h.env_int("BENCH_STALL_WORKERS", 2),
    "clients": h.env_int("BENCH_STALL_CLIENTS", 4),
    "pause_ms": h.env_int("BENCH_STALL_PAUSE_MS", 20),
    "steady_secs": float(os.environ.get("BENCH_STALL_STEADY_SECS", "3")),
    "tail_ms": h.env_int("BENCH_STALL_TAIL_MS", 500),
    "preflight": os.environ.get("BENCH_STALL_PREFLIGHT", "1") not in ("", "0"),
}


def write_slow_app(dir_, delay, version):
    """An editor's save of the app whose import sleeps `delay` s. The time before the open."""
    return h.write_app(dir_, version, prefix=f"import time\ntime.sleep({delay!r})\n")


def get(port, timeout):
    """One `GET /`: (ok, body or error); ok only for a 200."""
    status, text = h.http_get(port, timeout)
    if status is None:
        return False, text
    if not status.startswith(("HTTP/1.0 200", "HTTP/1.1 200")):
        return False, status or "empty response"
    return True, text.strip()


class SteadyLoad:
    """`clients` threads, each sending `GET /` in a loop with a pause between two. Every request
    is kept as (start ns, end ns, ok, body or error)."""

    def __init__(self, port, clients, pause_ms, timeout=60.0):
        self.records = []
        self.pids = {}  # version -> pids that answered with it
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(port, pause_ms / 1000, timeout), daemon=True)
                        for _ in range(clients)]
        for t in self.threads:
            t.start()

    def _run(self, port, pause, timeout):
        while not self.stopping.is_set():
            t0 = h.now()
            ok, text = get(port, timeout)
            t1 = h.now()
            m = re.match(r"(\S+) pid=(\d+)", text) if ok else None
            with self.lock:
                self.records.append((t0, t1, ok, text))
                if m:
                    self.pids.setdefault(m.group(1), set()).add(int(m.group(2)))
            self.stopping.wait(pause)

    def snapshot(self):
        with self.lock:
            return list(self.records)

    def served_by(self, version):
        """Pids that answered with `version`."""
        with self.lock:
            return set(self.pids.get(version, ()))

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(90)
        return self.snapshot()


def window(records, start, end, strict=False):
    """Requests in flight at any moment of [start, end] (`strict`: wholly inside it):
    (worst ns, failed, ok, failures)."""
    if strict:
        inside = [r for r in records if r[0] >= start and r[1] <= end]
    else:
        inside = [r for r in records if r[0] <= end and r[1] >= start]
    worst = max((r[1] - r[0] for r in inside), default=0)
    failures = [r[3] for r in inside if not r[2]]
    return worst, len(failures), len(inside) - len(failures), failures[:5]


def supported_strategies(binary):
    """The --strategy values `hupwatch reload --help` lists."""
    out = subprocess.run([binary, "reload", "--help"], capture_output=True, text=True, timeout=20).stdout
    line = next((l for l in out.splitlines() if "--strategy" in l), "")
    m = re.search(r"\[possible values: ([^\]]+)\]", line)
    return [v.strip() for v in m.group(1).split(",")] if m else []


class Target:
    """One tool's Gunicorn (its own app dir, pidfile and port)."""

    def __init__(self, tool, delay, j):
        self.tool, self.delay = tool, delay
        base = h.WORK / "stall" / f"i{delay:g}-t{j}"
        self.dir = h.make_app_dir(base / "app", extra_modules=0)
        write_slow_app(self.dir, delay, "s00000")
        self.pidfile = base / "gunicorn.pid"
        extra = ["-p", str(self.pidfile)]
        if tool == GUNICORN_RELOAD:
            extra.append("--reload")
        # The master's title is `gunicorn: master [app:app]` (no --name): what hupwatch's
        # preflight reads. Start-up waits out the import (N s) before the first answer.
        self.g = h.Gunicorn(f"stall-{delay:g}-{j}", self.dir, extra=extra, workers=STALL_CONFIG["workers"],
                            titled_by_name=False)
        self.port = self.g.port
        self.rounds = []

    def stop(self):
        self.g.child.stop()


def reload_once(target, i, binary, timeout):
    """One steady window and one reload of `target`, under load: the round's figures."""
    C = STALL_CONFIG
    load = SteadyLoad(target.port, C["clients"], C["pause_ms"])
    try:
        time.sleep(0.5)  # warm-up: every client has had an answer
        t_steady = h.now()
        time.sleep(C["steady_secs"])
        version = f"s{i + 1:05d}"
        t_edit = write_slow_app(target.dir, target.delay, version)
        out, rc, t_returned = "", None, None
        if target.tool != GUNICORN_RELOAD:
            args = [binary, "reload", "--pidfile", target.pidfile, "--strategy", target.tool,
                    "--verify-timeout", f"{int(4 * target.delay + 20)}s"]
            args += ["--app", "app:app"] if C["preflight"] else ["--no-preflight"]
            p = subprocess.run([str(a) for a in args], stdin=subprocess.DEVNULL, capture_output=True,
                               text=True, timeout=timeout)
            t_returned, rc, out = h.now(), p.returncode, p.stdout + p.stderr
        h.wait_until(lambda: len(load.served_by(version)) >= C["workers"], timeout, step=0.01,
                     what=f"{target.tool}: every new worker serving {version}")
        t_done = max(h.now(), t_returned or 0)
        time.sleep(C["tail_ms"] / 1000)
    finally:
        records = load.stop()
    steady = window(records, t_steady, t_edit, strict=True)
    during = window(records, t_edit, t_done)
    row = {
        "steady_worst_ms": round(steady[0] / h.MS, 1),
        "steady_failed": steady[1],
        "steady_requests": steady[1] + steady[2],
        "reload_worst_ms": round(during[0] / h.MS, 1),
        "reload_failed": during[1],
        "reload_requests": during[1] + during[2],
        "failures": steady[3] + during[3],
        "window_ms": round((t_done - t_edit) / h.MS, 1),
    }
    if target.tool != GUNICORN_RELOAD:
        row["exit_code"] = rc
        row["returned_ms"] = round((t_returned - t_edit) / h.MS, 1)
        lines = out.strip().splitlines()
        row["reload_line"] = next((l for l in lines if re.search(r"reloaded master|reload failed|ERROR", l)),
                                  lines[-1] if lines else "")
        m = re.search(r"booted in (\d+)ms", out)
        row["booted_logged_ms"] = int(m.group(1)) if m else None
        m = re.search(r"no worker accepted requests for (\d+)ms", out)
        row["stall_logged_ms"] = int(m.group(1)) if m else None
        if rc != 0:
            h.note(f"stall: {target.tool} import {target.delay:g}s round {i}: exit {rc}: {row['reload_line'][:200]}")
    return row


def summarize(rounds):
    def col(key):
        return [r[key] for r in rounds if r.get(key) is not None]
    steady, during = col("steady_worst_ms"), col("reload_worst_ms")
    over = [r["reload_worst_ms"] - r["steady_worst_ms"] for r in rounds]
    s = {
        "rounds": len(rounds),
        "steady_worst_ms": {"min": min(steady), "median": statistics.median(steady), "max": max(steady)},
        "reload_worst_ms": {"min": min(during), "median": statistics.median(during), "max": max(during)},
        "reload_over_steady_max_ms": round(max(over), 1),
        "failed": sum(r["reload_failed"] + r["steady_failed"] for r in rounds),
        "requests": sum(r["reload_requests"] + r["steady_requests"] for r in rounds),
    }
    booted = col("booted_logged_ms")
    if booted:
        s["booted_logged_median_ms"] = statistics.median(booted)
    stall = col("stall_logged_ms")
    if stall:
        s["stall_logged_median_ms"] = statistics.median(stall)
    codes = col("exit_code")
    if codes:
        s["exit_codes"] = sorted(set(codes))
    return s


def scenario_stall():
    C = STALL_CONFIG
    binary = h.CONFIG["hupwatch"]
    known = supported_strategies(binary)
    tools = []
    for s in C["strategies"]:
        if s in known:
            tools.append(s)
        else:
            h.note(f"stall: `--strategy {s}` skipped: this hupwatch does not offer it "
                   f"(`hupwatch reload --help` lists: {', '.join(known) or 'nothing'})")
    if C["gunicorn_reload"]:
        tools.append(GUNICORN_RELOAD)
    res = {"config": dict(C), "tools": tools, "skipped_strategies": [s for s in C["strategies"] if s not in known],
           "imports": {}}
    for delay in C["imports"]:
        targets = {}
        try:
            for j, tool in enumerate(tools):
                targets[tool] = Target(tool, delay, j)
            if GUNICORN_RELOAD in targets:
                time.sleep(1.5)  # the polling reloader has taken its first mtime snapshot
            timeout = 6 * delay + 60
            for i in range(C["rounds"]):
                order = tools[i % len(tools):] + tools[: i % len(tools)]
                for tool in order:
                    t = targets[tool]
                    row = reload_once(t, i, binary, timeout)
                    t.rounds.append(row)
                    h.log(f"stall: import {delay:g}s, {tool}, round {i + 1}: steady worst {row['steady_worst_ms']} ms, "
                          f"reload worst {row['reload_worst_ms']} ms, failed {row['reload_failed']}")
                    time.sleep(0.5)
        finally:
            res["imports"][f"{delay:g}"] = {
                "tools": {tool: {**summarize(t.rounds), "per_round": t.rounds}
                          for tool, t in targets.items() if t.rounds},
            }
            for t in targets.values():
                t.stop()
    return res


def tool_label(tool):
    return GUNICORN_RELOAD if tool == GUNICORN_RELOAD else f"hupwatch reload --strategy {tool}"


def markdown_stall(s):
    """The stall table for latest.md."""
    c = s["config"]
    L = ["", f"Worst request during a reload: Gunicorn `-w {c['workers']}`, {c['clients']} clients "
             f"({c['pause_ms']} ms pause), {c['rounds']} rounds; worst over the rounds' min–median–max "
             f"(steady: {c['steady_secs']:g} s before the edit; reload: edit → every new worker serving + "
             f"{c['tail_ms']} ms); preflight {'on' if c['preflight'] else 'off'}", "",
         "| import | reload | failed / requests | steady worst | worst during the reload | reload − steady (max) | "
         "hupwatch logged |", "|---|---|---|---|---|---|---|"]
    for delay, d in s["imports"].items():
        for tool, x in d["tools"].items():
            st, rw = x["steady_worst_ms"], x["reload_worst_ms"]
            logged = []
            if "booted_logged_median_ms" in x:
                logged.append(f"booted {x['booted_logged_median_ms']:g} ms")
            if "stall_logged_median_ms" in x:
                logged.append(f"stall {x['stall_logged_median_ms']:g} ms")
            if x.get("exit_codes", [0]) != [0]:
                logged.append(f"exit codes {x['exit_codes']}")
            L.append(f"| {delay} s | {tool_label(tool)} | {x['failed']} / {x['requests']} | "
                     f"{st['min']:g}–{st['median']:g}–{st['max']:g} ms | "
                     f"{rw['min']:g}–{rw['median']:g}–{rw['max']:g} ms | {x['reload_over_steady_max_ms']:+g} ms | "
                     f"{', '.join(logged) or '–'} |")
    return L
