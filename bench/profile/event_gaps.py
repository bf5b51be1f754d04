#!/usr/bin/env python3
"""How long are the silences inside one change? The figure behind hupwatch's default debounce.

A bare inotify reader (ctypes, the mask hupwatch uses: CLOSE_WRITE, ATTRIB, CREATE, DELETE,
MOVED_FROM/TO, DELETE_SELF, MOVE_SELF; `.git/` not watched, as hupwatch's default excludes
do) stamps every event as it is read; for each operation it reports the largest gap between
two consecutive events (what a trailing quiet period must outlast, or one change becomes two
reloads) and the operation's whole span. Operations, each repeated ROUNDS times:

  atomic-save   an editor's atomic save: write `.app.py.tmp`, fsync, rename over `app.py`
  git-checkout  `git checkout` between two branches that differ in 200 files (both ways)
  rsync         `rsync -a` of a 3,000-file tree over the watched copy (every file changed)

  python3 bench/profile/event_gaps.py [ROUNDS]      # prints a table and JSON
"""

import ctypes
import json
import os
import select
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

IN_CLOSE_WRITE, IN_ATTRIB, IN_CREATE, IN_DELETE = 0x8, 0x4, 0x100, 0x200
IN_MOVED_FROM, IN_MOVED_TO, IN_DELETE_SELF, IN_MOVE_SELF = 0x40, 0x80, 0x400, 0x800
IN_ISDIR, IN_EXCL_UNLINK = 0x40000000, 0x04000000
MASK = (IN_CLOSE_WRITE | IN_ATTRIB | IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO
        | IN_DELETE_SELF | IN_MOVE_SELF | IN_EXCL_UNLINK)
libc = ctypes.CDLL(None, use_errno=True)


class Reader:
    def __init__(self, root):
        self.fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        self.wds = {}
        self.stamps = []
        self.lock = threading.Lock()
        self.stop = False
        self.add_tree(root)
        threading.Thread(target=self.run, daemon=True).start()

    def add(self, path):
        wd = libc.inotify_add_watch(self.fd, path.encode(), MASK)
        if wd >= 0:
            self.wds[wd] = path

    def add_tree(self, root):
        for dirpath, dirnames, _ in os.walk(root):
            dirnames[:] = [d for d in dirnames if d != ".git"]
            self.add(dirpath)

    def run(self):
        while not self.stop:
            r, _, _ = select.select([self.fd], [], [], 0.05)
            if not r:
                continue
            t = time.monotonic()
            try:
                buf = os.read(self.fd, 1 << 20)
            except BlockingIOError:
                continue
            i = 0
            while i < len(buf):
                wd, mask, _, length = struct.unpack_from("iIII", buf, i)
                name = buf[i + 16:i + 16 + length].rstrip(b"\0").decode(errors="replace")
                i += 16 + length
                if mask & IN_ISDIR and mask & (IN_CREATE | IN_MOVED_TO) and name != ".git":
                    self.add_tree(os.path.join(self.wds.get(wd, ""), name))
                with self.lock:
                    self.stamps.append(t)

    def take(self, settle=1.0):
        """Stamps of one operation: waits until `settle` s pass without an event."""
        while True:
            with self.lock:
                n = len(self.stamps)
                last = self.stamps[-1] if self.stamps else None
            if last is not None and time.monotonic() - last > settle:
                break
            time.sleep(0.05)
        with self.lock:
            stamps, self.stamps = self.stamps[:n], self.stamps[n:]
        return stamps


def gaps(stamps):
    return [b - a for a, b in zip(stamps, stamps[1:])] or [0.0]


def sh(*args, cwd=None):
    subprocess.run(args, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def measure(name, rounds, root, op):
    reader = Reader(root)
    out = []
    for r in range(rounds):
        op(r)
        s = reader.take()
        g = gaps(s)
        out.append({"events": len(s), "max_gap_ms": max(g) * 1e3, "span_ms": (s[-1] - s[0]) * 1e3,
                    # a quiet period that is short only while a burst is small must outlast these
                    "max_gap_first_8_ms": max(g[:7]) * 1e3})
    reader.stop = True
    worst = [o["max_gap_ms"] for o in out]
    print(f"{name:13} rounds {rounds}: events {statistics.median(o['events'] for o in out):.0f}, "
          f"largest gap median {statistics.median(worst):.1f} ms, max {max(worst):.1f} ms; "
          f"span median {statistics.median(o['span_ms'] for o in out):.0f} ms; "
          f"largest gap among the first 8 events max {max(o['max_gap_first_8_ms'] for o in out):.1f} ms", flush=True)
    return {"rounds": out, "max_gap_ms_median": statistics.median(worst), "max_gap_ms_max": max(worst)}


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    work = tempfile.mkdtemp(prefix="event-gaps.")
    res = {"loadavg": open("/proc/loadavg").read().split()[:3]}
    try:
        # 1. atomic save
        app = os.path.join(work, "save")
        os.makedirs(app)
        open(os.path.join(app, "app.py"), "w").write("x = 0\n")

        def save(r):
            tmp = os.path.join(app, ".app.py.tmp")
            with open(tmp, "w") as f:
                f.write(f"x = {r}\n" * 200)
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, os.path.join(app, "app.py"))
        res["atomic-save"] = measure("atomic-save", rounds, app, save)

        # 2. git checkout of 200 changed files, both ways
        repo = os.path.join(work, "repo")
        os.makedirs(repo)
        sh("git", "init", "-q", "-b", "a", cwd=repo)
        for d in range(20):
            os.makedirs(os.path.join(repo, f"pkg{d}"))
            for f in range(10):
                open(os.path.join(repo, f"pkg{d}", f"m{f}.py"), "w").write(f"A = {d * 10 + f}\n" * 50)
        sh("git", "add", "-A", cwd=repo)
        sh("git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "a", cwd=repo)
        sh("git", "checkout", "-qb", "b", cwd=repo)
        for d in range(20):
            for f in range(10):
                open(os.path.join(repo, f"pkg{d}", f"m{f}.py"), "w").write(f"B = {d * 10 + f}\n" * 50)
        sh("git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qam", "b", cwd=repo)
        res["git-checkout"] = measure("git-checkout", rounds, repo,
                                      lambda r: sh("git", "checkout", "-q", "a" if r % 2 == 0 else "b", cwd=repo))

        # 3. rsync -a of 3,000 files, every file changed each round
        if shutil.which("rsync"):
            src, dst = os.path.join(work, "src"), os.path.join(work, "dst")
            for base in (src, dst):
                for d in range(60):
                    os.makedirs(os.path.join(base, f"d{d}"))
            def fill(r):
                for d in range(60):
                    for f in range(50):
                        open(os.path.join(src, f"d{d}", f"f{f}.py"), "w").write(f"V = {r}\n" * (20 + r))
            fill(0)
            sh("rsync", "-a", src + "/", dst + "/")

            def sync(r):
                fill(r + 1)
                sh("rsync", "-a", src + "/", dst + "/")
            res["rsync"] = measure("rsync", rounds, dst, sync)
        else:
            print("rsync not installed: skipped")
        res["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
        print(json.dumps(res))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
