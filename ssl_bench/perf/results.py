"""The rows `ssl-bench-perf` writes: one measurement each, as CSV and a Markdown table."""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Row:
    """One measurement: a CSV row and a table line. `goal` is like '>= 10' or '<= 0.05'."""

    name: str
    task: str
    value: float
    unit: str
    goal: str = ""

    @property
    def met(self) -> str:
        if not self.goal:
            return ""
        op, bound = self.goal.split()
        ok = self.value >= float(bound) if op == ">=" else self.value <= float(bound)
        return "yes" if ok else "no"


class Recorder:
    """Collects rows and prints a line per measurement, so a long run shows its progress."""

    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.start = time.perf_counter()

    def add(self, name: str, task: str, value: float, unit: str, goal: str = "") -> Row:
        row = Row(name, task, float(value), unit, goal)
        self.rows.append(row)
        met = f"  [goal {goal}: {row.met}]" if goal else ""
        self.say(f"{task:>17} {name:<36} {_fmt(row.value):>12} {unit}{met}")
        return row

    def say(self, message: str) -> None:
        print(f"[perf {time.perf_counter() - self.start:6.1f}s] {message}", flush=True)


def _fmt(value: float) -> str:
    if value == 0 or not math.isfinite(value):
        return str(value)
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.4f}"


def markdown_table(rows: Sequence[Row]) -> str:
    lines = ["| measurement | task | value | unit | goal | met |", "|---|---|---:|---|---|---|"]
    lines += [f"| {r.name} | {r.task} | {_fmt(r.value)} | {r.unit} | {r.goal} | {r.met} |" for r in rows]
    return "\n".join(lines)


def write_outputs(rows: Sequence[Row], out: Path, header: Sequence[str], notes: Sequence[str]) -> Path:
    """The CSV at `out` and `out` with a .md suffix (environment, table, notes)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["name", "task", "value", "unit", "goal", "met"])
        for r in rows:
            writer.writerow([r.name, r.task, repr(r.value), r.unit, r.goal, r.met])
    md = out.with_suffix(".md")
    md.write_text("# ssl_bench performance (`ssl-bench-perf`)\n\n" + "\n".join(f"- {h}" for h in header)
                  + "\n\n" + markdown_table(rows) + "\n\n## Notes\n\n"
                  + "\n".join(f"- {n}" for n in notes) + "\n")
    return md
