"""The ladder: the same workloads through each rung (squeezer.benchmark.rungs), a real server process each, under
the same load generator, in interleaved rounds (squeezer.benchmark.rounds).

Every rung's server is started in turn and held up (an idle one costs no CPU), its answers to the first requests
collected; then, per workload and concurrency, the rungs are measured round-robin, `rounds` times. Answers are
compared with the out-of-the-box rung's, warm-up is excluded for every rung alike, and each figure is given as
the median of its rounds with their min and max, with its speed-up over the out-of-the-box rung and over the rung
before it, taken round by round. Where memory cannot hold every server at once (squeezer.benchmark.memory), the
rungs are measured in groups that fit, each group interleaved within itself, and the results say which. The
peers driven in this run (squeezer.benchmark.peers) come last, measured in the same rounds through their own routes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from squeezer.benchmark.answers import agreement, collect
from squeezer.benchmark.artifacts import Unavailable, chosen_artifact
from squeezer.benchmark.ceiling import best_ceiling
from squeezer.benchmark.load import drive
from squeezer.benchmark.memory import room_for_another
from squeezer.benchmark.peers import plan
from squeezer.benchmark.rounds import paired, summary
from squeezer.benchmark.routes import Route, native
from squeezer.benchmark.rungs import BEST, REFERENCE, RUNGS, Rung, peer_rungs
from squeezer.benchmark.streams import drive_chat
from squeezer.benchmark.workloads import WORKLOADS, Workload, fitting
from squeezer.detect import configured_task
from squeezer.hardware import hardware_fingerprint
from squeezer.sources import resolve

CEILING_TEXTS = 1024  # texts per in-process ceiling run: 32 batches of 32
Held = tuple[Rung, dict[str, Any], Any]  # a rung whose server is up: the rung, its record, the server
Progress = Callable[[str], None]


def route(server: Any, workload: Workload) -> Route:
    """How `workload` reaches `server`: a peer's own route, else the workload's as it is."""
    return server.route(workload) if hasattr(server, "route") else native(workload)


def measure(server: Any, workload: Workload, bodies: list[dict[str, Any]], clients: int, seconds: float) -> dict[str, Any]:
    """One figure; then one more request, answered before the next figure starts, so requests a load generator
    gave up on (the out-of-the-box app computes them anyway) do not weigh on the next one."""
    way = route(server, workload)
    sent = way.bodies(bodies)
    if workload.generates:
        measured = drive_chat(server.url, way.path, sent, clients, seconds).as_dict()
    else:
        measured = drive(server.url, way.path, sent, clients, seconds, light=workload.per_request == 1).as_dict()
    collect(server.url, workload, sent[:1], way.path)
    return {**measured, "items_per_s": measured["rps"] * workload.per_request}


def start(rung: Rung, spec: str, task: str, chosen: list[Workload], bodies: dict[str, list[dict[str, Any]]], logs: Path,
          progress: Progress) -> tuple[dict[str, Any], Any]:
    """Start one rung's server and collect its answers to the checked requests; (its record, the server, or None
    where the rung cannot run here: the record then says why)."""
    record: dict[str, Any] = {"name": rung.name, "description": rung.description, "results": {}, "answers": {}}
    if rung.peer:
        record["peer"] = True
    progress(f"{rung.name}: starting")
    try:
        server = rung.start(spec, task, logs)
    except Unavailable as exc:
        progress(f"{rung.name}: skipped: {exc}")
        return {**record, "skipped": str(exc)}, None
    try:
        server.wait_ready(1800)
        record.update(getattr(server, "facts", {}))
        if any(w.generates for w in chosen):
            record["prompt_cache"] = rung.prompt_cache(server.url)
        for w in chosen:
            if rung.runs(w):
                way = route(server, w)
                answers = collect(server.url, w, way.bodies(bodies[w.name][:w.checked]), way.path)
                record["answers"][w.name] = [None if a is None else way.answer(a) for a in answers]
    except Unavailable as exc:  # a peer that exits or never answers: reported skipped, the run goes on
        server.stop()
        progress(f"{rung.name}: skipped: {exc}")
        return {**record, "skipped": str(exc)}, None
    except BaseException:
        server.stop()
        raise
    return record, server


def sweep(held: list[Held], chosen: list[Workload], sweeps: dict[str, list[int]], bodies: dict[str, list[dict[str, Any]]],
          duration: float, rounds: int, progress: Progress) -> None:
    """Every workload at every concurrency, the rungs `held` measured round-robin `rounds` times (A, B, C, A, B,
    C, ...) after one warm-up each at the workload's highest load (not counted); each round's figure is appended
    to its rung's record."""
    for w in chosen:
        for rung, _, server in held:
            clients = _clients(rung, sweeps[w.name])
            if not w.generates and clients and rung.runs(w):
                measure(server, w, bodies[w.name], max(clients), min(3.0, duration))
        figures = len(sweeps[w.name]) * rounds
        for f, (clients, k) in enumerate((c, k) for c in sweeps[w.name] for k in range(rounds)):
            takers = [h for h in held if clients in _clients(h[0], sweeps[w.name]) and h[0].runs(w)]
            sent = fresh(bodies[w.name], f, figures)
            for rung, record, server in takers:
                progress(f"{rung.name}: {w.name} at {clients} clients for {duration:g}s (round {k + 1}/{rounds})")
                found = record["results"].setdefault(w.name, {}).setdefault(str(clients), [])
                found.append(measure(server, w, sent, clients, duration))


def fresh(bodies: list[dict[str, Any]], figure: int, figures: int) -> list[dict[str, Any]]:
    """The bodies from figure `figure`'s own offset on: every rung of a round gets the same requests, and no figure
    re-sends what an earlier one did (while it sends fewer than its share), so a server that caches whole prompts
    (squeezer's prefix cache, llama.cpp's) meets them as new, as the rungs without such a cache do."""
    start = figure * len(bodies) // max(figures, 1)
    return bodies[start:] + bodies[:start]


def _clients(rung: Rung, sweep: list[int]) -> list[int]:
    return [c for c in sweep if rung.max_clients is None or c <= rung.max_clients]


def climb(rungs: list[Rung], spec: str, task: str, chosen: list[Workload], sweeps: dict[str, list[int]], duration: float,
          rounds: int, logs: Path, progress: Progress) -> tuple[list[dict[str, Any]], list[list[str]]]:
    """Start the rungs one after another, holding each up, and measure them together; where the next server would
    not fit in memory beside those up, those are measured and stopped first. (The records, the groups of rungs
    measured together.)"""
    bodies = {w.name: w.bodies(200 if w.per_request > 1 else 2000) for w in chosen}
    records: list[dict[str, Any]] = []
    groups: list[list[str]] = []
    held: list[Held] = []

    def finish() -> None:
        try:
            if held:
                sweep(held, chosen, sweeps, bodies, duration, rounds, progress)
                groups.append([rung.name for rung, _, _ in held])
        finally:
            while held:
                held.pop()[2].stop()

    try:
        for rung in rungs:
            if held and not room_for_another([server.proc.pid for _, _, server in held]):
                progress(f"memory: {rung.name} would not fit beside {len(held)} servers up; measuring those first")
                finish()
            record, server = start(rung, spec, task, chosen, bodies, logs, progress)
            records.append(record)
            if server is not None:
                held.append((rung, record, server))
        finish()
    finally:
        while held:
            held.pop()[2].stop()
    return records, groups


def compare(rungs: list[dict[str, Any]], chosen: list[Workload]) -> None:
    """Accuracy against the reference rung's answers; speed-ups over it and over the rung before, round by round
    (each round's figure over the other rung's same round, measured moments apart). A peer is no step of the
    ladder: in place of "vs previous" each of its rounds has `squeezer_over`, squeezer's best rung over it."""
    reference = next(r for r in rungs if r["name"] == REFERENCE)
    for w in chosen:
        key = "tokens_per_s" if w.generates else "rps"
        before: dict[str, list[dict[str, Any]]] = {}
        best = next((r for name in BEST for r in rungs if r["name"] == name and r["results"].get(w.name)), None)
        for record in rungs:
            if "skipped" in record or w.name not in record["answers"]:
                continue
            record.setdefault("accuracy", {})[w.name] = agreement(w, record["answers"][w.name], reference["answers"][w.name])
            if record.get("peer"):
                _against_squeezer(record, best, w.name, key)
            for clients, rounds in record["results"].get(w.name, {}).items():
                base = reference["results"].get(w.name, {}).get(clients, [])
                previous = [] if record.get("peer") else before.get(clients, [])
                for one, over_base, over_before in zip(rounds, _ratios(rounds, base, key), _ratios(rounds, previous, key)):
                    one["speedup"], one["vs_previous"] = over_base, over_before
                if not record.get("peer"):
                    before[clients] = rounds


def _against_squeezer(peer: dict[str, Any], best: dict[str, Any] | None, name: str, key: str) -> None:
    """Each of the peer's rounds gets `squeezer_over`: squeezer's best rung over the peer in the same round."""
    if best is None:
        return
    peer.setdefault("compared_with", {})[name] = best["name"]
    for clients, rounds in peer["results"].get(name, {}).items():
        for one, ratio in zip(rounds, _ratios(best["results"][name].get(clients, []), rounds, key)):
            one["squeezer_over"] = ratio


def _ratios(ours: list[dict[str, Any]], theirs: list[dict[str, Any]], key: str) -> list[float | None]:
    """Round by round, ours over theirs; None for each where there is nothing to compare with."""
    return paired(ours, theirs, key) if theirs else [None] * len(ours)


def measure_ceilings(spec: str, chosen: list[Workload], rungs: list[dict[str, Any]], logs: Path,
                     progress: Progress, compiled: bool = True) -> dict[str, Any]:
    """Each encoder workload's in-process ceiling (squeezer.benchmark.ceiling), and every round's share of it; on
    the artifact optimize chooses only where the run serves it (`compiled`: --rung may leave it out, and then
    building it for the ceiling alone would cost the run its longest step)."""
    if not chosen:
        return {}
    progress("the in-process ceiling: PyTorch" + (" and the artifact optimize chooses" if compiled else ""))
    runtimes = {"pytorch": spec}
    artifact = chosen_artifact(spec, logs) if compiled else None
    if artifact:
        runtimes["optimized"] = artifact
    found = {}
    for w in chosen:
        texts = [t for body in w.bodies(CEILING_TEXTS // w.per_request) for t in _texts(body["inputs"])]
        found[w.name] = best_ceiling(runtimes, texts)
        for record in rungs:
            for rounds in record["results"].get(w.name, {}).values():
                for one in rounds:
                    one["of_ceiling"] = one["items_per_s"] / found[w.name]["items_per_s"]
    return found


def _texts(inputs: str | list[str]) -> list[str]:
    return [inputs] if isinstance(inputs, str) else inputs


def model_task(spec: str) -> str:
    """The task the model serves, read from its files without loading it."""
    return configured_task(resolve(spec)) or "feature-extraction"


def run(spec: str, workloads: Sequence[str] | None, concurrency: Sequence[int] | None, duration: float, logs: Path,
        progress: Progress = print, rounds: int = 1, peers: dict[str, str] | None = None,
        only: Sequence[str] | None = None) -> dict[str, Any]:
    """Every rung (or those in `only`, and always the reference) and every peer found (`peers`: --peer's NAME to
    PATH or COMMAND) through every workload at every concurrency, `rounds` interleaved rounds each; the results as
    one JSON-able record (each figure the median of its rounds, with "min", "max" and every round)."""
    task = model_task(spec)
    fits = fitting(task)
    unfit = [name for name in workloads or [] if name not in fits]
    if unfit:
        raise ValueError(f"{', '.join(unfit)} cannot run on a {task} model; this one runs {', '.join(fits) or 'none'}")
    if rounds < 1:
        raise ValueError(f"--rounds must be at least 1, got {rounds}")
    chosen = [WORKLOADS[name] for name in workloads or fits]
    sweeps = {w.name: list(concurrency or w.concurrency) for w in chosen}
    kinds = {"generation" if w.generates else "encoder" for w in chosen}
    driven, found_peers = plan([w.name for w in chosen], peers or {})
    ladder = [r for r in RUNGS if r.kinds & kinds and (not only or r.name in only or r.name == REFERENCE)]
    rungs, groups = climb(ladder + peer_rungs(driven, chosen, sweeps), spec, task, chosen, sweeps, duration, rounds,
                          logs, progress)
    skipped = {r["name"]: r["skipped"] for r in rungs if r.get("peer") and "skipped" in r}
    for peer in found_peers:  # driven, but it did not come up: the table's row and the peer's line say why
        if peer["name"] in skipped:
            peer.update(state="skipped", reason=f"{peer['reason']}; {skipped[peer['name']]}")
    compare(rungs, chosen)
    ceilings = measure_ceilings(spec, [w for w in chosen if not w.generates], rungs, logs, progress,
                                any(r.name == "squeezer-optimized" for r in ladder))
    for record in rungs:
        del record["answers"]  # compared; the vectors themselves are no figure
        for by_clients in record["results"].values():
            by_clients.update({clients: summary(found) for clients, found in by_clients.items()})
    return {"model": spec, "task": task, "workloads": {w.name: w.description for w in chosen}, "concurrency": sweeps,
            "duration_s": duration, "rounds": rounds, "measured_together": groups, "hardware": hardware_fingerprint(),
            "rungs": rungs, "ceilings": ceilings, "peers": found_peers}
