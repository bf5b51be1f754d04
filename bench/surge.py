"""The `surge` scenario (issue 22): memory and latency across one deploy, for `hupwatch run`
blue/green and `--max-surge 1` and `2`, beside `hupwatch reload --strategy hup` / `auto` and
`gunicorn --reload`, and the two plots drawn from the samples (plain SVG strings, bench/svg_plot.py).

One app for all: W workers (BENCH_SURGE_WORKERS=4), each holding BENCH_SURGE_MIB (40) MiB of its
own, its import sleeping BENCH_SURGE_IMPORT (1.0) s. Each tool, in turn, once per round
(BENCH_SURGE_ROUNDS=2): BENCH_SURGE_STEADY_SECS (3) s of steady load, then the deploy — a
release swap for `run` (`--release-link`, needed by `--max-surge`), an edit in place for the
others — then until the switch is over plus 1 s. Load: BENCH_STALL_CLIENTS (4) threads sending
`GET /` with a 20 ms pause. Memory: every 50 ms, the sum of PSS (`/proc/PID/smaps_rollup`) over
the app's processes — every process under the master or under `hupwatch run` (both generations,
a preflight's or survey's import), hupwatch's own processes left out.
"""

import os
import subprocess
import threading
import time
from pathlib import Path

import harness as h
import stall
import stall_tools
import svg_plot

C = {
    "workers": h.env_int("BENCH_SURGE_WORKERS", 4),
    "mib": h.env_int("BENCH_SURGE_MIB", 40),
    "import": float(os.environ.get("BENCH_SURGE_IMPORT", "1.0")),
    "rounds": h.env_int("BENCH_SURGE_ROUNDS", 2),
    "steady": float(os.environ.get("BENCH_SURGE_STEADY_SECS", "3")),
    "clients": h.env_int("BENCH_STALL_CLIENTS", 4),
    "tools": os.environ.get("BENCH_SURGE_TOOLS", "run,surge1,surge2,hup,auto,reload"),
    "plots": os.environ.get("BENCH_SURGE_PLOTS", str(h.HERE.parent / "docs" / "img")),
}
LABELS = {
    "run": "run (blue/green)",
    "surge1": "run --max-surge 1",
    "surge2": "run --max-surge 2",
    "hup": "reload --strategy hup",
    "auto": "reload --strategy auto",
    "reload": "gunicorn --reload",
}
GONE = r"generation (\d+) \(master \d+\) stopped in"


def app_prefix():
    return f"import time\ntime.sleep({C['import']!r})\nBLOB = b'\\x01' * ({C['mib']} << 20)\n"


def pss_kib(pid):
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def comm(pid):
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


class PssSampler:
    """(ns, total PSS KiB, processes) every 50 ms over the app's processes under `roots()`."""

    def __init__(self, roots):
        self.samples, self.stopping = [], threading.Event()
        self.thread = threading.Thread(target=self._run, args=(roots,), daemon=True)
        self.thread.start()

    def _run(self, roots):
        while not self.stopping.is_set():
            pids = [p for p in stall_tools.tree(roots()) if comm(p) != "hupwatch"]
            if pids:
                self.samples.append((h.now(), sum(pss_kib(p) for p in pids), len(pids)))
            self.stopping.wait(0.05)

    def stop(self):
        self.stopping.set()
        self.thread.join(5)
        return self.samples


class Tool:
    """One tool's app, serving on its own port."""

    def __init__(self, tool, j):
        self.tool = tool
        base = h.WORK / "surge" / f"{tool}-{j}"
        self.port, self.version, self.oneshot = h.free_port(), 0, None
        w = str(C["workers"])
        if tool.startswith(("run", "surge")):
            self.releases = base / "releases"
            self.current = base / "current"
            self.dir = self._release("v0")
            self._swap(self.dir)
            flags = {"run": [], "surge1": ["--max-surge", "1"], "surge2": ["--max-surge", "2"]}[tool]
            args = [h.CONFIG["hupwatch"], "run", "--release-link", self.current, *flags, "--",
                    h.GUNICORN, "-w", w, "-b", f"127.0.0.1:{self.port}", "app:app"]
            self.child = h.Child(f"surge-{tool}", args, cwd=base, env={"PWD": str(base)})
            self.child.wait_line(r"generation 1 serving", timeout=60, fail=r"ERROR")
            self.roots = lambda: [self.child.pid]
        else:
            self.dir = h.make_app_dir(base / "app", extra_modules=0)
            h.write_app(self.dir, "v0", prefix=app_prefix())
            self.pidfile = base / "gunicorn.pid"
            args = [h.GUNICORN, "-w", w, "-b", f"127.0.0.1:{self.port}", "-p", self.pidfile]
            args += ["--reload"] if tool == "reload" else []
            self.child = h.Child(f"surge-{tool}", args + ["app:app"], cwd=self.dir, env={"PWD": str(self.dir)})
            self.master = None
            self.roots = self._master_roots
        h.wait_until(lambda: (h.http_body(self.port) or "").startswith("v0 "), 60, step=0.05, what=f"{tool} serving")

    def _master_roots(self):
        # During a HUP the pidfile is deleted and rewritten: the master it named is still there.
        self.master = stall_tools.read_pid(self.pidfile) or self.master
        return [self.master, self.oneshot]

    def _release(self, version):
        d = self.releases / version
        d.mkdir(parents=True, exist_ok=True)
        h.write_app(d, version, prefix=app_prefix())
        return d

    def _swap(self, target):
        tmp = self.current.with_name("current.tmp")
        if tmp.is_symlink():
            tmp.unlink()
        tmp.symlink_to(target)
        os.replace(tmp, self.current)

    def deploy(self, timeout=120):
        """Deploy the next version; returns (edit ns, done ns): done is when the old generation or
        the last old worker is gone and every answer carries the new version."""
        self.version += 1
        v = f"v{self.version}"
        if self.tool.startswith(("run", "surge")):
            d = self._release(v)
            mark = self.child.mark()
            t0 = h.now()
            self._swap(d)
            self.child.wait_line(GONE, start=mark, timeout=timeout, fail=r"reload failed")
            return t0, h.now(), v
        t0 = h.write_app(self.dir, v, prefix=app_prefix())
        if self.tool in ("hup", "auto"):
            p = subprocess.Popen([str(a) for a in [h.CONFIG["hupwatch"], "reload", "--pidfile", self.pidfile,
                                                   "--strategy", self.tool, "--app", "app:app",
                                                   "--verify-timeout", "60s"]],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            self.oneshot = p.pid
            out, _ = p.communicate(timeout=timeout)
            self.oneshot = None
            if p.returncode != 0:
                raise RuntimeError(f"hupwatch reload --strategy {self.tool}: {out[-500:]}")
        h.wait_until(lambda: self.old_workers_gone(v), timeout, step=0.05, what=f"{self.tool}: only {v} answers")
        return t0, h.now(), v

    def old_workers_gone(self, v):
        bodies = [h.http_body(self.port, 5) or "" for _ in range(2 * C["workers"])]
        return all(b.startswith(v + " ") for b in bodies)

    def stop(self):
        self.child.stop(grace=15.0)


def one_round(tool):
    t = Tool(tool, len(RAW.setdefault(tool, [])))
    try:
        sampler = PssSampler(t.roots)
        load = stall.SteadyLoad(t.port, C["clients"], 20)
        time.sleep(C["steady"])
        t_edit, t_done, v = t.deploy()
        time.sleep(1.0)
        records, samples = load.stop(), sampler.stop()
    finally:
        t.stop()
    steady = sorted(k for ns, k, _ in samples if ns < t_edit)
    during = [k for ns, k, _ in samples if t_edit <= ns <= t_done + 500 * h.MS]
    steady_worst, _, _, _ = stall.window(records, t_edit - int(C["steady"] * 1e9) + 500 * h.MS, t_edit, strict=True)
    worst, failed, ok, failures = stall.window(records, t_edit, t_done)
    served = stall.first_served(records, v, t_edit)
    r = {
        "steady_mib": round(steady[len(steady) // 2] / 1024, 1),
        "peak_mib": round(max(during) / 1024, 1),
        "switch_s": round((t_done - t_edit) / 1e9, 2),
        "served_s": round((served - t_edit) / 1e9, 2) if served else None,
        "steady_worst_ms": round(steady_worst / h.MS, 1),
        "worst_ms": round(worst / h.MS, 1),
        "failed": failed,
        "requests": ok + failed,
        "failures": failures,
        "memory": [(round((ns - t_edit) / 1e9, 3), round(k / 1024, 1)) for ns, k, _ in samples],
        "latency": [(round((a - t_edit) / 1e9, 3), round((b - a) / h.MS, 1), ok) for a, b, ok, _ in records],
    }
    r["ratio"] = round(r["peak_mib"] / r["steady_mib"], 2)
    RAW[tool].append(r)
    h.log(f"surge {tool}: steady {r['steady_mib']} MiB, peak {r['peak_mib']} ({r['ratio']}x), switch {r['switch_s']}s, "
          f"worst {r['worst_ms']}ms (steady {r['steady_worst_ms']}), {failed}/{ok + failed} failed")


RAW = {}


def scenario_surge():
    RAW.clear()
    tools = [x for x in C["tools"].split(",") if x]
    for i in range(C["rounds"]):
        for tool in tools[i % len(tools):] + tools[:i % len(tools)]:
            one_round(tool)
    plots = draw(tools)
    summary = {tool: {k: [r[k] for r in RAW[tool]] for k in
                      ("steady_mib", "peak_mib", "ratio", "switch_s", "served_s", "steady_worst_ms", "worst_ms", "failed", "requests")}
               for tool in tools}
    return {"config": C, "summary": summary, "plots": plots,
            "raw": {t: [{k: v for k, v in r.items() if k not in ("memory", "latency")} for r in rs] for t, rs in RAW.items()}}


def draw(tools):
    """The last round's samples, as two SVGs."""
    out = Path(C["plots"])
    out.mkdir(parents=True, exist_ok=True)
    mem = [(LABELS[t], [(x, y) for x, y in RAW[t][-1]["memory"]]) for t in tools if t in ("run", "surge1", "surge2", "hup")]
    lat = [(LABELS[t], [(x, y) for x, y, _ in RAW[t][-1]["latency"]]) for t in tools if t in ("hup", "auto", "run", "surge1", "reload")]
    w, mib = C["workers"], C["mib"]
    p1 = out / "rolling-memory.svg"
    p1.write_text(svg_plot.lines(mem, f"Memory across one deploy: {w} workers × {mib} MiB (total PSS, both masters)",
                                 "seconds after the deploy", "MiB", x_from=-1.0))
    p2 = out / "reload-latency.svg"
    p2.write_text(svg_plot.dots(lat, f"Request latency across one reload ({C['import']:g} s import, {w} workers)",
                                "seconds after the deploy", "ms", x_from=-1.0))
    return [str(p1), str(p2)]


def markdown_surge(s):
    rows = ["| deploy | peak / steady memory (MiB) | ratio | deploy → old gone | worst request (steady) | failed / requests |",
            "|---|---|---|---|---|---|"]
    for tool, f in s.get("summary", {}).items():
        def mm(values):
            vs = [v for v in values if v is not None]
            return "–" if not vs else (f"{min(vs)}" if min(vs) == max(vs) else f"{min(vs)}–{max(vs)}")
        rows.append(f"| {LABELS[tool]} | {mm(f['peak_mib'])} / {mm(f['steady_mib'])} | {mm(f['ratio'])}× | "
                    f"{mm(f['switch_s'])} s | {mm(f['worst_ms'])} ms ({mm(f['steady_worst_ms'])}) | "
                    f"{sum(f['failed'])} / {sum(f['requests'])} |")
    return ["", "### surge (issue 22): one deploy, 4 workers × 40 MiB", ""] + rows


