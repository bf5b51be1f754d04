"""The benchmark's shared harness: configuration (BENCH_* environment variables), the one work
directory, the children (each in its own process group) and the helpers that start and watch
them: apps, the stand-in master, Gunicorn, hupwatch, watchexec, HTTP probes, statistics.

bench.py (the entry point) and the scenarios kept in files of their own (rhythm.py, stall.py,
stall_tools.py, surge.py) import it (`import harness as h`); it imports none of them. One
harness: one work directory, one list of children to stop (bench.py's `cleanup` at exit).
"""

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def env_int(name, default):
    return int(os.environ.get(name, default))


CONFIG = {
    "hupwatch": os.environ.get("BENCH_HUPWATCH", "/tmp/bench-target/release/hupwatch"),
    "hupwatch_settle": os.environ.get("BENCH_HUPWATCH_SETTLE", ""),
    "hupwatch_settle_label": os.environ.get("BENCH_HUPWATCH_SETTLE_LABEL", "SWAP_SETTLE flipped"),
    "hupwatch_alt": os.environ.get("BENCH_HUPWATCH_ALT", ""),
    "hupwatch_alt_label": os.environ.get("BENCH_HUPWATCH_ALT_LABEL", "hupwatch (alt build)"),
    "watchexec": os.environ.get("BENCH_WATCHEXEC", "/tmp/bench-tools/bin/watchexec"),
    "floor": os.environ.get("BENCH_FLOOR", ""),
    "venv": os.environ.get("BENCH_VENV", "/tmp/bench-venv"),
    "venv_inotify": os.environ.get("BENCH_VENV_INOTIFY", "/tmp/bench-venv-inotify"),
    "defaults_rounds": env_int("BENCH_DEFAULTS", 8),
    "defaults_alt_debounce": os.environ.get("BENCH_DEFAULTS_ALT_DEBOUNCE", "100ms"),
    "defaults_saves": os.environ.get("BENCH_DEFAULTS_SAVES", "inplace,atomic"),
    "scenarios": os.environ.get("BENCH_SCENARIOS", "tree,discovery,save,swap,e2e,oneshot,defaults,stall,rhythm"),
    "debounce_ms": env_int("BENCH_DEBOUNCE_MS", 100),
    "saves": env_int("BENCH_SAVES", 30),
    "swaps": env_int("BENCH_SWAPS", 30),
    "swaps_preflight": env_int("BENCH_SWAPS_PREFLIGHT", 10),
    "e2e_rounds": env_int("BENCH_E2E", 15),
    "oneshot_rounds": env_int("BENCH_ONESHOT", 8),
    "poll_ms": env_int("BENCH_POLL_MS", 5),
    "files": env_int("BENCH_FILES", 100_000),
    "dirs": env_int("BENCH_DIRS", 2_000),
    "ready_rounds": env_int("BENCH_READY_ROUNDS", 3),
    "idle_secs": env_int("BENCH_IDLE_SECS", 60),
    "procs": env_int("BENCH_PROCS", 2_000),
    "discovery_runs": env_int("BENCH_DISCOVERY_RUNS", 20),
    "out": os.environ.get("BENCH_OUT", str(HERE / "results")),
    "keep": os.environ.get("BENCH_KEEP", "") not in ("", "0"),
    "quiet_wait": env_int("BENCH_QUIET_WAIT", 90),
}
PYTHON = f"{CONFIG['venv']}/bin/python3"
GUNICORN = f"{CONFIG['venv']}/bin/gunicorn"
STANDIN = str(HERE / "standin" / "bin" / "gunicorn")
MS = 1_000_000

WORK = Path(tempfile.mkdtemp(prefix="hupwatch-bench.", dir="/tmp"))
LOGS = WORK / "logs"
LOGS.mkdir()
CHILDREN = []
RESULTS = {"config": CONFIG, "scenarios": {}, "notes": []}

# The scenarios measure the HUP path (save -> SIGHUP, swap, one-shot, ...): hupwatch's default
# strategy, `auto`, may choose an upgrade instead (always with --no-preflight, which measures no
# load time). `defaults` unsets this to measure the real defaults; `stall` passes --strategy.
os.environ.setdefault("HUPWATCH_STRATEGY", "hup")


def now():
    return time.monotonic_ns()


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def note(msg):
    log("NOTE: " + msg)
    RESULTS["notes"].append(msg)


# ---------------------------------------------------------------------------------------------
# Processes


class Child:
    """A child in its own process group, its stdout+stderr captured line by line with the
    monotonic time each line was read (or sent to a file when `logfile` is given)."""

    def __init__(self, name, args, cwd=None, env=None, logfile=None):
        self.name = name
        self.args = [str(a) for a in args]
        self.lines = []
        self.cv = threading.Condition()
        full_env = dict(os.environ)
        full_env.pop("HUPWATCH_CONFIG", None)
        for key, value in (env or {}).items():
            if value is None:
                full_env.pop(key, None)  # None: unset (e.g. to measure a tool's defaults)
            else:
                full_env[key] = value
        out = open(logfile, "ab") if logfile else subprocess.PIPE
        self.t_spawn = now()
        self.p = subprocess.Popen(
            self.args,
            cwd=cwd,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if logfile:
            out.close()
        CHILDREN.append(self)
        self.pid = self.p.pid
        if not logfile:
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        with open(LOGS / f"{self.name}.{self.pid}.log", "ab") as copy:
            for raw in self.p.stdout:
                t = now()
                copy.write(raw)
                copy.flush()
                with self.cv:
                    self.lines.append((t, raw.decode("utf-8", "replace").rstrip("\n")))
                    self.cv.notify_all()

    def mark(self):
        with self.cv:
            return len(self.lines)

    def wait_line(self, pattern, start=0, timeout=10.0, fail=None):
        """The first line from index `start` on matching `pattern` (regex): (index, t, text)."""
        rx, frx = re.compile(pattern), re.compile(fail) if fail else None
        deadline = time.monotonic() + timeout
        i = start
        with self.cv:
            while True:
                while i < len(self.lines):
                    t, text = self.lines[i]
                    if rx.search(text):
                        return i, t, text
                    if frx and frx.search(text):
                        raise RuntimeError(f"{self.name}: {text}")
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0 or self.p.poll() is not None:
                    tail = "\n".join(t for _, t in self.lines[-15:])
                    raise TimeoutError(f"{self.name}: no line /{pattern}/ (exit {self.p.poll()}):\n{tail}")
                self.cv.wait(min(left, 0.5))

    def stop(self, sig=signal.SIGTERM, grace=5.0):
        if self.p.poll() is None:
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.p.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        # The group may outlive its leader (workers); always sweep it.
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.p.wait(2)
        except subprocess.TimeoutExpired:
            pass
        if self in CHILDREN:
            CHILDREN.remove(self)


def children_of(pid):
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return set()
    return {int(x) for x in text.split()}


def wait_until(pred, timeout, step=0.005, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise TimeoutError(f"timed out waiting for {what}")


def kib(value):
    return int(value.split()[0]) if value else None


def inotify_watches(pid):
    """Watches held by every inotify fd of `pid` (lines `inotify wd:` in its fdinfo)."""
    total = 0
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return 0
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:inotify":
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}", "rb") as f:
                total += f.read().count(b"inotify wd:")
        except OSError:
            continue
    return total


# ---------------------------------------------------------------------------------------------
# Statistics


def pct(values, p):
    """Percentile by linear interpolation between closest ranks."""
    v = sorted(values)
    if not v:
        return None
    k = (len(v) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


# ---------------------------------------------------------------------------------------------
# Apps, stand-ins, Gunicorn


APP_TEMPLATE = """import os

VERSION = {version!r}


def app(environ, start_response):
    body = (VERSION + " pid=" + str(os.getpid()) + "\\n").encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""


def write_app(dir_, version, prefix=""):
    """An editor's save: truncate and rewrite app.py (`prefix` + the app). Returns the time just
    before the open."""
    path = Path(dir_) / "app.py"
    data = (prefix + APP_TEMPLATE.format(version=version)).encode()
    t0 = now()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, data)
    os.close(fd)
    return t0


def make_app_dir(dir_, version="r000000", extra_modules=20):
    dir_ = Path(dir_)
    (dir_ / "pkg").mkdir(parents=True, exist_ok=True)
    write_app(dir_, version)
    (dir_ / "pkg" / "__init__.py").write_text("")
    for i in range(extra_modules):
        (dir_ / "pkg" / f"mod{i}.py").write_text(f"X = {i}\n")
    return dir_


class StandIn:
    """The stand-in master (bench/standin/bin/gunicorn), timestamping each SIGHUP."""

    def __init__(self, name, cwd, chdir=None, env=None):
        self.hup_log = LOGS / f"{name}.hups"
        self.hup_log.write_text("")
        args = [PYTHON, STANDIN, "--workers", "1"]
        if chdir:
            args += ["--chdir", chdir]
        args += ["app:app"]
        e = {"BENCH_HUP_LOG": str(self.hup_log), "PWD": str(cwd)}
        e.update(env or {})
        self.child = Child(name, args, cwd=cwd, env=e)
        self.pid = self.child.pid
        wait_until(lambda: children_of(self.pid), 5, what=f"{name} worker")

    def hups(self):
        return [int(l.split()[1]) for l in self.hup_log.read_text().splitlines() if l.startswith("hup ")]

    def wait_hup(self, count_before, timeout=10.0):
        """The arrival time of HUP number count_before + 1."""
        got = wait_until(lambda: len(self.hups()) > count_before, timeout, step=0.002, what="SIGHUP")
        return self.hups()[count_before] if got else None


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def http_get(port, timeout=1.0):
    """One `GET /` over HTTP/1.0: (status line, body), or (None, the error) when no answer came."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError as e:
        return None, f"{type(e).__name__}: {e}"
    head, _, body = data.partition(b"\r\n\r\n")
    return head.split(b"\r\n", 1)[0].decode("latin-1"), body.decode("utf-8", "replace")


def http_body(port, timeout=1.0):
    status, body = http_get(port, timeout)
    return body if status is not None and status.startswith("HTTP/1.") else None


class Gunicorn:
    """A real Gunicorn 27.0.1 master (setproctitle installed, so titled) on 127.0.0.1."""

    def __init__(self, name, app_dir, extra=(), wrap=(), workers=1, titled_by_name=True, gunicorn=None,
                 control_socket=None):
        self.port = free_port()
        self.name = name
        self.workers = workers
        # Without --name the title is `gunicorn: master [app:app]`: the app spec, which is
        # what hupwatch's default preflight reads from a titled master.
        named = ["--name", name] if titled_by_name else []
        # Gunicorn >= 25.1 opens a control socket at one path per user by default, which every
        # master of the run would share: none, or one of the master's own (`control_socket`).
        ctl = ["--control-socket", str(control_socket)] if control_socket else ["--no-control-socket"]
        args = list(wrap) + [
            gunicorn or GUNICORN, *named, "--workers", str(workers),
            "--bind", f"127.0.0.1:{self.port}", *ctl, *extra, "app:app",
        ]
        env = {"PYTHONDONTWRITEBYTECODE": "1", "PWD": str(app_dir)}
        self.child = Child(name, args, cwd=app_dir, env=env, logfile=LOGS / f"{name}.gunicorn.log")
        wait_until(lambda: http_body(self.port), 15, step=0.05, what=f"{name} serving")
        self.pid = self.find_master()
        wait_until(lambda: len(self.workers_now()) == workers, 10, what=f"{name} workers")

    def find_master(self):
        if not self.child.args[0].endswith("unshare"):
            return self.child.pid
        # unshare --fork: the master is the child of the unshare process.
        return wait_until(lambda: next(iter(children_of(self.child.pid)), None), 5, what="master")

    def workers_now(self):
        return children_of(self.pid)

    def wait_replaced(self, old, timeout=15.0):
        wait_until(
            lambda: (lambda c: c and not (c & old) and len(c) >= self.workers)(self.workers_now()),
            timeout, step=0.01, what=f"{self.name} workers replaced",
        )


def hupwatch_watch(name, binary, args):
    child = Child(name, [binary, "watch", *args])
    child.wait_line(r"\bready\b", timeout=60)
    return child


def watchexec(name, dir_, pid, no_shell=False, debounce_ms=None):
    """`watchexec --postpone --debounce D -w DIR -- kill -HUP PID`. watchexec runs the command
    through $SHELL (else sh); SHELL=/bin/sh pins that to dash, whatever the caller's shell.
    `no_shell` adds `-n` (exec /usr/bin/kill directly). D: BENCH_DEBOUNCE_MS unless given."""
    d = CONFIG["debounce_ms"] if debounce_ms is None else debounce_ms
    args = [CONFIG["watchexec"], *(["-n"] if no_shell else []), "--postpone", "--debounce", f"{d}ms",
            "-w", dir_, "--", "kill", "-HUP", str(pid)]
    return Child(name, args, env={"SHELL": "/bin/sh"})


def wait_quiet_watchexec(child, dir_, timeout=10.0):
    """watchexec prints nothing when ready; it is when its watch is armed plus a grace."""
    wait_until(lambda: inotify_watches(child.pid) >= 1, timeout, what="watchexec watches")
    time.sleep(0.5)
