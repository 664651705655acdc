"""The optimization report as a Python object, and as the table `squeezer optimize` prints.

The report itself is `squeezer.json` inside the artifact (schema in `squeezer.artifact`); this module only
reads it, so a report printed later from an artifact looks the same as the one printed by the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from squeezer.artifact import read_report

VERDICT_MARKS = {"chosen": "* chosen", "passed": "passed", "screened": "screened", "rejected": "REJECTED", "failed": "FAILED"}


@dataclass(frozen=True)
class Report:
    """An artifact's report: every candidate with its accuracy, timings and verdict, and the winner."""

    path: Path
    data: dict[str, Any]

    @classmethod
    def load(cls, artifact: str | Path) -> Report:
        return cls(Path(artifact), read_report(artifact))

    @property
    def candidates(self) -> list[dict[str, Any]]:
        return list(self.data.get("candidates", []))

    def candidate(self, name: str) -> dict[str, Any]:
        for c in self.candidates:
            if c["name"] == name:
                return c
        raise KeyError(name)

    @property
    def chosen(self) -> dict[str, Any]:
        return self.candidate(self.data["chosen"])

    @property
    def cached(self) -> bool:
        return bool(self.data.get("cache", {}).get("hit"))

    def table(self) -> str:
        return render(self.data)


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _grid(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    line = "  ".join("-" * w for w in widths)
    fmt = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    return [fmt(header), line, *(fmt(r) for r in rows)]


TIMING_EXTRAS = ("tokens_per_s",)  # timings shown besides the *_ms columns (decoders: generated tokens/s)


def _timing_columns(data: dict[str, Any]) -> list[str]:
    for c in [data.get("reference", {}), *data.get("candidates", [])]:
        keys = [k for k in c.get("timings", {}) if k.endswith("_ms") or k in TIMING_EXTRAS]
        if keys:
            return keys
    return []


def render(data: dict[str, Any]) -> str:
    """A readable terminal table: context, one row per candidate, then why each rejection happened."""
    hw = data.get("hardware", {})
    cpu = hw.get("cpu", {})
    acc = data.get("accuracy", {})
    metrics = list(acc.get("bounds", {}))
    timing = _timing_columns(data)
    header = ["candidate", "runtime", "dtype", "verdict", *metrics, *timing, "vs torch", "MB"]
    ref = data.get("reference", {})
    rows = [["torch (reference)", "torch", "float32", "reference", *("-" for _ in metrics),
             *(_fmt(ref.get("timings", {}).get(k), 2) for k in timing), "1.00x", "-"]]
    for c in data.get("candidates", []):
        speed = f"{c['speedup']:.2f}x" if c.get("speedup") else "-"
        size = _fmt(c["size_bytes"] / 1e6, 1) if c.get("size_bytes") else "-"
        rows.append([c["name"], c.get("runtime", "onnxruntime"), c.get("dtype", "-"), VERDICT_MARKS.get(c["verdict"], c["verdict"]),
                     *(_fmt(c.get("metrics", {}).get(m)) for m in metrics),
                     *(_fmt(c.get("timings", {}).get(k), 2) for k in timing), speed, size])
    lines = [
        f"squeezer optimize: {data.get('model_id')} ({data.get('task')}, target {data.get('target')}, "
        f"profile {data.get('profile')})",
        f"hardware: {cpu.get('model')} [{' '.join(cpu.get('flags', []))}], "
        f"{cpu.get('available_cpus')}/{cpu.get('logical_cpus')} cores, GPU: {', '.join(hw.get('gpus', [])) or 'none'}",
        "versions: " + ", ".join(f"{k} {v}" for k, v in data.get("versions", {}).items()),
        f"accuracy budget {acc.get('budget')}: " + ", ".join(f"{m} {b}" for m, b in acc.get("bounds", {}).items())
        + f" on {acc.get('validation', {}).get('examples')} {acc.get('validation', {}).get('kind', '')} inputs",
        "",
        *_grid(header, rows),
        "",
    ]
    for c in data.get("candidates", []):
        if c.get("reasons"):
            lines.append(f"  {c['name']}: {c['verdict']}: {'; '.join(c['reasons'])}")
    chosen = data.get("chosen")
    cache = " (from cache)" if data.get("cache", {}).get("hit") else ""
    lines.append(f"chosen: {chosen}{cache}")
    return "\n".join(lines)
