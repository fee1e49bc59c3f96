#!/usr/bin/env python3
"""The one RSS estimator of compare.sh, shared-bench.sh and full-run.sh.

  rss.py sample PID                 prints "CLOCK_MONOTONIC-ns VmRSS-kB" 4 times a second until PID ends
  rss.py fit [--json OUT] REPORT SAMPLES [REPORT SAMPLES ...]

A run for RSS starts its viewers in equal steps (`loadtest viewers --steps K --hold T`): step k
brings the count to (k+1)/K of the sessions, and each count is held for the same time T. The
system's RSS at a count is the median of its samples over the second half of that step's hold
(the starts of the step are over, and every count is read at the same age), against the viewers
playing then (the report's per-second series). A least-squares line through those points gives a
fixed cost and a per-viewer slope. With several runs (the repeats of one system), each run is
fitted alone and the spread (min-max) of its fixed costs and slopes is printed beside the fit
of all points together; within one run, the slope's standard error.
"""
import json
import statistics
import sys
import time


def sample(pid):
    while True:
        try:
            with open(f"/proc/{pid}/status") as f:
                rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
        except (OSError, StopIteration):
            return
        print(time.monotonic_ns(), rss, flush=True)
        time.sleep(0.25)


def points(report_path, samples_path):
    """(viewers, RSS kB) per step of one run."""
    r = json.load(open(report_path))
    steps, hold = r.get("steps") or 1, r.get("hold_s") or 0
    if steps < 2 or hold <= 0:
        return []
    samples = [tuple(map(int, l.split())) for l in open(samples_path) if l.strip()]
    series = r.get("throughput", [])
    out = []
    for k in range(steps):
        lo = r["epoch_ns"] + int((k + 0.5) * hold * 1e9)
        hi = r["epoch_ns"] + int((k + 1) * hold * 1e9)
        rss = [v for t, v in samples if lo <= t <= hi]
        # The series' second t covers (t-1, t] seconds after the epoch.
        playing = [s["playing"] for s in series if lo <= r["epoch_ns"] + s["t"] * 1_000_000_000 <= hi]
        if rss and playing:
            out.append((statistics.median(playing), statistics.median(rss)))
    return out


def line(pts):
    """Least squares: (fixed kB, slope kB/viewer, slope standard error or None)."""
    n = len(pts)
    if n < 2 or len({x for x, _ in pts}) < 2:
        return None
    mx, my = sum(x for x, _ in pts) / n, sum(y for _, y in pts) / n
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    slope = sum((x - mx) * (y - my) for x, y in pts) / sxx
    fixed = my - slope * mx
    se = None
    if n > 2:
        resid = sum((y - fixed - slope * x) ** 2 for x, y in pts)
        se = (resid / (n - 2) / sxx) ** 0.5
    return fixed, slope, se


def fit(args):
    out = None
    if args[:1] == ["--json"]:
        out, args = args[1], args[2:]
    runs = [points(args[i], args[i + 1]) for i in range(0, len(args) - 1, 2)]
    per_run = [f for f in map(line, runs) if f]
    every = line([p for r in runs for p in r])
    result = dict(points=runs, fixed_kb=None, kb_per_viewer=None, runs=len(per_run))
    if every:
        result.update(fixed_kb=every[0], kb_per_viewer=every[1], kb_per_viewer_se=every[2])
    if per_run:
        result.update(
            kb_per_viewer_min=min(f[1] for f in per_run), kb_per_viewer_max=max(f[1] for f in per_run),
            fixed_kb_min=min(f[0] for f in per_run), fixed_kb_max=max(f[0] for f in per_run))
    if out:
        json.dump(result, open(out, "w"), indent=2)
    print(text(result))


def text(r):
    """One line: the fit, and its spread over runs (or its standard error within one run)."""
    if r["kb_per_viewer"] is None:
        return "n/a (no stepped run: loadtest viewers --steps K --hold T)"
    s = f"{r['fixed_kb'] / 1024:.1f} MB + {r['kb_per_viewer']:.1f} KB/viewer"
    if r["runs"] > 1:
        s += (f" (over {r['runs']} runs: {r['fixed_kb_min'] / 1024:.1f}-{r['fixed_kb_max'] / 1024:.1f} MB,"
              f" {r['kb_per_viewer_min']:.1f}-{r['kb_per_viewer_max']:.1f} KB/viewer)")
    elif r.get("kb_per_viewer_se") is not None:
        s += f" (+/- {r['kb_per_viewer_se']:.1f} KB/viewer, one run)"
    return s


if __name__ == "__main__":
    if sys.argv[1:2] == ["sample"]:
        sample(sys.argv[2])
    elif sys.argv[1:2] == ["fit"]:
        fit(sys.argv[2:])
    else:
        sys.exit(__doc__)
