"""Where the reference run's seconds went, by machine, and what one `make benchmark` of the
cpu profile costs on each machine that ran part of it.

The run spans machines (rows without `machine` are from the two Zen 5 sessions of
2026-12-02, before the column existed; see README.md), so its wall-clock span says nothing
about the profile's cost. This sums the measured seconds instead: pretraining once per
pretraining, every ranked row's evaluation (budget scale 1, the probes included), and the
convergence check's rows apart. Run from the folder of the CSV:

    python logs/timing.py leaderboard.csv
"""

import sys

import numpy as np
import pandas as pd

ZEN5 = "AMD EPYC family 26 model 2 (Zen 5), bf16 (rows before the machine column)"
table = pd.read_csv(sys.argv[1])
table["machine"] = table["machine"].fillna(ZEN5).map(
    lambda m: "Zen 5" if m == ZEN5 else "Zen 3" if "family 25 model 1" in m else m)
table["scale"] = pd.to_numeric(table["eval_budget_scale"], errors="coerce").fillna(1.0)
table["kind"] = np.where(table["protocol"] == "conv3_linear",
                         np.where(np.isclose(table["scale"], 1.0), "evaluator", "check"), "probes")

pre = (table.dropna(subset=["pretrain_id"]).sort_values("started_at")
       .groupby("pretrain_id").first())  # the first row that used it: where it ran, if not reused
pre = pre[["task", "pretrain_seconds", "pretrain_precision", "precision"]]
pre["pretrain_precision"] = pre["pretrain_precision"].fillna(pre["precision"])
print("## Pretraining (once per pretraining; all but supervised_pretrain ran on Zen 5 in bf16)\n")
print(pre[["task", "pretrain_precision", "pretrain_seconds"]].to_string(index=False))
print(f"\ntotal {pre['pretrain_seconds'].sum():,.0f} s\n")

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
