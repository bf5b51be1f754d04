"""Scenario `stall`: the worst request during a reload (issues 11 and 12), called from bench.py.

An app whose import sleeps N s (`time.sleep`, not CPU: two cores do not distort it), for each N
in BENCH_STALL_IMPORTS; Gunicorn 27.0.1 `-w 2` on 127.0.0.1; four client threads sending steady
requests (each waits BENCH_STALL_PAUSE_MS between two). Each round, per tool:

  steady   BENCH_STALL_STEADY_SECS of load with nothing happening: the worst request wholly in it;
  reload   app.py rewritten with a new version, then the reload: `hupwatch reload --pidfile P
           --strategy S` (one-shot, started right after the edit), nothing at all for
           `gunicorn --reload` (Gunicorn's own reloader notices the edit), nor for `run`
           (`hupwatch run --watch APPDIR --debounce 50ms -- gunicorn …`, started before the rounds:
           its own watch sees the edit and starts the next generation). The window runs from the
           edit until the hupwatch command has returned (`run`: until it logged the old generation
           stopped) and every new worker (`-w` distinct pids) has answered with the new version,
           plus BENCH_STALL_TAIL_MS; a request counts in it if it was in flight at any moment of
           that window. Its worst request, and failed requests;
  served   edit → the first response with the new version (its end);
  memory   the total RSS of the tool's process tree (hupwatch and every Gunicorn process of the
           tool) every BENCH_STALL_RSS_MS: its median in the steady window, its peak in the reload.

One Gunicorn (or one `hupwatch run`) per tool, only the measured one under load; rounds
interleaved (the tools' order rotates every round). Tools come from BENCH_STALL_STRATEGIES: a
`--strategy` value, or `run`; one the binary does not offer is skipped with a note. The targets
and the memory sampler live in bench/stall_tools.py.
"""

import os
import re
import statistics
import subprocess
import threading
import time

import harness as h
from stall_tools import GUNICORN_RELOAD, RUN, RssSampler, RunTarget, Target, rss_in, supported_strategies, \
    write_slow_app

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
    "rss_ms": h.env_int("BENCH_STALL_RSS_MS", 50),
}


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


def first_served(records, version, after):
    """The end of the first response with `version`, or None."""
    return min((r[1] for r in records if r[2] and r[3].startswith(version + " ") and r[1] >= after), default=None)


def reload_oneshot(target, binary, timeout):
    """`hupwatch reload --strategy S` started right after the edit: (returned ns, exit code, output)."""
    C = STALL_CONFIG
    args = [binary, "reload", "--pidfile", target.pidfile, "--strategy", target.tool,
            "--verify-timeout", f"{int(4 * target.delay + 20)}s"]
    args += ["--app", "app:app"] if C["preflight"] else ["--no-preflight"]
    p = subprocess.Popen([str(a) for a in args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    target.oneshot_pid = p.pid
    try:
        out, _ = p.communicate(timeout=timeout)
    finally:
        target.oneshot_pid = None
    return h.now(), p.returncode, out


def run_switched(target, mark, timeout):
    """`hupwatch run` after the edit: (time the old generation was logged stopped, booted ms, stopped ms)."""
    _, _, up = target.child.wait_line(RunTarget.GENERATION_UP, start=mark, timeout=timeout)
    new_gen, booted = (int(x) for x in re.search(RunTarget.GENERATION_UP, up).groups())
    i = mark
    while True:  # the generation before it, stopped
        i, t, line = target.child.wait_line(RunTarget.GENERATION_GONE, start=i, timeout=timeout)
        gen, stopped = (int(x) for x in re.search(RunTarget.GENERATION_GONE, line).groups())
        if gen < new_gen:
            return t, booted, stopped
        i += 1


def mib(kib):
    return round(kib / 1024, 1)


def reload_once(target, i, binary, timeout):
    """One steady window and one reload of `target`, under load: the round's figures."""
    C = STALL_CONFIG
    rss = RssSampler(target.roots, C["rss_ms"] / 1000)
    load = SteadyLoad(target.port, C["clients"], C["pause_ms"])
    try:
        time.sleep(0.5)  # warm-up: every client has had an answer
        t_steady = h.now()
        time.sleep(C["steady_secs"])
        version = f"s{i + 1:05d}"
        mark = target.child.mark() if target.tool == RUN else 0
        t_edit = write_slow_app(target.dir, target.delay, version)
        out, rc, t_returned, run_logged = "", None, None, None
        if target.tool == RUN:
            t_returned, *run_logged = run_switched(target, mark, timeout)
        elif target.tool != GUNICORN_RELOAD:
            t_returned, rc, out = reload_oneshot(target, binary, timeout)
        h.wait_until(lambda: len(load.served_by(version)) >= C["workers"], timeout, step=0.01,
                     what=f"{target.tool}: every new worker serving {version}")
        t_done = max(h.now(), t_returned or 0)
        time.sleep(C["tail_ms"] / 1000)
        t_done_tail = h.now()
    finally:
        records = load.stop()
        samples = rss.stop()
    steady = window(records, t_steady, t_edit, strict=True)
    during = window(records, t_edit, t_done)
    served = first_served(records, version, t_edit)
    rss_steady = rss_in(samples, t_steady, t_edit)
    rss_reload = rss_in(samples, t_edit, t_done_tail)
    row = {
        "steady_worst_ms": round(steady[0] / h.MS, 1),
        "steady_failed": steady[1],
        "steady_requests": steady[1] + steady[2],
        "reload_worst_ms": round(during[0] / h.MS, 1),
        "reload_failed": during[1],
        "reload_requests": during[1] + during[2],
        "failures": steady[3] + during[3],
        "window_ms": round((t_done - t_edit) / h.MS, 1),
        "served_ms": round((served - t_edit) / h.MS, 1) if served else None,
        "rss_steady_mib": mib(statistics.median(x[0] for x in rss_steady)) if rss_steady else None,
        "rss_reload_peak_mib": mib(max(x[0] for x in rss_reload)) if rss_reload else None,
        "gunicorn_rss_steady_mib": mib(statistics.median(x[2] for x in rss_steady)) if rss_steady else None,
        "gunicorn_rss_reload_peak_mib": mib(max(x[2] for x in rss_reload)) if rss_reload else None,
        "procs_steady": max((x[1] for x in rss_steady), default=None),
        "procs_reload_peak": max((x[1] for x in rss_reload), default=None),
        # "ms after the edit,total KiB,processes,Gunicorn KiB" from 0.5 s before the edit on, one
        # string (a list would be ~20 lines a sample in the indented JSON)
        "rss_samples": " ".join(f"{round((x[0] - t_edit) / h.MS)},{x[1]},{x[2]},{x[3]}"
                                for x in samples if x[0] >= t_edit - 500 * h.MS),
    }
    if target.tool == RUN:
        row["returned_ms"] = round((t_returned - t_edit) / h.MS, 1)
        row["booted_logged_ms"], row["old_stopped_logged_ms"] = run_logged
    elif target.tool != GUNICORN_RELOAD:
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


def spread(values):
    return {"min": min(values), "median": statistics.median(values), "max": max(values)} if values else None


def summarize(rounds):
    def col(key):
        return [r[key] for r in rounds if r.get(key) is not None]
    over = [r["reload_worst_ms"] - r["steady_worst_ms"] for r in rounds]
    s = {
        "rounds": len(rounds),
        "steady_worst_ms": spread(col("steady_worst_ms")),
        "reload_worst_ms": spread(col("reload_worst_ms")),
        "reload_over_steady_max_ms": round(max(over), 1),
        "failed": sum(r["reload_failed"] + r["steady_failed"] for r in rounds),
        "requests": sum(r["reload_requests"] + r["steady_requests"] for r in rounds),
        "served_ms": spread(col("served_ms")),
        "rss_steady_mib": spread(col("rss_steady_mib")),
        "rss_reload_peak_mib": spread(col("rss_reload_peak_mib")),
        "gunicorn_rss_steady_mib": spread(col("gunicorn_rss_steady_mib")),
        "gunicorn_rss_reload_peak_mib": spread(col("gunicorn_rss_reload_peak_mib")),
        "procs_steady": spread(col("procs_steady")),
        "procs_reload_peak": spread(col("procs_reload_peak")),
    }
    for key in ("booted_logged_ms", "stall_logged_ms", "old_stopped_logged_ms", "returned_ms"):
        if col(key):
            s[key.replace("_ms", "_median_ms")] = statistics.median(col(key))
    codes = col("exit_code")
    if codes:
        s["exit_codes"] = sorted(set(codes))
    return s


def make_target(tool, delay, j, binary):
    if tool == RUN:
        return RunTarget(tool, delay, j, STALL_CONFIG["workers"], binary)
    return Target(tool, delay, j, STALL_CONFIG["workers"])


def scenario_stall():
    C = STALL_CONFIG
    binary = h.CONFIG["hupwatch"]
    known = supported_strategies(binary)
    tools = []
    for s in C["strategies"]:
        if s in known:
            tools.append(s)
        else:
            h.note(f"stall: `{s}` skipped: this hupwatch does not offer it "
                   f"(`hupwatch reload --help` lists: {', '.join(known) or 'nothing'})")
    if C["gunicorn_reload"]:
        tools.append(GUNICORN_RELOAD)
    res = {"config": dict(C), "tools": tools, "skipped_strategies": [s for s in C["strategies"] if s not in known],
           "imports": {}}
    for delay in C["imports"]:
        targets = {}
        try:
            for j, tool in enumerate(tools):
                targets[tool] = make_target(tool, delay, j, binary)
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
                          f"reload worst {row['reload_worst_ms']} ms, failed {row['reload_failed']}, "
                          f"served {row['served_ms']} ms, RSS {row['rss_steady_mib']} → {row['rss_reload_peak_mib']} MiB")
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
    if tool == GUNICORN_RELOAD:
        return GUNICORN_RELOAD
    if tool == RUN:
        return "hupwatch run (own watch, debounce 50ms)"
    return f"hupwatch reload --strategy {tool}"


def mmm(x, unit="ms"):
    return "–" if not x else f"{x['min']:g}–{x['median']:g}–{x['max']:g} {unit}"


def markdown_stall(s):
    """The stall table for latest.md."""
    c = s["config"]
    L = ["", f"Worst request during a reload: Gunicorn `-w {c['workers']}`, {c['clients']} clients "
             f"({c['pause_ms']} ms pause), {c['rounds']} rounds; worst over the rounds' min–median–max "
             f"(steady: {c['steady_secs']:g} s before the edit; reload: edit → every new worker serving + "
             f"{c['tail_ms']} ms); preflight {'on' if c['preflight'] else 'off'}; edit → served: the first "
             f"response with the new version; RSS: the tool's process tree every {c.get('rss_ms', 50)} ms, "
             f"steady median → reload peak (median over the rounds; processes: most seen), and the "
             f"Gunicorn processes' share of it", "",
         "| import | reload | failed / requests | steady worst | worst during the reload | reload − steady (max) | "
         "edit → served | RSS steady → peak | hupwatch logged |", "|---|---|---|---|---|---|---|---|---|"]
    for delay, d in s["imports"].items():
        for tool, x in d["tools"].items():
            logged = []
            if "booted_logged_median_ms" in x:
                logged.append(f"booted {x['booted_logged_median_ms']:g} ms")
            if "stall_logged_median_ms" in x:
                logged.append(f"stall {x['stall_logged_median_ms']:g} ms")
            if "old_stopped_logged_median_ms" in x:
                logged.append(f"old stopped in {x['old_stopped_logged_median_ms']:g} ms")
            if x.get("exit_codes", [0]) != [0]:
                logged.append(f"exit codes {x['exit_codes']}")
            rs, rp = x.get("rss_steady_mib"), x.get("rss_reload_peak_mib")
            gs, gp = x.get("gunicorn_rss_steady_mib"), x.get("gunicorn_rss_reload_peak_mib")
            ps, pp = x.get("procs_steady"), x.get("procs_reload_peak")
            rss = (f"{rs['median']:g} → {rp['median']:g} MiB ({ps['median']:g} → {pp['max']:g} procs; "
                   f"Gunicorn {gs['median']:g} → {gp['median']:g})" if rs and rp and gs and gp and ps and pp else "–")
            L.append(f"| {delay} s | {tool_label(tool)} | {x['failed']} / {x['requests']} | "
                     f"{mmm(x['steady_worst_ms'])} | {mmm(x['reload_worst_ms'])} | "
                     f"{x['reload_over_steady_max_ms']:+g} ms | {mmm(x.get('served_ms'))} | {rss} | "
                     f"{', '.join(logged) or '–'} |")
    return L
