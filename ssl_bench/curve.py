"""`ssl-bench-curve`: how much pretraining a profile needs, from a leaderboard's rows alone.

`make pretrain-curve` pretrains one task (rotation) for 1, 2, 4, 8, ... epochs, evaluates
each at a few K, and runs the random-init and supervised baselines at the same budget. This
turns those rows into a table (`pretrain_curve.md`) and a plot (`pretrain_curve.png`): the
held-out pretext metric and each K's accuracy against epochs, the gain of every doubling,
and the first number of epochs after which doubling gains less than `--tolerance` points at
every K — the number the profile should use, or a sign that the time budget ended first.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from ssl_bench.interrupts import interruptible
from ssl_bench.leaderboard import read_or_explain
from ssl_bench.paths import argument_path
from ssl_bench.runlog import atomic_write_bytes
from ssl_bench.schema import positive_number
from ssl_bench.stats import MAIN_PROTOCOL, main_rows

BASELINES = ("random", "supervised")


def curve_table(table: pd.DataFrame, task: str = "rotation") -> pd.DataFrame:
    """One row per pretraining length of `task`: epochs, pretext metric, accuracy per K (means)."""
    df = main_rows(table)
    df = df[(df["task"] == task) & (df["protocol"] == MAIN_PROTOCOL)].copy()
    if df.empty:
        return pd.DataFrame()
    df["pretrain_epochs"] = pd.to_numeric(df["pretrain_epochs"], errors="coerce")
    acc = df.pivot_table(index="pretrain_epochs", columns="labels_per_class", values="test_acc",
                         aggfunc="mean")
    acc.columns = [f"K={int(k)}" for k in acc.columns]
    out = df.groupby("pretrain_epochs").agg(pretext_metric=("pretext_metric", "mean"),
                                            pretrain_seconds=("pretrain_seconds", "max"),
                                            seeds=("seed", "nunique"))
    return out.join(acc).reset_index().sort_values("pretrain_epochs")


def baselines(table: pd.DataFrame) -> pd.DataFrame:
    """Mean accuracy per K of the baselines in the same leaderboard."""
    df = main_rows(table)
    df = df[df["task"].isin(BASELINES) & (df["protocol"] == MAIN_PROTOCOL)]
    return df.pivot_table(index="task", columns="labels_per_class", values="test_acc", aggfunc="mean")


def enough_epochs(curve: pd.DataFrame, tolerance: float) -> float | None:
    """The first epochs value whose doubling gained less than `tolerance` at every K."""
    ks = [c for c in curve.columns if c.startswith("K=")]
    rows = curve.set_index("pretrain_epochs")
    for epochs in rows.index:
        if 2 * epochs in rows.index:
            gains = rows.loc[2 * epochs, ks] - rows.loc[epochs, ks]
            if gains.notna().all() and (gains < tolerance).all():
                return float(epochs)
    return None


def render(curve: pd.DataFrame, base: pd.DataFrame, tolerance: float, task: str) -> str:
    ks = [c for c in curve.columns if c.startswith("K=")]
    lines = [f"# Pretraining curve: {task}", "",
             f"{MAIN_PROTOCOL} test accuracy % (mean over seeds) after pretraining for E epochs; "
             "held-out pretext metric on test images; gain = change since half the epochs.", ""]
    header = ["epochs", "pretext metric", "pretrain s", "seeds"] + ks + [f"gain {k}" for k in ks]
    lines += ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    rows = curve.set_index("pretrain_epochs")
    for epochs, r in rows.iterrows():
        half = epochs / 2
        gains = [f"{r[k] - rows.loc[half, k]:+.2f}" if half in rows.index else "–" for k in ks]
        lines.append("| " + " | ".join([f"{epochs:g}", f"{r['pretext_metric']:.2f}",
                                         f"{r['pretrain_seconds']:.0f}", f"{int(r['seeds'])}"]
                                        + [f"{r[k]:.2f}" for k in ks] + gains) + " |")
    lines.append("")
    if not base.empty:
        lines += ["Baselines at the same evaluation budget: " + "; ".join(
            f"{task_}: " + ", ".join(f"K={int(k)} {v:.2f}" for k, v in row.dropna().items())
            for task_, row in base.iterrows()), ""]
    enough = enough_epochs(curve, tolerance)
    lines.append(f"Doubling gains less than {tolerance:g} point at every K from {enough:g} epochs on."
                 if enough is not None else
                 f"No doubling measured here gains less than {tolerance:g} point at every K: "
                 "more epochs would still help.")
    return "\n".join(lines) + "\n"


def plot(curve: pd.DataFrame, base: pd.DataFrame, path: Path, task: str) -> None:
    from matplotlib.figure import Figure

    ks = [c for c in curve.columns if c.startswith("K=")]
    fig = Figure(figsize=(10, 4), layout="constrained")
    left, right = fig.subplots(1, 2)
    left.plot(curve["pretrain_epochs"], curve["pretext_metric"], marker="o")
    left.set(xscale="log", xlabel="pretraining epochs", ylabel="held-out pretext metric",
             title=f"{task}: pretext task")
    for k in ks:
        line = right.plot(curve["pretrain_epochs"], curve[k], marker="o", label=f"{task} {k}")[0]
        kk = int(k[2:])
        for name, style in zip(BASELINES, ("--", ":")):
            if name in base.index and kk in base.columns:
                right.axhline(base.loc[name, kk], linestyle=style, color=line.get_color(),
                              label=f"{name} {k}")
    right.set(xscale="log", xlabel="pretraining epochs", ylabel=f"{MAIN_PROTOCOL} test accuracy %",
              title="downstream accuracy")
    right.legend(fontsize=7)
    for ax in (left, right):
        ax.set_xticks(curve["pretrain_epochs"].tolist(), [f"{e:g}" for e in curve["pretrain_epochs"]])
        ax.grid(alpha=0.3)
    fig.savefig(path, dpi=120)


@interruptible("ssl-bench-curve")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ssl-bench-curve", description=__doc__.splitlines()[0])
    parser.add_argument("--path", type=argument_path, default="runs/curve/leaderboard.csv",
                        help="leaderboard CSV")
    parser.add_argument("--out", type=argument_path, default=None,
                        help="folder for pretrain_curve.{md,png} (default: the CSV's)")
    parser.add_argument("--task", default="rotation")
    parser.add_argument("--tolerance", type=positive_number, default=1.0,
                        help="points; 'doubling gains less'")
    args = parser.parse_args(argv)
    path = Path(args.path)
    table = read_or_explain(path, "ssl-bench-curve", "run `make pretrain-curve` first or pass --path")
    if table is None:
        return 2
    curve = curve_table(table, args.task)
    if curve.empty:
        print(f"ssl-bench-curve: error: {path} has no {MAIN_PROTOCOL} rows of task {args.task}",
              file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else path.parent
    out.mkdir(parents=True, exist_ok=True)
    text = render(curve, baselines(table), args.tolerance, args.task)
    atomic_write_bytes(out / "pretrain_curve.md", text.encode())
    plot(curve, baselines(table), out / "pretrain_curve.png", args.task)
    print(text)
    print(f"wrote {out / 'pretrain_curve.md'} and {out / 'pretrain_curve.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
