"""Scenario `rhythm`: save → SIGHUP latency when saves come in a rhythm (issue 11, item 5).

The stand-in master (bench/standin) records each SIGHUP; each tool watches its own copy of the
app. A train is BENCH_RHYTHM_SAVES saves of app.py, one every S seconds, for each S in
BENCH_RHYTHM_SPACINGS (0.4 s: a developer saving twice in a second; 1.6 s: isolated saves, each
one after the previous reload's verification has ended). A save's latency is the time from the
save to the first SIGHUP after it; the first save of a train (nothing before it) is left out.
If a tool sends fewer signals than saves, saves were coalesced (counted as `coalesced`).

Tools: `hupwatch watch --strategy hup --no-preflight --debounce D` (the same without
`--strategy` on a build that has no such flag), BENCH_HUPWATCH_ALT if set, and watchexec
`--debounce D -- kill -HUP PID`. Debounce D = BENCH_RHYTHM_DEBOUNCE_MS (50). Trains interleaved:
the tools' order rotates every round, the spacings alternate.
"""

import os
import statistics
import subprocess
import time

import harness as h

RHYTHM_CONFIG = {
    "spacings": [float(x) for x in os.environ.get("BENCH_RHYTHM_SPACINGS", "0.4,1.6").split(",") if x.strip()],
    "saves": h.env_int("BENCH_RHYTHM_SAVES", 9),
    "rounds": h.env_int("BENCH_RHYTHM_ROUNDS", 3),
    "debounce_ms": h.env_int("BENCH_RHYTHM_DEBOUNCE_MS", 50),
}
WATCHEXEC = "watchexec kill -HUP"


def watch_flags(binary):
    out = subprocess.run([binary, "watch", "--help"], capture_output=True, text=True, timeout=20).stdout
    flags = ["--no-preflight"]
    if "--strategy" in out:
        flags += ["--strategy", "hup"]
    return flags


def start_tool(tool, binary, j):
    d = RHYTHM_CONFIG["debounce_ms"]
    dir_ = h.make_app_dir(h.WORK / "rhythm" / f"t{j}")
    master = h.StandIn(f"rhythm-standin-{j}", dir_)
    if binary:
        w = h.hupwatch_watch(f"rhythm-hupwatch-{j}", binary, [
            "-w", dir_, "--debounce", f"{d}ms", "--pid", master.pid, "--verify-timeout", "10s",
            *watch_flags(binary)])
    else:
        w = h.watchexec(f"rhythm-watchexec-{j}", dir_, master.pid, debounce_ms=d)
        h.wait_quiet_watchexec(w, dir_)
    return {"dir": dir_, "master": master, "w": w, "lat": {s: [] for s in RHYTHM_CONFIG["spacings"]},
            "first": [], "saves": {s: 0 for s in RHYTHM_CONFIG["spacings"]},
            "hups": {s: 0 for s in RHYTHM_CONFIG["spacings"]}}


def train(setup, spacing, tag):
    """One train of saves `spacing` s apart: latencies (ns) of each save to the next SIGHUP."""
    master = setup["master"]
    before = len(master.hups())
    n = RHYTHM_CONFIG["saves"]
    start = h.now()
    t0s = []
    for k in range(n):
        rest = start + int(k * spacing * 1e9) - h.now()
        if rest > 0:
            time.sleep(rest / 1e9)
        t0s.append(h.write_app(setup["dir"], f"{tag}-{k:02d}"))
    # The last save's signal, then quiet: any verification still running ends (settle 1 s).
    h.wait_until(lambda: any(t > t0s[-1] for t in master.hups()[before:]), 15, step=0.002,
                 what="the last save's SIGHUP")
    time.sleep(2.0)
    hups = master.hups()[before:]
    lat = []
    for t0 in t0s:
        after = [t for t in hups if t > t0]
        lat.append(after[0] - t0 if after else None)
    return lat, len(hups)


def scenario_rhythm():
    C = RHYTHM_CONFIG
    tools = {"hupwatch": h.CONFIG["hupwatch"]}
    if h.CONFIG["hupwatch_alt"]:
        tools[h.CONFIG["hupwatch_alt_label"]] = h.CONFIG["hupwatch_alt"]
    tools[WATCHEXEC] = None
    if not os.access(h.CONFIG["watchexec"], os.X_OK):
        h.note("rhythm: no watchexec binary (BENCH_WATCHEXEC): its rows are skipped")
        del tools[WATCHEXEC]
    setups = {tool: start_tool(tool, binary, j) for j, (tool, binary) in enumerate(tools.items())}
    names = list(tools)
    for i in range(C["rounds"]):
        order = names[i % len(names):] + names[: i % len(names)]
        spacings = C["spacings"] if i % 2 == 0 else list(reversed(C["spacings"]))
        for tool in order:
            s = setups[tool]
            for spacing in spacings:
                lat, hups = train(s, spacing, f"m{i:02d}{spacing:g}")
                s["first"].append(lat[0])
                s["lat"][spacing] += [x for x in lat[1:] if x is not None]
                s["saves"][spacing] += len(lat)
                s["hups"][spacing] += hups
                ok = [x / h.MS for x in lat[1:] if x is not None]
                h.log(f"rhythm: {tool}, saves {spacing:g}s apart, round {i + 1}: median "
                      f"{statistics.median(ok):.1f} ms, {hups} signals for {len(lat)} saves")
    d = C["debounce_ms"]
    res = {"config": dict(C), "tools": {}}
    for tool, s in setups.items():
        res["tools"][tool] = {}
        for spacing in C["spacings"]:
            ms = [x / h.MS for x in s["lat"][spacing]]
            res["tools"][tool][f"{spacing:g}"] = {
                "n": len(ms),
                "median_ms": round(statistics.median(ms), 2),
                "p90_ms": round(h.pct(ms, 90), 2),
                "max_ms": round(max(ms), 2),
                "overhead_median_ms": round(statistics.median(ms) - d, 2),
                "overhead_p90_ms": round(h.pct(ms, 90) - d, 2),
                "saves": s["saves"][spacing],
                "signals": s["hups"][spacing],
                "coalesced": s["saves"][spacing] - s["hups"][spacing],
                "samples_ms": [round(x, 2) for x in ms],
            }
        first = [x / h.MS for x in s["first"] if x is not None]
        res["tools"][tool]["first_save_median_ms"] = round(statistics.median(first), 2)
        s["w"].stop()
        s["master"].child.stop()
    return res


def markdown_rhythm(r):
    c = r["config"]
    sp = [f"{x:g}" for x in c["spacings"]]
    L = ["", f"Save rhythm: save → SIGHUP, debounce {c['debounce_ms']} ms, trains of {c['saves']} saves "
             f"(the first left out), {c['rounds']} rounds: median / p90 (overhead above the debounce)", "",
         "| tool | " + " | ".join(f"saves {x} s apart" for x in sp) + " | signals / saves |",
         "|---|" + "---|" * len(sp) + "---|"]
    for tool, x in r["tools"].items():
        cells = [f"{x[s]['median_ms']:g} / {x[s]['p90_ms']:g} ms (+{x[s]['overhead_median_ms']:g} / "
                 f"+{x[s]['overhead_p90_ms']:g})" for s in sp]
        counts = ", ".join(f"{x[s]['signals']}/{x[s]['saves']}" for s in sp)
        L.append(f"| {tool} | " + " | ".join(cells) + f" | {counts} |")
    return L
