"""Item 8b's table: conv3_linear with BatchNorm re-estimated on whole images minus the same cell
as in the benchmark, paired by seed (same pretraining, labelled subsets and initialisation).

    .venv/bin/python runs/reference/bn_recalibrate/compare.py BENCHMARK_CSV RECAL_CSV... > comparison.md

Rows of `task=external` (`ext-<method>`: a bf16 pretraining's exported weights, evaluated in
fp32 on a CPU without native bf16) count as that method. Their rows with the re-estimation off
(seed 0) measure the precision change alone and are listed apart.
"""
import sys

import pandas as pd
from scipy.stats import spearmanr

from ssl_bench.stats import t_halfwidth

KEY = ["task", "labels_per_class", "seed"]


def load(path: str) -> pd.DataFrame:
    t = pd.read_csv(path)
    t = t[(t.protocol == "conv3_linear")
          & (pd.to_numeric(t.eval_budget_scale, errors="coerce").fillna(1) == 1)].copy()
    t["task"] = t.task.str.removeprefix("ext-")
    return t


bench = load(sys.argv[1])
recal = pd.concat([load(p) for p in sys.argv[2:]], ignore_index=True)
# Which rows re-estimated BatchNorm is in each run's config, not in the CSV: the recal
# leaderboards hold only re-estimated rows except the external seed-0 precision checks,
# whose run directories say `norecal`.
plain = recal.run_dir.astype(str).str.contains("norecal")
m = recal[~plain].merge(bench, on=KEY, suffixes=("_re", "_bench"))
assert (m.eval_steps_re == m.eval_steps_bench).all() and (m.eval_augment_re == m.eval_augment_bench).all()
m["diff"] = m.test_acc_re - m.test_acc_bench
rows = []
for (task, k), g in m.groupby(["task", "labels_per_class"]):
    d = g["diff"]
    h = t_halfwidth(float(d.std(ddof=1)), len(g))
    rows.append({"task": task, "k": k, "n": len(g), "before": g.test_acc_bench.mean(),
                 "before_sd": g.test_acc_bench.std(ddof=1), "after": g.test_acc_re.mean(),
                 "after_sd": g.test_acc_re.std(ddof=1), "d": d.mean(), "lo": d.mean() - h,
                 "hi": d.mean() + h, "precision": "/".join(sorted(set(g.precision_re)))})
s = pd.DataFrame(rows)
s["rank_before"] = s.before.rank(ascending=False).astype(int)
s["rank_after"] = s.after.rank(ascending=False).astype(int)
print("| method | K | seeds | evaluator precision (re-estimated) | as in the benchmark "
      "| with re-estimated BN | paired change [95% CI] | rank: before → after |")
print("|:---|---:|---:|:---|---:|---:|---:|:---:|")
for r in s.sort_values("before", ascending=False).itertuples():
    star = " *" if r.lo > 0 or r.hi < 0 else ""
    print(f"| {r.task} | {r.k} | {r.n} | {r.precision} | {r.before:.2f} ± {r.before_sd:.2f} | "
          f"{r.after:.2f} ± {r.after_sd:.2f} | {r.d:+.2f} [{r.lo:+.2f}, {r.hi:+.2f}]{star} | "
          f"{r.rank_before} → {r.rank_after} |")
rho = spearmanr(s.before, s.after).statistic
print(f"\nSpearman rank correlation of the method means: {rho:.3f} (n={len(s)})")
if plain.any():
    p = recal[plain].merge(bench, on=KEY, suffixes=("_fp32", "_bench"))
    print("\nPrecision alone (re-estimation off): the exported bf16 weights evaluated in fp32 minus the "
          "benchmark's bf16 cell, same seed\n")
    print("| method | K | seed | benchmark (bf16) | external (fp32) | difference |")
    print("|:---|---:|---:|---:|---:|---:|")
    for r in p.sort_values(["task", "seed"]).itertuples():
        print(f"| {r.task} | {r.labels_per_class} | {r.seed} | {r.test_acc_bench:.2f} | "
              f"{r.test_acc_fp32:.2f} | {r.test_acc_fp32 - r.test_acc_bench:+.2f} |")
