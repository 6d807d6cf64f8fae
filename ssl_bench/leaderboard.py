"""The CSV leaderboard: one row per (run, protocol, K), and the summary printed from it.

Rows are appended under a file lock by rewriting the file to a temporary name and renaming
it, so concurrent writers never interleave and a kill never leaves a torn file. A row with
the same (run_id, protocol, labels_per_class) as an existing one replaces it, so writing a
run's results twice cannot duplicate them.
"""

from __future__ import annotations

import argparse
import io
import math
import sys
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
from filelock import FileLock

from ssl_bench.interrupts import interruptible
from ssl_bench.runlog import atomic_write_bytes
from ssl_bench.stats import CELL, summarize

COLUMNS = [
    "run_id", "task", "dataset", "pretrain_dataset", "backbone", "protocol", "labels_per_class",
    "seed", "test_acc", "pretext_metric", "pretext_metric_name", "pretrain_seconds",
    "pretrain_reused", "pretrain_id", "eval_seconds", "eval_steps", "eval_samples",
    "eval_augment", "eval_budget_scale", "results_version", "pretrain_seed", "pretrain_epochs", "precision",
    "profile", "git_sha",
    "started_at", "finished_at", "run_dir",
]
KEY = ["run_id", "protocol", "labels_per_class"]


def read(path: Path) -> pd.DataFrame:
    """The leaderboard as a DataFrame (empty, with the columns, if there is none yet)."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame(columns=COLUMNS)
    return pd.read_csv(path)


def append_rows(path: Path, rows: Iterable[dict]) -> pd.DataFrame:
    """Add `rows` (replacing rows with the same key) and return the whole leaderboard.

    Safe with any number of concurrent writers, sweep workers or cluster jobs: the lock is an
    flock on `<path>.lock`, which the kernel releases if its holder dies, and the new table is
    renamed into place, so readers need no lock: they see the old file or the new one, whole.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = pd.DataFrame(list(rows))
    missing = [c for c in KEY if c not in new.columns]
    if missing:
        raise ValueError(f"leaderboard rows lack key columns {missing}")
    with FileLock(str(path) + ".lock"):
        old = read(path)
        frames = [f for f in (old, new) if not f.empty]
        table = pd.concat(frames, ignore_index=True) if frames else new
        table = table.drop_duplicates(subset=KEY, keep="last")
        columns = COLUMNS + [c for c in table.columns if c not in COLUMNS]
        table = table.reindex(columns=columns)
        buf = io.StringIO()
        table.to_csv(buf, index=False)
        atomic_write_bytes(path, buf.getvalue().encode())
    return table


def format_summary(table: pd.DataFrame) -> str:
    """A text table per (data set, backbone, protocol): tasks × K, `mean ± std (n)`, * = best."""
    stats = summarize(table)
    if stats.empty:
        return "the leaderboard is empty: run `ssl-bench` (or `make smoke`) first"
    blocks = []
    for (dataset, pretrained_on, backbone, protocol), part in stats.groupby(CELL[:4], dropna=False):
        cells = part.assign(cell=[
            f"{m:.2f} ± {0.0 if math.isnan(s) else s:.2f} ({n}){' *' if b else ''}"
            for m, s, n, b in zip(part["mean"], part["std"], part["n"], part["best"])])
        grid = cells.pivot(index="task", columns="labels_per_class", values="cell").fillna("-")
        grid.columns = [f"K={k}" for k in grid.columns]
        source = dataset if pretrained_on == dataset else f"{pretrained_on} -> {dataset}"
        blocks.append(f"{source} / {backbone} / {protocol} — test accuracy % "
                      f"(mean ± std over seeds (n), * best per K)\n{grid.to_string()}")
    return "\n\n".join(blocks)


@interruptible("ssl-bench-leaderboard")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ssl-bench-leaderboard",
        description="Print the leaderboard summary and regenerate the report (LEADERBOARD.md, plots).")
    parser.add_argument("--path", default="runs/leaderboard.csv", help="leaderboard CSV")
    parser.add_argument("--report-dir", default=None,
                        help="where LEADERBOARD.md and the plots go (default: the CSV's folder)")
    parser.add_argument("--no-report", action="store_true", help="only print the summary")
    args = parser.parse_args(argv)
    path = Path(args.path)
    if not path.exists():
        print(f"no leaderboard at {path}: run `ssl-bench` or `make smoke` first, or pass --path",
              file=sys.stderr)
        return 2
    table = read(path)
    print(format_summary(table))
    if not args.no_report:
        from ssl_bench.report import write_report  # matplotlib only when a report is wanted

        out_dir = Path(args.report_dir) if args.report_dir else path.parent
        for written in write_report(table, out_dir):
            print(f"wrote {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
