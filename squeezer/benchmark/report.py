"""The bench's Markdown report: one table per workload, rung by rung and concurrency by concurrency, then the
peers found or missing."""

from __future__ import annotations

from typing import Any

SERVING = ("| rung | clients | requests/s | items/s | of ceiling | p50 ms | p90 ms | p99 ms | errors | vs out-of-the-box | "
           "vs previous | agreement | load |")
CHAT = ("| rung | clients | tokens/s | tokens/s per stream | TTFT p50 ms | p50 ms | p99 ms | errors | vs out-of-the-box | "
        "vs previous | agreement | load |")
AGREEMENT = {"vectors": "minimum cosine against out-of-the-box", "labels": "share of equal top labels",
             "text": "share of greedy answers identical to out-of-the-box's", "json": "share of answers valid against the schema"}


def _num(value: Any, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _times(value: Any) -> str:
    return f"{value:.2f}x" if value else "-"


def _row(rung: dict[str, Any], name: str, clients: str, m: dict[str, Any]) -> str:
    if m.get("tokens_per_s") is not None:
        cells = [_num(m["tokens_per_s"]), _num(m["stream_tokens_per_s"]), _num(m["ttft_p50_ms"], 0), _num(m["p50_ms"], 0),
                 _num(m["p99_ms"], 0)]
    else:
        share = f"{m['of_ceiling']:.0%}" if m.get("of_ceiling") else "-"
        cells = [_num(m["rps"]), _num(m["items_per_s"]), share, _num(m["p50_ms"]), _num(m["p90_ms"]), _num(m["p99_ms"])]
    cells += [str(m["errors"]), _times(m.get("speedup")), _times(m.get("vs_previous")),
              _num(rung["accuracy"].get(name), 4), m["generator"]]
    return f"| {rung['name']} | {clients} | " + " | ".join(cells) + " |"


def markdown(results: dict[str, Any]) -> str:
    from squeezer.benchmark.workloads import WORKLOADS

    cpu = results["hardware"].get("cpu", {})
    lines = [
        f"# squeezer bench: {results['model']} ({results['task']})",
        "",
        f"CPU: {cpu.get('model')} [{' '.join(cpu.get('flags', []))}], {cpu.get('available_cpus')} cores; "
        f"{results['duration_s']:g} s per figure after a warm-up; only successful answers counted.",
    ]
    for name, description in results["workloads"].items():
        header = CHAT if WORKLOADS[name].generates else SERVING
        lines += ["", f"## {name}: {description}", "", f"Agreement: {AGREEMENT[WORKLOADS[name].answer]}."]
        top = results.get("ceilings", {}).get(name)
        if top:
            lines.append(f"Ceiling: {top['items_per_s']:.1f} items/s in-process ({top['runtime']}; length-sorted batches of "
                         "32, pre-tokenized, no HTTP); every other runtime: "
                         + ", ".join(f"{k} {v:.1f}" for k, v in top["all"].items()) + ".")
        lines += ["", header, "|" + " --- |" * (header.count("|") - 1)]
        for rung in results["rungs"]:
            for clients, m in rung["results"].get(name, {}).items():
                lines.append(_row(rung, name, clients, m))
            if not rung["results"].get(name):
                lines.append(f"| {rung['name']} | - | answers only | | | | | | | | {_num(rung['accuracy'].get(name), 4)} | |")
    if results.get("peers"):
        lines += ["", "## Peers", "", "| peer | state | install |", "| --- | --- | --- |"]
        lines += [f"| {p['name']} | {p['state']} | `{p['install']}` |" for p in results["peers"]]
    return "\n".join(lines) + "\n"
