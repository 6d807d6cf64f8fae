"""Random init at K=400: 64, 128 and 256 passes per seed (bf16 rows of the 64-pass run and its
check; fp32 rows of session 28), and the 128 -> 256 change with its paired t interval."""
import sys
import pandas as pd
from scipy.stats import t
lb = pd.read_csv(sys.argv[1])
r = lb[(lb.task == "random") & (lb.labels_per_class == 400) & (lb.protocol == "conv3_linear")]
r = r.assign(passes=(r.eval_samples / 4000).round().astype(int))
print(r.pivot_table(index=["passes", "precision", "eval_budget_scale"], columns="seed", values="test_acc").round(2))
a = r[(r.passes == 128) & (r.precision == "fp32")].set_index("seed").test_acc
b = r[(r.passes == 256) & (r.precision == "fp32")].set_index("seed").test_acc
d = (b - a).dropna()
print("per-seed 128->256 (fp32):", d.round(2).to_dict())
if len(d) >= 2:
    h = t.ppf(0.975, len(d) - 1) * d.std() / len(d) ** 0.5
    print(f"mean change {d.mean():+.2f} [{d.mean()-h:+.2f}, {d.mean()+h:+.2f}] over {len(d)} seeds; means {a[d.index].mean():.2f} -> {b[d.index].mean():.2f}")
