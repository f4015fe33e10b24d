#!/usr/bin/env python3
"""Plots `entitle bench --soak`'s CSV: server RSS, held long-polls and sync p99
over time, one panel each, into a PNG.

    bench/plot-soak.py target/bench-soak/soak.csv docs/soak.png

On first use it makes a virtual environment with matplotlib in
${XDG_CACHE_HOME:-~/.cache}/entitle-bench/venv and re-runs itself there.
"""

import csv
import os
import subprocess
import sys
import venv

CACHE = os.path.join(
    os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "entitle-bench"
)
VENV = os.path.join(CACHE, "venv")
PYTHON = os.path.join(VENV, "bin", "python")


def ensure_matplotlib():
    try:
        import matplotlib  # noqa: F401

        return
    except ImportError:
        pass
    if os.path.realpath(sys.executable) == os.path.realpath(PYTHON):
        sys.exit("matplotlib is missing from " + VENV)
    if not os.path.exists(PYTHON):
        print("making " + VENV + " with matplotlib (first use)", file=sys.stderr)
        venv.create(VENV, with_pip=True)
        subprocess.check_call([PYTHON, "-m", "pip", "install", "--quiet", "matplotlib"])
    os.execv(PYTHON, [PYTHON] + sys.argv)


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: plot-soak.py SOAK_CSV OUT_PNG")
    ensure_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(sys.argv[1], newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        sys.exit("no samples in " + sys.argv[1])
    minutes = [float(r["seconds"]) / 60 for r in rows]
    panels = [
        ("rss_mib", "server RSS (MiB)", "tab:blue"),
        ("held_long_polls", "held long-polls", "tab:green"),
        ("sync_p99_ms", "sync p99 per 10 s (ms)", "tab:red"),
    ]
    fig, axes = plt.subplots(len(panels), 1, sharex=True, figsize=(8, 6.5), dpi=80)
    for axis, (column, label, colour) in zip(axes, panels):
        values = [float(r[column]) for r in rows]
        axis.plot(minutes, values, color=colour, linewidth=1)
        axis.set_ylabel(label)
        axis.set_ylim(0, max(max(values) * 1.15, 1))
        axis.grid(True, linewidth=0.3)
    errors = sum(int(r["server_errors"]) for r in rows)
    axes[0].set_title(
        "entitle soak: %.0f min, %d samples, %d 5xx" % (minutes[-1], len(rows), errors)
    )
    axes[-1].set_xlabel("minutes")
    fig.tight_layout()
    fig.savefig(sys.argv[2])
    print("wrote " + sys.argv[2])


if __name__ == "__main__":
    main()
