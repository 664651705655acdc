"""The bench's Markdown report: one table per workload, rung by rung and concurrency by concurrency."""

from __future__ import annotations

from typing import Any


def _num(value: Any, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown(results: dict[str, Any]) -> str:
    cpu = results["hardware"].get("cpu", {})
    lines = [
        f"# squeezer bench: {results['model']}",
        "",
        f"CPU: {cpu.get('model')} [{' '.join(cpu.get('flags', []))}], {cpu.get('available_cpus')} cores; "
        f"{results['duration_s']:g} s per figure after a warm-up; only successful answers counted.",
    ]
    for name, description in results["workloads"].items():
        lines += ["", f"## {name}: {description}", "",
                  "| rung | clients | requests/s | items/s | p50 ms | p90 ms | p99 ms | errors | vs out-of-the-box | min cosine | load |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
        for rung in results["rungs"]:
            for clients, m in rung["results"].get(name, {}).items():
                speedup = f"{m['speedup']:.2f}x" if m.get("speedup") else "-"
                lines.append(f"| {rung['name']} | {clients} | {_num(m['rps'])} | {_num(m['items_per_s'])} | {_num(m['p50_ms'])} | "
                             f"{_num(m['p90_ms'])} | {_num(m['p99_ms'])} | {m['errors']} | {speedup} | "
                             f"{_num(rung['accuracy'].get(name), 4)} | {m['generator']} |")
    return "\n".join(lines) + "\n"
