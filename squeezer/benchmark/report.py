"""The bench's Markdown report (also what the command prints): the rungs, then one table per workload, rung by rung
and concurrency by concurrency, each figure the median of its rounds with their min and max, the load generator's
own CPU beside it, the peers driven in this run as rows beside squeezer's (with squeezer's best rung over each,
round by round, under the table); then every peer's state: driven, missing (with how to install it) or not driven
(and why)."""

from __future__ import annotations

from typing import Any

SERVING = ("| rung | clients | requests/s | items/s | of ceiling | p50 ms | p90 ms | p99 ms | errors | vs out-of-the-box | "
           "vs previous | agreement | load | loadgen CPU |")
CHAT = ("| rung | clients | tokens/s | tokens/s per stream | TTFT p50 ms | p50 ms | p99 ms | errors | vs out-of-the-box | "
        "vs previous | agreement | load | loadgen CPU |")
AGREEMENT = {"vectors": "minimum cosine against out-of-the-box", "labels": "share of equal top labels",
             "text": "share of greedy answers identical to out-of-the-box's", "json": "share of answers valid against the schema"}
# Each column after the clients: (the figure's key, how one value is written); data, so both tables share _row.
SERVING_CELLS = (("rps", "{:.1f}"), ("items_per_s", "{:.1f}"), ("of_ceiling", "{:.0%}"), ("p50_ms", "{:.1f}"),
                 ("p90_ms", "{:.1f}"), ("p99_ms", "{:.1f}"))
CHAT_CELLS = (("tokens_per_s", "{:.1f}"), ("stream_tokens_per_s", "{:.1f}"), ("ttft_p50_ms", "{:.0f}"),
              ("p50_ms", "{:.0f}"), ("p99_ms", "{:.0f}"))
RATIO = "{:.2f}x"


def _num(value: Any, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def figure(m: dict[str, Any], key: str, form: str) -> str:
    """The median of a figure's rounds, with their min and max where they differ as written: `12.3 (11.9–12.8)`."""
    value = m.get(key)
    if value is None:
        return "-"
    low, high = (form.format(m.get(bound, {}).get(key, value)) for bound in ("min", "max"))
    return form.format(value) if low == high else f"{form.format(value)} ({low}–{high})"


def _loadgen(m: dict[str, Any], cores: Any) -> str:
    """The load generator's own CPU, in cores kept busy over the run, of the machine's."""
    if m.get("loadgen_cores") is None:
        return "-"
    return figure(m, "loadgen_cores", "{:.2f}") + (f" of {cores}" if cores else "")


def _row(rung: dict[str, Any], name: str, clients: str, m: dict[str, Any], cores: Any) -> str:
    cells = [figure(m, key, form) for key, form in (CHAT_CELLS if m.get("tokens_per_s") is not None else SERVING_CELLS)]
    cells += [str(m["errors"]), figure(m, "speedup", RATIO), figure(m, "vs_previous", RATIO),
              _num(rung["accuracy"].get(name), 4), m["generator"], _loadgen(m, cores)]
    return f"| {rung['name']} | {clients} | " + " | ".join(cells) + " |"


def _no_figures(rung: dict[str, Any], name: str, columns: int) -> str:
    """A rung without figures for a workload: skipped (and why), not run (a peer without a route for it), or
    measured for its answers only."""
    if "skipped" in rung:
        return f"| {rung['name']} | - | skipped: {rung['skipped']} |" + " |" * (columns - 3)
    if name not in rung.get("accuracy", {}):
        return f"| {rung['name']} | - | not run: no route for {name} |" + " |" * (columns - 3)
    cells = ["answers only"] + [""] * (columns - 6) + [_num(rung["accuracy"].get(name), 4), "", ""]
    return f"| {rung['name']} | - | " + " | ".join(cells) + " |"


# What a rung's record may say of how it ran, in the order written: (its key, how it is written).
FACTS = (("serves", "serves {}"), ("threads", "{} threads"), ("slots", "{} slots"), ("prompt_cache", "prompt cache: {}"),
         ("command", "ran `{}`"), ("skipped", "skipped: {}"))


def _rungs(results: dict[str, Any]) -> list[str]:
    lines = ["", "Rungs:"]
    for rung in results["rungs"]:
        facts = "".join(f"; {form.format(rung[key])}" for key, form in FACTS if rung.get(key) is not None)
        lines.append(f"- {rung['name']}{' (peer)' if rung.get('peer') else ''}: {rung['description']}{facts}")
    return lines


def _against_peers(results: dict[str, Any], name: str, key: str) -> list[str]:
    """Under a workload's table: squeezer's best rung over each peer, round by round, at each concurrency."""
    lines = []
    for rung in results["rungs"]:
        best = rung.get("compared_with", {}).get(name)
        if not best:
            continue
        at = [f"{figure(m, 'squeezer_over', RATIO)} at {clients} client{'' if clients == '1' else 's'}"
              for clients, m in rung["results"].get(name, {}).items()
              if m.get("squeezer_over") is not None]
        if at:
            lines.append(f"{best} over {rung['name']} ({key}, round by round): " + ", ".join(at) + ".")
    return lines


def _method(results: dict[str, Any]) -> str:
    rounds = results.get("rounds", 1)
    together = results.get("measured_together", [])
    held = ("every rung's server up at once" if len(together) <= 1 else
            "rungs measured in groups that fit in memory: " + "; ".join(", ".join(g) for g in together))
    spread = (f"{rounds} rounds interleaved across the rungs ({held}), each figure their median (min–max), speed-ups "
              "taken round by round" if rounds > 1 else "one round")
    return (f"{results['duration_s']:g} s per figure after a warm-up, {spread}; only successful answers counted; "
            "peers are measured in the same rounds by the same load generator, with the threads squeezer's backends "
            "take; loadgen CPU: the cores the load generator itself kept busy, of the machine's.")


def markdown(results: dict[str, Any]) -> str:
    from squeezer.benchmark.workloads import WORKLOADS

    cpu = results["hardware"].get("cpu", {})
    cores = cpu.get("available_cpus")
    lines = [
        f"# squeezer bench: {results['model']} ({results['task']})",
        "",
        f"CPU: {cpu.get('model')} [{' '.join(cpu.get('flags', []))}], {cores} cores; {_method(results)}",
        *_rungs(results),
    ]
    for name, description in results["workloads"].items():
        header = CHAT if WORKLOADS[name].generates else SERVING
        columns = header.count("|") - 1
        lines += ["", f"## {name}: {description}", "", f"Agreement: {AGREEMENT[WORKLOADS[name].answer]}."]
        top = results.get("ceilings", {}).get(name)
        if top:
            lines.append(f"Ceiling: {top['items_per_s']:.1f} items/s in-process ({top['runtime']}; length-sorted batches of "
                         "32, pre-tokenized, no HTTP); every other runtime: "
                         + ", ".join(f"{k} {v:.1f}" for k, v in top["all"].items()) + ".")
        lines += ["", header, "|" + " --- |" * columns]
        for rung in results["rungs"]:
            for clients, m in rung["results"].get(name, {}).items():
                lines.append(_row(rung, name, clients, m, cores))
            if not rung["results"].get(name):
                lines.append(_no_figures(rung, name, columns))
        against = _against_peers(results, name, "tokens/s" if WORKLOADS[name].generates else "requests/s")
        lines += ["", *against] if against else []
    if results.get("peers"):
        lines += ["", "## Peers", "", "| peer | state | found, or why not | install |", "| --- | --- | --- | --- |"]
        lines += [f"| {p['name']} | {p['state']} | {p.get('reason', '')} | `{p['install']}` |" for p in results["peers"]]
    return "\n".join(lines) + "\n"
