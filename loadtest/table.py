"""The cells the tables of compare.sh, shared-bench.sh and full-run.sh print, formatted one way."""
import statistics


def num(v, d=2):
    """A number with `d` decimals, or "n/a" when the run could not tell."""
    return "n/a" if v is None else f"{v:.{d}f}"


def spread(vals, d=2):
    """The median over runs with the range beside it: "median (min-max)"; one run prints alone."""
    vals = [v for v in vals if v is not None]
    if not vals:
        return "n/a"
    if len(vals) == 1:
        return num(vals[0], d)
    return f"{num(statistics.median(vals), d)} ({num(min(vals), d)}-{num(max(vals), d)})"


def paired(a_runs, b_runs, value):
    """`value(a) / value(b)` for the runs of two systems with the same repeat number (run i of
    one against run i of the other, measured minutes apart), skipping runs either lacks and
    values that are not positive (a per-viewer RSS slope lost in noise says nothing)."""
    b_by = {r["repeat"]: r for r in b_runs}
    out = []
    for a in a_runs:
        b = b_by.get(a["repeat"])
        if b is None:
            continue
        x, y = value(a), value(b)
        if x is not None and y is not None and x > 0 and y > 0:
            out.append(x / y)
    return out

