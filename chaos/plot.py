"""The picture of a chaos run: throughput and latency over time, with the fault windows shaded.

Two panels sharing the time axis (seconds since the clients started):
  top     acknowledged sends per second, and sends that failed or ended unknown, per second;
  bottom  the latency of every acknowledged send (dots, at its completion time, log scale) with
          the per-second median and p99 drawn over them.
Each fault window is a shaded band across both panels, coloured by kind and labelled on top,
so a dip in throughput or a spike in latency lines up with the fault that caused it.

matplotlib is imported here only (the Agg backend: no display needed).
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

from chaos.workload import RunResult

__all__ = ["KIND_COLOURS", "plot_run"]

KIND_COLOURS = {
    "kill": "#d62728",
    "pause": "#ff7f0e",
    "isolate": "#9467bd",
    "split": "#8c564b",
    "one_way": "#e377c2",
    "ring": "#17becf",
    "power": "#000000",
    "power_all": "#2ca02c",
    "latency": "#bcbd22",
    "bandwidth": "#7f7f7f",
}


def _quantile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[max(0, math.ceil(q * len(values)) - 1)]


def plot_run(result: RunResult, path: Path, *, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    t0 = result.started_ns
    invoked: dict[str, int] = {}  # process -> its send in flight (one at a time)
    ok_t: list[float] = []
    ok_lat: list[float] = []
    bad_t: list[float] = []
    for op in result.history.ops:
        if op.f != "send":
            continue
        if op.type == "invoke":
            invoked[str(op.process)] = op.time_ns
            continue
        began = invoked.pop(str(op.process), None)
        t = (op.time_ns - t0) / 1e9
        if op.type == "ok" and began is not None:
            ok_t.append(t)
            ok_lat.append(max((op.time_ns - began) / 1e6, 0.01))
        else:
            bad_t.append(t)

    end_s = max([result.duration_s, *ok_t, *bad_t, 1.0])
    bins = math.ceil(end_s)
    acks = [0] * bins
    bad = [0] * bins
    per_second: dict[int, list[float]] = defaultdict(list)
    for t, lat in zip(ok_t, ok_lat, strict=True):
        b = min(max(int(t), 0), bins - 1)
        acks[b] += 1
        per_second[b].append(lat)
    for t in bad_t:
        bad[min(max(int(t), 0), bins - 1)] += 1

    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(14, 7.5), sharex=True, gridspec_kw={"height_ratios": [1, 1.3]}
    )
    xs = [b + 0.5 for b in range(bins)]
    top.step(xs, acks, where="mid", color="#1f77b4", lw=1.2, label="acknowledged sends/s")
    if any(bad):
        top.bar(xs, bad, width=1.0, color="#d62728", alpha=0.6, label="failed or unknown sends/s")
    top.set_ylabel("sends per second")
    top.set_ylim(bottom=0)
    top.grid(alpha=0.3)

    bottom.scatter(ok_t, ok_lat, s=2, color="#1f77b4", alpha=0.25, lw=0, label="one ack")
    # One point per second; a second without acks breaks the lines rather than bridging it.
    nan = float("nan")
    p50 = [_quantile(per_second[b], 0.5) if per_second.get(b) else nan for b in range(bins)]
    p99 = [_quantile(per_second[b], 0.99) if per_second.get(b) else nan for b in range(bins)]
    if ok_lat:
        bottom.plot(xs, p50, color="#2ca02c", lw=1.2, label="p50 per second")
        bottom.plot(xs, p99, color="#d62728", lw=1.0, label="p99 per second")
    bottom.set_yscale("log")
    bottom.set_ylabel("ack latency (ms)")
    bottom.set_xlabel("seconds since the clients started")
    bottom.grid(alpha=0.3, which="both")

    kinds_seen: dict[str, str] = {}
    for event in result.events:
        if not event.start_ns or event.skipped:
            continue
        start_s = (event.start_ns - t0) / 1e9
        end_s_ = (event.end_ns - t0) / 1e9
        colour = KIND_COLOURS.get(event.kind, "#aaaaaa")
        kinds_seen[event.kind] = colour
        for ax in (top, bottom):
            ax.axvspan(start_s, end_s_, color=colour, alpha=0.18, lw=0)
        top.annotate(
            event.describe(),
            xy=(start_s, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(1, 2),
            textcoords="offset points",
            fontsize=7,
            rotation=35,
            ha="left",
            va="bottom",
            color=colour,
        )
    top.set_xlim(0, end_s)
    handles, labels = top.get_legend_handles_labels()
    handles += [Patch(color=c, alpha=0.35) for c in kinds_seen.values()]
    labels += [f"fault: {k}" for k in kinds_seen]
    top.legend(handles, labels, loc="lower left", fontsize=8, ncol=3, framealpha=0.85)
    bottom.legend(loc="upper right", fontsize=8, framealpha=0.85, markerscale=4)
    if title:
        fig.suptitle(title, fontsize=10, y=0.995)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)
