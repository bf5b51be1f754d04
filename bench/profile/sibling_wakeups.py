#!/usr/bin/env python3
"""Wake-ups of an otherwise idle `hupwatch watch -w ROOT` caused by file activity that can never
be a change: reads inside ROOT, and appends/reads of a file *beside* ROOT (a log next to the
code). notify 8.2 arms every inotify watch with IN_OPEN and IN_MODIFY, and hupwatch also watches
ROOT's parent directory, so each of these wakes its event thread. Usage: sibling_wakeups.py [BIN]"""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

H = sys.argv[1] if len(sys.argv) > 1 else "/tmp/bench-target/bench-bin/hupwatch"
d = tempfile.mkdtemp(prefix="hupwatch-siblings.")
os.mkdir(f"{d}/app")
open(f"{d}/app/app.py", "w").write("V = 1\n")
open(f"{d}/notes.txt", "w").write("x\n")
h = subprocess.Popen([H, "watch", "-w", f"{d}/app", "--no-preflight", "--pid", "999999"],
                     stderr=subprocess.DEVNULL, start_new_session=True)
try:
    time.sleep(1)

    def switches():
        total = 0
        for tid in os.listdir(f"/proc/{h.pid}/task"):
            for line in open(f"/proc/{h.pid}/task/{tid}/status"):
                if "ctxt_switches" in line:
                    total += int(line.split()[1])
        return total

    def cpu_ns():
        return sum(int(open(f"/proc/{h.pid}/task/{t}/schedstat").read().split()[0])
                   for t in os.listdir(f"/proc/{h.pid}/task"))

    def append_held_open():
        with open(f"{d}/app/events.txt", "a") as f:
            for _ in range(1000):
                f.write("event\n")
                f.flush()

    open(f"{d}/app/events.txt", "w").close()
    time.sleep(0.3)
    cases = [
        ("idle 2 s", lambda: time.sleep(2)),
        ("1000 appends to ../access.log (beside the root)",
         lambda: [open(f"{d}/access.log", "a").write("GET /\n") for _ in range(1000)]),
        ("1000 reads of ../notes.txt (beside the root)", lambda: [open(f"{d}/notes.txt").read() for _ in range(1000)]),
        ("1000 reads of app/app.py (inside the root)", lambda: [open(f"{d}/app/app.py").read() for _ in range(1000)]),
        ("1000 flushed appends to app/events.txt, held open", append_held_open),
    ]
    for label, act in cases:
        s, c = switches(), cpu_ns()
        act()
        time.sleep(0.3)
        print(f"{label:50s} +{switches() - s:5d} context switches, {(cpu_ns() - c) / 1e6:6.1f} ms CPU")
finally:
    os.killpg(h.pid, signal.SIGTERM)
    h.wait(5)
    shutil.rmtree(d, ignore_errors=True)
