#!/usr/bin/env python3
"""Where save-to-signal time goes inside `hupwatch watch` (no tracer attached).

Runs a stand-in master and `hupwatch -v watch --debounce 100ms`, saves N times, and splits each
save → SIGHUP latency with hupwatch's own debug log (microsecond wall-clock timestamps, mapped
to CLOCK_MONOTONIC): save → first `change` handled by the main loop; last change → `sent
SIGHUP` (debounce + timer lateness + discovery + identity check); sent → signal arrived in the
stand-in. Usage: save_breakdown.py [HUPWATCH_BINARY] (N=12 rounds by default, env N).
"""
import datetime
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
H = sys.argv[1] if len(sys.argv) > 1 else "/tmp/bench-target/bench-bin/hupwatch"
PY = os.environ.get("BENCH_VENV", "/tmp/bench-venv") + "/bin/python3"
work = Path(tempfile.mkdtemp(prefix="hupwatch-breakdown."))
procs = []
try:
    (work / "app").mkdir()
    (work / "logs").mkdir()
    (work / "app" / "app.py").write_text("V = 0\n")
    hups = work / "logs" / "hups"
    hups.write_text("")
    m = subprocess.Popen([PY, str(HERE.parent / "standin/bin/gunicorn"), "--workers", "1", "app:app"],
                         cwd=work / "app", env=dict(os.environ, BENCH_HUP_LOG=str(hups)), start_new_session=True)
    procs.append(m)
    time.sleep(0.5)
    log = open(work / "logs" / "hw.log", "w")
    h = subprocess.Popen([H, "-v", "watch", "-w", str(work / "app"), "--debounce", "100ms", "--no-preflight",
                          "--pid", str(m.pid)], stderr=log, start_new_session=True, env=dict(os.environ, NO_COLOR="1"))
    procs.append(h)
    time.sleep(1)
    off = time.time_ns() - time.monotonic_ns()
    rows = []
    for i in range(int(os.environ.get("N", "12"))):
        n = len(hups.read_text().splitlines())
        t0 = time.monotonic_ns()
        fd = os.open(work / "app" / "app.py", os.O_WRONLY | os.O_TRUNC)
        os.write(fd, f"V = {i}\n".encode())
        os.close(fd)
        while len(hups.read_text().splitlines()) == n:
            time.sleep(0.002)
        rows.append((t0, int(hups.read_text().splitlines()[n].split()[1])))
        time.sleep(1.5)
    time.sleep(0.2)

    def ts(line):
        stamp = line.split()[0].rstrip("Z")
        base, frac = stamp.split(".")
        d = datetime.datetime.fromisoformat(base).replace(tzinfo=datetime.timezone.utc)
        return int(d.timestamp()) * 10**9 + int(frac.ljust(9, "0")[:9]) - off

    lines = (work / "logs" / "hw.log").read_text().splitlines()
    changes = [ts(l) for l in lines if "DEBUG" in l and " change" in l]
    sents = [ts(l) for l in lines if "sent SIGHUP" in l]
    cols = {"save → first change in loop": [], "last change → sent (−100 ms debounce)": [],
            "sent → arrived": [], "total − debounce": []}
    for t0, t in rows:
        ch = [x for x in changes if t0 <= x <= t]
        se = [x for x in sents if t0 <= x <= t + 5_000_000]
        if not ch or not se:
            continue
        cols["save → first change in loop"].append((ch[0] - t0) / 1e6)
        cols["last change → sent (−100 ms debounce)"].append((se[0] - ch[-1]) / 1e6 - 100)
        cols["sent → arrived"].append((t - se[0]) / 1e6)
        cols["total − debounce"].append((t - t0) / 1e6 - 100)
    for k, v in cols.items():
        print(f"{k:40s} median {statistics.median(v):7.3f} ms   max {max(v):7.3f} ms   (n={len(v)})")
finally:
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        p.wait(5)
    shutil.rmtree(work, ignore_errors=True)
