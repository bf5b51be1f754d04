#!/usr/bin/env python3
"""Why hupwatch asks inotify for IN_CLOSE_WRITE and not IN_OPEN/IN_MODIFY (src/watch/inotify_reader.rs).

A bare reader (a separate Python process blocked in read(2)) watches a directory with three
masks in turn; the writer saves a file as an editor does (open O_TRUNC, write, close) 30 times per
mask. The figure is write start → the reader has read the IN_CLOSE_WRITE that says the save is
whole. Every earlier event (the open, the truncate, the write) is a wake-up that sets the save
back. Usage: inotify_mask.py (about 1 minute)."""
import ctypes, os, shutil, statistics, subprocess, sys, tempfile, time, struct
if sys.argv[1:2] == ["reader"]:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    fd = libc.inotify_init()
    libc.inotify_add_watch(fd, sys.argv[2].encode(), int(sys.argv[4]))
    out = open(sys.argv[3], "w", buffering=1)
    print("ready", flush=True)
    while True:
        buf = os.read(fd, 4096)
        t = time.monotonic_ns()
        i = 0; masks = []
        while i < len(buf):
            wd, mask, cookie, ln = struct.unpack_from("iIII", buf, i); masks.append(mask); i += 16 + ln
        out.write(f"{t} {' '.join(hex(m) for m in masks)}\n")
IN_MODIFY, IN_CLOSE_WRITE, IN_OPEN = 0x2, 0x8, 0x20
for label, mask in [("open|modify|close", IN_OPEN|IN_MODIFY|IN_CLOSE_WRITE), ("modify|close", IN_MODIFY|IN_CLOSE_WRITE), ("close", IN_CLOSE_WRITE)]*2:
    d = tempfile.mkdtemp(prefix="mask.")
    times = os.path.join(d, "times"); os.mkdir(os.path.join(d, "w")); open(times, "w").close()
    f = os.path.join(d, "w", "app.py"); open(f, "w").write("x")
    r = subprocess.Popen([sys.executable, __file__, "reader", os.path.join(d, "w"), times, str(mask)], stdout=subprocess.PIPE)
    r.stdout.readline(); time.sleep(0.5)
    lat = []
    for i in range(30):
        n = len(open(times).read().splitlines())
        t0 = time.monotonic_ns()
        fd = os.open(f, os.O_WRONLY | os.O_TRUNC); os.write(fd, b"V = %d\n" % i); os.close(fd)
        while True:
            ls = open(times).read().splitlines()[n:]
            done = [l for l in ls if "0x8" in l.split()[1:]]
            if done: break
            time.sleep(0.002)
        lat.append((int(done[0].split()[0]) - t0) / 1e6)
        time.sleep(0.3)
    r.kill(); shutil.rmtree(d)
    print(f"{label:20s} write→CLOSE_WRITE read: median {statistics.median(lat):.3f} ms p90 {sorted(lat)[26]:.3f}")
