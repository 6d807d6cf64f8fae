"""Statistics over leaderboard rows: the summary of each cell, budgets and paired differences.

The one place for them: the printed summary (`leaderboard`), the report and the search
comparison all read `summarize`. Beyond the summary, two questions a ranking must answer
before anyone believes it:

- **Is each number converged?** The convergence check reruns cells of the leaderboard with
  the evaluator's labelled-sample budget doubled (`eval.budget_scale=2`, rows marked by
  `eval_budget_scale`). `convergence` pairs every such row with the row of the same run at
  budget 1 (same method, seed, K, protocol, pretraining, and the budget it doubles) and
  reports the mean change.
  Rows at a scale other than 1 are check rows only: `main_rows` keeps them out of every
  ranking and summary.
- **Is a difference between two methods real?** Every method with the same seed is
  evaluated on the same labelled subsets, so differences are paired: `paired_differences`
  takes, per seed, method minus baseline, and gives the mean of those differences with a
  Student-t 95% interval over seeds — not the overlap of two unpaired intervals, which
  ignores that the seeds' subsets move both methods together.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ssl_bench.chance import flagged

KEY = ["run_id", "protocol", "labels_per_class"]  # one row of the leaderboard
SETTING = ["dataset", "pretrain_dataset", "backbone"]  # what one comparison holds fixed
MAIN_PROTOCOL = "conv3_linear"
CONVERGENCE_TOLERANCE = 1.0  # points of mean accuracy between budgets B and 2B


def t_halfwidth(std: float, n: int) -> float:
    """Half-width of the 95% interval of a mean of `n` values with sample std `std` (Student t)."""
    if n < 2 or std is None or math.isnan(std):
        return math.nan
    from scipy.stats import t

    return float(t.ppf(0.975, n - 1) * std / math.sqrt(n))


def budget_scale(table: pd.DataFrame) -> pd.Series:
    """Each row's evaluation budget scale; rows from before the column existed count as 1."""
    if "eval_budget_scale" not in table.columns:
        return pd.Series(1.0, index=table.index)
    return pd.to_numeric(table["eval_budget_scale"], errors="coerce").fillna(1.0)


def results_version(table: pd.DataFrame) -> pd.Series:
    """Each row's results version (`ssl_bench.versions`); rows from before versioning are 1."""
    if "results_version" not in table.columns:
        return pd.Series(1, index=table.index)
    return pd.to_numeric(table["results_version"], errors="coerce").fillna(1).astype(int)


def unique_rows(table: pd.DataFrame) -> pd.DataFrame:
    """One row per key (run_id, protocol, K): of rows that share one, the last in the file.

    `append_rows` never writes two rows with one key, but two leaderboards merged by hand
    can hold both; counting both would weigh that result twice. The last one is the one a
    later append would have left.
    """
    if not set(KEY) <= set(table.columns):
        return table
    return table.drop_duplicates(subset=KEY, keep="last")


def duplicate_rows(table: pd.DataFrame) -> int:
    """How many rows `unique_rows` leaves out (the summary and the report say so)."""
    return len(table) - len(unique_rows(table))


def duplicates_note(table: pd.DataFrame) -> str | None:
    """The sentence the summary and the report add when rows share a key, else None."""
    n = duplicate_rows(table)
    if not n:
        return None
    return (f"{n} row(s) share their (run_id, protocol, labels_per_class) with a later row of the "
            "CSV (merged leaderboards?): only the last of each is counted; remove the others from "
            "the CSV to silence this.")


def at_chance_rows(table: pd.DataFrame) -> pd.Series:
    """Which rows are flagged at chance level (`ssl_bench.chance`); rows from before the
    `at_chance` column are not."""
    if "at_chance" not in table.columns:
        return pd.Series(False, index=table.index)
    return flagged(table["at_chance"])


def current_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Rows of the newest results version in the table, one per key (`unique_rows`): rows
    of older versions measured something else and are never compared with them (they stay
    in the CSV)."""
    table = unique_rows(table)
    if table.empty:
        return table
    version = results_version(table)
    return table[version == version.max()]


def main_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The rows that rank methods: the newest results version, at the leaderboard's budget
    (scale 1)."""
    table = current_rows(table)
    return table[np.isclose(budget_scale(table), 1.0)]


def prepare(table: pd.DataFrame) -> pd.DataFrame:
    """A typed copy of leaderboard rows that every statistic starts from.

    Rows without an accuracy or a K are dropped; a missing `pretrain_dataset` means the
    backbone was pretrained on the evaluation data (the only case before transfer existed).
    """
    df = table.copy()
    if "pretrain_dataset" not in df.columns:
        df["pretrain_dataset"] = df["dataset"]
    df["pretrain_dataset"] = df["pretrain_dataset"].astype(object).where(
        df["pretrain_dataset"].notna(), df["dataset"])
    df["test_acc"] = pd.to_numeric(df["test_acc"], errors="coerce")
    df["labels_per_class"] = pd.to_numeric(df["labels_per_class"], errors="coerce").round().astype("Int64")
    return df[df["test_acc"].notna() & df["labels_per_class"].notna()]


CELL = SETTING + ["protocol", "labels_per_class", "task"]  # one number of a ranking
SUMMARY_COLUMNS = CELL + ["mean", "std", "n", "ci95", "lo", "hi", "rank", "best", "at_chance"]


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """Per (setting, protocol, K, method): mean, std, seed count, 95% CI (`ci95`, `lo`, `hi`)
    and the rank within its (setting, protocol, K); `best` marks rank 1, `at_chance` a cell
    with any row at chance level (`ssl_bench.chance`).

    The one summary behind the printed table, the report and the search comparison, so they
    cannot disagree on a number. Rows of the convergence check (`eval_budget_scale` > 1)
    never enter it, and rows that share a key count once (`unique_rows`).
    """
    df = prepare(main_rows(table))
    if df.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    df = df.assign(at_chance=at_chance_rows(df))
    stats = (df.groupby(CELL, dropna=False)
             .agg(mean=("test_acc", "mean"), std=("test_acc", "std"), n=("test_acc", "count"),
                  at_chance=("at_chance", "any")).reset_index())
    stats["n"] = stats["n"].astype(int)
    stats["ci95"] = [t_halfwidth(s, n) for s, n in zip(stats["std"], stats["n"])]
    stats["lo"] = stats["mean"] - stats["ci95"]
    stats["hi"] = stats["mean"] + stats["ci95"]
    ranks = stats.groupby(CELL[:-1], dropna=False)["mean"].rank(ascending=False, method="min")
    stats["rank"] = ranks.astype(int)
    stats["best"] = stats["rank"] == 1
    return stats[SUMMARY_COLUMNS]


CONVERGENCE_COLUMNS = SETTING + ["protocol", "labels_per_class", "task", "scale", "base_samples", "n",
                                 "mean_b", "mean_2b", "delta", "status"]


def convergence(table: pd.DataFrame, tolerance: float = CONVERGENCE_TOLERANCE) -> pd.DataFrame:
    """Per (setting, protocol, K, method) with check rows: mean at budget 1 and at the larger
    budget over the seeds that have both, their difference, and `pass`/`fail` (|delta| <=
    `tolerance` points). A check pairs with the budget-1 rows whose labelled samples it
    multiplies (`base_samples`; "-" where rows do not record them), so a cell checked at two
    budgets has a line for each. Cells without check rows are absent (see `convergence_status`)."""
    df = prepare(current_rows(table))
    if df.empty:
        return pd.DataFrame(columns=CONVERGENCE_COLUMNS)
    # a cell pairs with the row of its own pretraining; "-" (none) so that it can be matched
    df["pretrain_id"] = df["pretrain_id"].astype(object).fillna("-") if "pretrain_id" in df else "-"
    df["scale"] = budget_scale(df)
    # ... and with the row whose budget it doubles: a K rerun at a new budget leaves two
    # budget-1 rows per cell, and a check row must not be compared with their average.
    # Rows without `eval_samples` (older CSVs) pair as before, on "-".
    samples = pd.to_numeric(df["eval_samples"], errors="coerce") if "eval_samples" in df else np.nan
    base_samples = (pd.Series(samples, index=df.index) / df["scale"]).round()
    df["base_samples"] = base_samples.astype(object).where(base_samples.notna(), "-")
    pair_key = SETTING + ["protocol", "labels_per_class", "task", "seed", "pretrain_id", "base_samples"]
    base = df[np.isclose(df["scale"], 1.0)].groupby(pair_key, dropna=False)["test_acc"].mean()
    checks = df[df["scale"] > 1.0]
    rows = []
    for (scale, at_b, *cell), part in checks.groupby(
            ["scale", "base_samples"] + SETTING + ["protocol", "labels_per_class", "task"], dropna=False):
        longer = part.groupby(pair_key, dropna=False)["test_acc"].mean()
        both = longer.index.intersection(base.index)
        if not len(both):
            continue
        mean_b, mean_2b = float(base.loc[both].mean()), float(longer.loc[both].mean())
        delta = mean_2b - mean_b
        rows.append([*cell, float(scale), at_b, len(both), mean_b, mean_2b, delta,
                     "pass" if abs(delta) <= tolerance else "fail"])
    return pd.DataFrame(rows, columns=CONVERGENCE_COLUMNS)


def convergence_status(checks: pd.DataFrame, setting: tuple, protocol: str, k: int, task: str) -> str:
    """`pass`, `fail` or `not run` for one cell (a failure at any checked scale or base
    budget is a failure: a cell that holds two budgets is not like for like anyway, and the
    report's header names it)."""
    if checks.empty:
        return "not run"
    hit = checks
    for col, value in zip(SETTING + ["protocol", "labels_per_class", "task"], (*setting, protocol, k, task)):
        hit = hit[hit[col] == value]
    if hit.empty:
        return "not run"
    return "fail" if (hit["status"] == "fail").any() else "pass"


PAIRED_COLUMNS = SETTING + ["protocol", "labels_per_class", "task", "baseline", "n", "mean_diff",
                            "std_diff", "ci95", "lo", "hi"]


def paired_differences(table: pd.DataFrame, baseline: str, protocol: str | None = None) -> pd.DataFrame:
    """Method minus `baseline`, paired by seed, per (setting, protocol, K, method).

    Only seeds that both have count; several rows of one (method, seed) cell are averaged.
    `ci95` is the Student-t half-width over the per-seed differences (n/a below 2 seeds);
    the interval excludes 0 when `lo > 0` or `hi < 0`.
    """
    df = prepare(main_rows(table))
    if protocol is not None:
        df = df[df["protocol"] == protocol]
    if df.empty:
        return pd.DataFrame(columns=PAIRED_COLUMNS)
    key = SETTING + ["protocol", "labels_per_class"]
    cells = df.groupby(key + ["task", "seed"], dropna=False)["test_acc"].mean().reset_index()
    rows = []
    for group, part in cells.groupby(key, dropna=False):
        ref = part[part["task"] == baseline].set_index("seed")["test_acc"]
        if ref.empty:
            continue
        for task, other in part[part["task"] != baseline].groupby("task"):
            mine = other.set_index("seed")["test_acc"]
            seeds = mine.index.intersection(ref.index)
            if not len(seeds):
                continue
            diffs = (mine.loc[seeds] - ref.loc[seeds]).to_numpy(dtype=float)
            n = len(diffs)
            mean = float(diffs.mean())
            std = float(diffs.std(ddof=1)) if n > 1 else math.nan
            half = t_halfwidth(std, n)
            rows.append([*group, task, baseline, n, mean, std, half, mean - half, mean + half])
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)
