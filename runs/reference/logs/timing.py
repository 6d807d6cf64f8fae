"""Where the reference run's seconds went, by machine, and what one `make benchmark` of the
cpu profile costs on each machine that ran part of it.

The run spans machines (rows without `machine` are from the two Zen 5 sessions of
2026-12-02, before the column existed; see README.md), so its wall-clock span says nothing
about the profile's cost. This sums the measured seconds instead: pretraining once per
pretraining, every ranked row's evaluation (budget scale 1, the probes included), and the
convergence check's rows apart. Run from the folder of the CSV:

    python logs/timing.py leaderboard.csv [leaderboard_k400_64passes.csv]

With the archive of the 64-pass K=400 rows it also projects one whole `make benchmark` +
`make converge` of the cpu profile on a quiet Zen 5 in bf16, from cells measured there: the
64-pass run's checks *were* 4,000-step K=400 cells in bf16 on Zen 5 (random, rotation,
supervised), which is the profile's K=400 budget now; each frozen cell costs the same
whatever the method (same backbone, same steps). Cells take their median over seeds: some
shared the cores with tests (`pauses.txt`; one random check cell took 642 s against 149-183 s
for the other five frozen ones). Only seconds of rows count: process start, data loading and
the report are not in them.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd


def load(path: str) -> pd.DataFrame:
    """The rows, with a short machine name (rows without one are Zen 5's, from before the
    column), the budget scale as a number, and which part of the run each row is."""
    rows = pd.read_csv(path)
    rows["machine"] = rows["machine"].map(
        lambda m: "Zen 5" if pd.isna(m) else "Zen 3" if "family 25 model 1" in m else m)
    rows["scale"] = pd.to_numeric(rows["eval_budget_scale"], errors="coerce").fillna(1.0)
    rows["kind"] = np.where(rows["protocol"] == "conv3_linear",
                            np.where(np.isclose(rows["scale"], 1.0), "evaluator", "check"), "probes")
    return rows


table = load(sys.argv[1])

pre = (table.dropna(subset=["pretrain_id"]).sort_values("started_at")
       .groupby("pretrain_id").first())  # the first row that used it: where it ran, if not reused
pre = pre[["task", "pretrain_seconds", "pretrain_precision", "precision"]]
pre["pretrain_precision"] = pre["pretrain_precision"].fillna(pre["precision"])
print("## Pretraining (once per pretraining; all but supervised_pretrain ran on Zen 5 in bf16)\n")
print(pre[["task", "pretrain_precision", "pretrain_seconds"]].to_string(index=False))
print(f"\ntotal {pre['pretrain_seconds'].sum():,.0f} s\n")


def fastest_epoch_total(pretrain_id: str) -> float:
    """Epochs x the fastest epoch of one pretraining (`metrics.jsonl` beside the CSV): its
    seconds on a quiet machine, where some epochs shared the cores or spanned a SIGSTOP."""
    metrics = Path(sys.argv[1]).parent / "pretrain" / pretrain_id / "metrics.jsonl"
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    epochs = {(r["phase"], r["epoch"]): r["epoch_seconds"] for r in records if "epoch_seconds" in r}
    return len(epochs) * min(epochs.values())


pre["fastest_epoch_total"] = [fastest_epoch_total(i) for i in pre.index]
print("Epochs x each pretraining's fastest epoch (what a quiet machine takes; rotation's first three")
print("epochs and multitask's first two ran 3-7x slower than their last: contention, SIGSTOP):\n")
print(pre[["task", "pretrain_seconds", "fastest_epoch_total"]].round(0).to_string(index=False))
print(f"\ntotal {pre['fastest_epoch_total'].sum():,.0f} s\n")

print("## Evaluation seconds by machine and part (sum over rows)\n")
ev = table.groupby(["machine", "precision", "kind"])["eval_seconds"].agg(["sum", "count"])
print(ev.to_string(), "\n")

print("## Evaluator cells at budget 1: mean seconds a seed, by K and machine\n")
cells = table[table["kind"] == "evaluator"]
per = cells.pivot_table(index="task", columns=["labels_per_class", "machine"], values="eval_seconds",
                        aggfunc="mean")
print(per.round(0).to_string(), "\n")
total_eval = table.loc[table["kind"] != "check", "eval_seconds"].sum()
total_check = table.loc[table["kind"] == "check", "eval_seconds"].sum()
print(f"ranked benchmark: pretraining {pre['pretrain_seconds'].sum():,.0f} s + evaluation "
      f"{total_eval:,.0f} s = {pre['pretrain_seconds'].sum() + total_eval:,.0f} s (mixed machines)")
print(f"convergence check rows: {total_check:,.0f} s")

if len(sys.argv) < 3:
    sys.exit(0)
# ---- projection: one quiet Zen 5, bf16 (see the docstring)
old = load(sys.argv[2])
k400 = old[(old["machine"] == "Zen 5") & (old["eval_samples"] == 512000) & (old["kind"] == "check")]
scratch = {"supervised"}
frozen_400 = k400.loc[~k400["task"].isin(scratch), "eval_seconds"]
scratch_400 = k400.loc[k400["task"].isin(scratch), "eval_seconds"]
zen5 = table[table["machine"] == "Zen 5"]
methods = sorted(table["task"].unique())
frozen = [m for m in methods if m not in scratch]
small = zen5[(zen5["kind"] == "evaluator") & zen5["labels_per_class"].isin([20, 100])]
per_cell = small.groupby(["task", "labels_per_class"])["eval_seconds"].median()
frozen_small = small[~small["task"].isin(scratch)].groupby("labels_per_class")["eval_seconds"].median()
k_small = sum(per_cell.get((m, k), frozen_small[k]) * 3 for m in methods for k in (20, 100))
probes_per_method = zen5[zen5["kind"] == "probes"].groupby("task")["eval_seconds"].sum()
probes = probes_per_method.reindex(frozen).fillna(probes_per_method.mean()).sum()
k_large = 3 * (len(frozen) * frozen_400.median() + len(scratch) * scratch_400.median())
check_20 = zen5[(zen5["kind"] == "check") & (zen5["labels_per_class"] == 20)]["eval_seconds"].sum()
check_400 = 3 * 2 * (2 * frozen_400.median() + scratch_400.median())  # random, rotation; supervised
parts = {"pretraining (epochs x fastest epoch; supervised_pretrain's on Zen 3 in fp32)":
         pre["fastest_epoch_total"].sum(),
         "K = 20, 100 (measured on Zen 5, median a cell; supervised_pretrain's at the frozen "
         "median)": k_small,
         f"K = 400 at 4,000 steps ({len(frozen_400)} frozen cells measured, median "
         f"{frozen_400.median():.0f} s; supervised {scratch_400.median():.0f} s)": k_large,
         "probes (measured on Zen 5; supervised_pretrain's at the mean)": probes}
print("\n## One quiet Zen 5 in bf16: `make benchmark`, projected from measured cells\n")
for name, seconds in parts.items():
    print(f"{seconds:9,.0f} s  {name}")
bench = sum(parts.values())
print(f"{bench:9,.0f} s  = {bench / 3600:.1f} h  make benchmark")
print(f"{check_20:9,.0f} s  check K=20 (measured)")
print(f"{check_400:9,.0f} s  check K=400 at 8,000 steps (twice the 4,000-step cells)")
print(f"{bench + check_20 + check_400:9,.0f} s  = {(bench + check_20 + check_400) / 3600:.1f} h  "
      "make benchmark + make converge")
