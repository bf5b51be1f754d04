#!/usr/bin/env python3
"""The machine's floor for any inotify-based watcher: write → a reader blocked in read(2) on an
inotify fd is running again (a separate process, ctypes, nothing else). On this 2-core VM an idle
vCPU takes ~0.6 ms to wake; hupwatch and watchexec pay it at least once per save."""
import ctypes
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

if sys.argv[1:2] == ["reader"]:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    fd = libc.inotify_init()
    libc.inotify_add_watch(fd, sys.argv[2].encode(), 0x2 | 0x8)  # IN_MODIFY | IN_CLOSE_WRITE
    out = open(sys.argv[3], "w", buffering=1)
    print("ready", flush=True)
    while True:
        os.read(fd, 4096)
        out.write(f"{time.monotonic_ns()}\n")
d = tempfile.mkdtemp(prefix="inotify-wake.")
times = os.path.join(d, "times")
os.mkdir(os.path.join(d, "w"))
open(times, "w").close()
r = subprocess.Popen([sys.executable, __file__, "reader", os.path.join(d, "w"), times], stdout=subprocess.PIPE)
try:
    r.stdout.readline()
    lat = []
    for i in range(int(os.environ.get("N", "40"))):
        n = len(open(times).read().split())
        t0 = time.monotonic_ns()
        fd = os.open(os.path.join(d, "w", "f.py"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.write(fd, b"x")
        os.close(fd)
        time.sleep(0.05)
        lat.append((int(open(times).read().split()[n]) - t0) / 1e6)
        time.sleep(0.1)
    lat.sort()
    print(f"write → inotify reader running: median {statistics.median(lat):.3f} ms, "
          f"p90 {lat[int(len(lat) * 0.9)]:.3f} ms, min {lat[0]:.3f} ms (n={len(lat)})")
finally:
    r.kill()
    r.wait()
    shutil.rmtree(d, ignore_errors=True)
