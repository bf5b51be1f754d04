"""The `stall` scenario's tools and its memory sampler (bench/stall.py runs the rounds).

  Target     one Gunicorn master per reload method (`hupwatch reload --strategy S`, or
             `gunicorn --reload`), with its own app dir, pidfile and port;
  RunTarget  `hupwatch run --watch APPDIR --debounce 50ms -- GUNICORN -w W -b 127.0.0.1:PORT app:app`:
             hupwatch starts and serves the app itself, and picks up the edit with its own watch;
  RssSampler the total RSS of a tool's process tree (sum of VmRSS over hupwatch and every Gunicorn
             process of the tool, and whatever else hupwatch started: the preflight's Python, `run`'s
             `sh` shim before its exec) every BENCH_STALL_RSS_MS (50 ms), in a thread; the Gunicorn
             processes' share (comm `gunicorn…`, as setproctitle titles them) is kept too.
"""

import os
import re
import subprocess
import threading
from pathlib import Path

import harness as h

GUNICORN_RELOAD = "gunicorn --reload"
RUN = "run"


def write_slow_app(dir_, delay, version):
    """An editor's save of the app whose import sleeps `delay` s. The time before the open."""
    return h.write_app(dir_, version, prefix=f"import time\ntime.sleep({delay!r})\n")


def supported_strategies(binary):
    """The --strategy values `hupwatch reload --help` lists, plus `run` if the binary has it."""
    out = subprocess.run([binary, "reload", "--help"], capture_output=True, text=True, timeout=20).stdout
    line = next((l for l in out.splitlines() if "--strategy" in l), "")
    m = re.search(r"\[possible values: ([^\]]+)\]", line)
    known = [v.strip() for v in m.group(1).split(",")] if m else []
    if subprocess.run([binary, "run", "--help"], capture_output=True, timeout=20).returncode == 0:
        known.append(RUN)
    return known


def tree(roots):
    """Every live process under `roots` (children of every thread, recursively), roots included."""
    seen, todo = set(), [p for p in roots if p]
    while todo:
        pid = todo.pop()
        if pid in seen or not os.path.exists(f"/proc/{pid}"):
            continue
        seen.add(pid)
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                todo += [int(x) for x in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
            except OSError:
                pass
    return seen


def read_pid(path):
    try:
        return int(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None


def name_rss(pid):
    """(Name, VmRSS KiB) from /proc/PID/status; ("", 0) once gone (a zombie has no VmRSS)."""
    try:
        fields = dict(l.split(":", 1) for l in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in l)
    except OSError:
        return "", 0
    return fields.get("Name", "").strip(), h.kib(fields.get("VmRSS", "").strip() or None) or 0


class RssSampler:
    """Every `step` s: (t ns, total VmRSS KiB, process count, Gunicorn processes' KiB) over
    tree(roots()). `roots` is called at each sample, so a master that replaced itself (USR2) is
    followed via its pidfile."""

    def __init__(self, roots, step):
        self.roots, self.step = roots, step
        self.samples = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopping.is_set():
            t = h.now()
            total = gunicorn = 0
            pids = tree(self.roots())
            for p in pids:
                name, rss = name_rss(p)
                total += rss
                if name.startswith("gunicorn"):
                    gunicorn += rss
            self.samples.append((t, total, len(pids), gunicorn))
            self.stopping.wait(self.step)

    def stop(self):
        self.stopping.set()
        self.thread.join(5)
        return list(self.samples)


def rss_in(samples, start, end):
    """[(KiB, processes, Gunicorn KiB)] of the samples taken in [start, end]."""
    return [x[1:] for x in samples if start <= x[0] <= end]


class Target:
    """One reload method's Gunicorn (its own app dir, pidfile and port)."""

    def __init__(self, tool, delay, j, workers):
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
        self.g = h.Gunicorn(f"stall-{delay:g}-{j}", self.dir, extra=extra, workers=workers, titled_by_name=False)
        self.port = self.g.port
        self.oneshot_pid = None  # the `hupwatch reload` process while it runs
        self.rounds = []

    def roots(self):
        return [read_pid(self.pidfile), self.oneshot_pid]

    def stop(self):
        self.g.child.stop()  # an upgraded master is in the first master's process group too


class RunTarget:
    """`hupwatch run`: it binds the port, starts generation 1 and deploys each settled change."""

    GENERATION_UP = r"generation (\d+) serving \(master \d+\): \d+ workers booted in (\d+)ms"
    GENERATION_GONE = r"generation (\d+) \(master \d+\) stopped in (\d+)ms"

    def __init__(self, tool, delay, j, workers, binary):
        self.tool, self.delay = tool, delay
        base = h.WORK / "stall" / f"i{delay:g}-t{j}"
        self.dir = h.make_app_dir(base / "app", extra_modules=0)
        write_slow_app(self.dir, delay, "s00000")
        self.port = h.free_port()
        self.command = [binary, "run", "--watch", self.dir, "--debounce", "50ms", "--",
                        h.GUNICORN, "-w", str(workers), "-b", f"127.0.0.1:{self.port}", "app:app"]
        env = {"PYTHONDONTWRITEBYTECODE": "1", "PWD": str(self.dir)}
        self.child = h.Child(f"stall-run-{delay:g}", self.command, cwd=self.dir, env=env)
        self.child.wait_line(r"watching \d+ director", timeout=30)
        self.child.wait_line(self.GENERATION_UP, timeout=4 * delay + 30, fail=r"ERROR")
        h.wait_until(lambda: h.http_body(self.port), 15, step=0.05, what="hupwatch run serving")
        self.oneshot_pid = None
        self.rounds = []

    def roots(self):
        return [self.child.pid]

    def stop(self):
        self.child.stop(grace=15.0)
