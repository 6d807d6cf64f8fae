"""fp32 minus bf16, paired by seed (same labelled subsets, same initialisation seed), per method and K.

    .venv/bin/python runs/reference/precision/paired.py FP32_CSV BF16_CSV [BF16_CSV...] [protocols...]

The bf16 rows may span several files (the reference's K=400 rows at 64 passes were archived
apart from its leaderboard when the cpu profile moved to 128 passes).
"""
import sys

import pandas as pd

from ssl_bench.stats import t_halfwidth

paths = [a for a in sys.argv[1:] if a.endswith(".csv")]
fp32 = pd.read_csv(paths[0])
bf16 = pd.concat([pd.read_csv(p) for p in paths[1:]], ignore_index=True)
protocols = [a for a in sys.argv[1:] if not a.endswith(".csv")] or ["conv3_linear", "supervised"]
key = ["task", "protocol", "labels_per_class", "seed"]
a = fp32[fp32.protocol.isin(protocols) & (fp32.precision == "fp32")]
b = bf16[bf16.protocol.isin(protocols) & (bf16.precision == "bf16")
         & (pd.to_numeric(bf16.eval_budget_scale, errors="coerce").fillna(1) == 1)]
m = a.merge(b, on=key, suffixes=("_fp32", "_bf16"))
assert (m.eval_steps_fp32 == m.eval_steps_bf16).all() and (m.eval_augment_fp32 == m.eval_augment_bf16).all()
m["diff"] = m.test_acc_fp32 - m.test_acc_bf16
print("| method | K | seeds | bf16 mean | fp32 mean | fp32 − bf16 [95% CI] | eval s bf16 → fp32 |")
print("|:---|---:|---:|---:|---:|---:|---:|")
for (task, k), g in m.groupby(["task", "labels_per_class"]):
    n, d = len(g), g["diff"]
    h = t_halfwidth(float(d.std(ddof=1)), n)
    print(f"| {task} | {k} | {n} | {g.test_acc_bf16.mean():.2f} | {g.test_acc_fp32.mean():.2f} | "
          f"{d.mean():+.2f} [{d.mean() - h:+.2f}, {d.mean() + h:+.2f}] | "
          f"{g.eval_seconds_bf16.mean():.0f} → {g.eval_seconds_fp32.mean():.0f} |")
