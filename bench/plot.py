"""The crowd-latency plot: one CDF per server, log-scaled time axis.

matplotlib is optional.  If this Python lacks it, the plot is drawn by
another Python that has it (``--plot-python``) running this file; if none
has it, the plot is skipped with a message.

    python bench/plot.py crowd-latencies.json crowd-latency.png
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def draw(latencies_json: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data: dict[str, list[float]] = json.loads(Path(latencies_json).read_text())
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, values in sorted(data.items()):
        if not values:
            continue
        ordered = sorted(v * 1000 for v in values)
        n = len(ordered)
        ax.plot(ordered, [(i + 1) / n for i in range(n)], label=f"{name} (n={n})")
    ax.set_xscale("log")
    ax.set_xlabel("response time (ms, log scale)")
    ax.set_ylabel("fraction of requests")
    ax.set_title("Crowd: 1 request in flight per connection, CDF")
    ax.axhline(0.99, color="grey", linewidth=0.5, linestyle=":")
    ax.grid(True, which="both", linewidth=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def plot_or_explain(latencies_json: Path, png: Path, plot_python: str | None) -> str:
    """Draw the plot here or with ``plot_python``; return a line saying what happened."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        pass
    else:
        draw(latencies_json, png)
        return f"plot: {png}"
    if plot_python and os.path.exists(plot_python):
        proc = subprocess.run(
            [plot_python, __file__, str(latencies_json), str(png)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if proc.returncode == 0:
            return f"plot: {png} (drawn by {plot_python})"
        return f"plot skipped: {plot_python} could not draw it: {proc.stderr.strip()[-300:]}"
    return (
        "plot skipped: matplotlib is not importable here and --plot-python "
        f"({plot_python}) does not exist; create a venv with matplotlib and pass it."
    )


if __name__ == "__main__":
    draw(Path(sys.argv[1]), Path(sys.argv[2]))
