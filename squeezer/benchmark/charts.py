"""The bench's PNG charts, drawn headless with matplotlib (the `bench` extra): per workload, the ladder as bars
(each a median, its rounds' min and max as an error bar) with each rung's speed-up over out-of-the-box written on
it (the ceiling as a line where there is one), and latency against throughput per rung across the concurrency
sweep. The peers driven in the run stand beside squeezer's rungs in both, marked as peers (hatched bars, dashed
lines)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class ChartsUnavailable(RuntimeError):
    """matplotlib is not installed: the numbers are still written, the charts are not."""


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise ChartsUnavailable("charts need matplotlib: pip install 'squeezer[bench]'") from None
    matplotlib.use("Agg")  # no display on a server
    import matplotlib.pyplot as plt

    return plt


def draw(results: dict[str, Any], out: Path) -> list[Path]:
    """Every chart of the results into `out`; the files written."""
    plt = _pyplot()
    written = []
    for name in results["workloads"]:
        for chart in (_ladder, _curve):
            figure = chart(plt, results, name)
            if figure is not None:
                path = out / f"{chart.__name__.strip('_')}-{name}.png"
                figure.savefig(path, dpi=110, bbox_inches="tight")
                plt.close(figure)
                written.append(path)
    return written


def _label(rung: dict[str, Any], sep: str = "\n") -> str:
    """A rung's name for a chart; under a bar (`sep` a newline) "squeezer-" goes on a line of its own, so that
    neighbouring names do not run into each other."""
    name = rung["name"].replace("squeezer-", f"squeezer{sep}", 1) if sep == "\n" else rung["name"]
    return f"{name}{sep}(peer)" if rung.get("peer") else name


def _rate(m: dict[str, Any]) -> float:
    return m["tokens_per_s"] if m.get("tokens_per_s") is not None else m["items_per_s"]


def _spread(m: dict[str, Any]) -> tuple[float, float]:
    """How far the rate's smallest and largest rounds lie below and above its median (0 for one round)."""
    key = "tokens_per_s" if m.get("tokens_per_s") is not None else "items_per_s"
    return m[key] - m.get("min", {}).get(key, m[key]), m.get("max", {}).get(key, m[key]) - m[key]


def _ladder(plt: Any, results: dict[str, Any], name: str) -> Any:
    """Grouped bars: a group per rung, a bar per concurrency, each with its speed-up over out-of-the-box at the
    same concurrency (so no bar is compared with another load)."""
    rungs = [r for r in results["rungs"] if r["results"].get(name)]
    if not rungs:
        return None
    sweep = sorted({c for r in rungs for c in r["results"][name]}, key=int)
    width = 0.8 / len(sweep)
    figure, axes = plt.subplots(figsize=(9, 4.8))
    for k, clients in enumerate(sweep):
        at = [(i, r["results"][name][clients]) for i, r in enumerate(rungs) if clients in r["results"][name]]
        spread = [_spread(m) for _, m in at]
        drawn = axes.bar([i + (k - (len(sweep) - 1) / 2) * width for i, _ in at], [_rate(m) for _, m in at], width,
                         yerr=[[low for low, _ in spread], [high for _, high in spread]], capsize=2,
                         label=f"{clients} clients")
        for bar, (i, m) in zip(drawn, at):
            if rungs[i].get("peer"):
                bar.set_hatch("//")
            if m.get("speedup"):
                axes.annotate(f"{m['speedup']:.1f}x", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                              va="bottom", fontsize=8)
    ceiling = results.get("ceilings", {}).get(name)
    if ceiling:
        axes.axhline(ceiling["items_per_s"], color="#c44e52", linestyle="--", label=f"in-process ceiling ({ceiling['runtime']})")
    unit = "tokens/s" if rungs[0]["results"][name][sweep[0]].get("tokens_per_s") is not None else "items/s"
    axes.set_xticks(range(len(rungs)), [_label(r) for r in rungs])
    axes.set(title=f"{name}: the ladder on {results['hardware'].get('cpu', {}).get('model')} (x: over out-of-the-box)",
             ylabel=unit)
    axes.legend(loc="upper left", fontsize=8)
    return figure


def _curve(plt: Any, results: dict[str, Any], name: str) -> Any:
    lines = [(r, sorted(r["results"].get(name, {}).items(), key=lambda kv: int(kv[0]))) for r in results["rungs"]]
    lines = [(rung, points) for rung, points in lines if points]
    if not lines:
        return None
    figure, axes = plt.subplots(figsize=(8, 4.5))
    for rung, points in lines:
        xs, ys = [_rate(m) for _, m in points], [m["p50_ms"] for _, m in points]
        axes.plot(xs, ys, marker="o", label=_label(rung, " "), linestyle="--" if rung.get("peer") else "-")
        for (clients, _), x, y in zip(points, xs, ys):
            axes.annotate(clients, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    unit = "tokens/s" if lines[0][1][0][1].get("tokens_per_s") is not None else "items/s"
    axes.set(xscale="log", yscale="log", xlabel=unit, ylabel="p50 latency (ms)",
             title=f"{name}: latency against throughput (labels: clients)")
    axes.legend()
    return figure
