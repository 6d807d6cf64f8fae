"""The benchmark's written report, regenerated from the leaderboard CSV alone.

`write_report` turns the leaderboard (one row per (run, protocol, K)) into `LEADERBOARD.md`
(ranked tables with confidence intervals, an overview, the best probed stage per method, the
compute spent) and two plots. Everything is derived from the CSV, so the report can be rebuilt
at any time, for instance while a sweep is still appending rows, and never drifts from it.
Files are replaced atomically, so a reader never sees a half-written report.
"""

from __future__ import annotations

import io
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ssl_bench.runlog import atomic_write_bytes
from ssl_bench.stats import (
    CONVERGENCE_TOLERANCE,
    MAIN_PROTOCOL,
    SETTING,
    budget_scale,
    convergence,
    convergence_status,
    current_rows,
    duplicates_note,
    main_rows,
    paired_differences,
    prepare,
    results_version,
    summarize,
    unique_rows,
)

PROTOCOL_ORDER = [MAIN_PROTOCOL, "finetune", "linear_probe_conv1", "linear_probe_conv2", "linear_probe_conv3",
                  "knn_conv2", "knn_conv3", "knn_cosine_conv2", "knn_cosine_conv3"]
# what each kind of protocol measures: the first line of its sections (matched by prefix)
PROTOCOL_NOTES = {
    MAIN_PROTOCOL: "conv1-conv2 frozen, conv3 (re-initialised) + linear trained on the K labels per class.",
    "finetune": "every layer trained from the method's weights on the K labels, with the supervised "
                "baseline's budget and augmentation (for random init it is supervised training).",
    "linear_probe_": "logistic regression on the stage's frozen features (2x2-pooled).",
    "knn_cosine_": "temperature-weighted cosine k-NN on the stage's globally pooled frozen features "
                   "(each of the k nearest votes exp(similarity / T); defaults k=200, T=0.1, as InstDisc, "
                   "solo-learn and lightly report it).",
    "knn_": "distance-weighted cosine k-NN (k = eval.probes.knn_k, default 20) on the stage's 2x2-pooled "
            "frozen features.",
}
PROBE = re.compile(r"^linear_probe_(conv\d+)$")
MARKDOWN_NAME = "LEADERBOARD.md"
ACCURACY_PLOT = "accuracy_vs_labels.png"
PRETEXT_PLOT = "pretext_vs_downstream.png"
# Columns added to the leaderboard over time: an old CSV lacks them, the report must not.
OPTIONAL = ["pretrain_dataset", "pretrain_reused", "pretrain_id", "started_at", "finished_at",
            "pretext_metric", "pretext_metric_name", "pretrain_seconds", "eval_seconds",
            "profile", "git_sha", "seed", "precision", "pretrain_precision", "machine",
            "pretrain_epochs"]
# Conditions that should be one value for every method a table compares; `_conditions_note`
# names the methods of each value when they are not (e.g. a run finished on another machine).
CONDITIONS = {"precision": "precision", "pretrain_precision": "pretraining precision",
              "pretrain_epochs": "pretraining passes (pretext methods)", "machine": "machine"}
# What the evaluator gives every method at one K (rows that train: conv3_linear, supervised,
# finetune): a comparison is like for like only if these are one value per (setting, protocol, K).
CELL_CONDITIONS = {"eval_samples": "labelled-sample budget", "eval_augment": "evaluator augmentation"}
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">"]


# ----------------------------------------------------------------------------- preparation


def _prepare(table: pd.DataFrame) -> pd.DataFrame:
    """`stats.prepare` plus every optional column the report reads, typed (an old CSV lacks
    some of them; the report must not fail on it)."""
    df = table.copy()
    for col in ["run_id", "task", "dataset", "backbone", "protocol", "labels_per_class", "test_acc",
                *OPTIONAL]:
        if col not in df.columns:
            df[col] = np.nan
    df = prepare(df).copy()
    for col in ["pretext_metric", "pretrain_seconds", "eval_seconds"]:
        df[col] = pd.to_numeric(df[col], errors="coerce")
    for col in ["started_at", "finished_at"]:
        df[col] = pd.to_datetime(df[col], utc=True, errors="coerce", format="ISO8601")
    df["labels_per_class"] = df["labels_per_class"].astype(int)
    return df.reset_index(drop=True)


def _protocol_rank(protocol: str) -> tuple[int, str]:
    """Main protocol first, then the probes in depth order, then anything else alphabetically."""
    if protocol in PROTOCOL_ORDER:
        return PROTOCOL_ORDER.index(protocol), ""
    return len(PROTOCOL_ORDER), str(protocol)


def _setting_label(dataset: str, pretrain_dataset: str, backbone: str) -> str:
    pre = "" if pretrain_dataset == dataset else f" (pretrained on {pretrain_dataset})"
    return f"{dataset}{pre} / {backbone}"


# ----------------------------------------------------------------------------- formatting


def _num(x: float, digits: int = 2) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _duration(seconds: float) -> str:
    """Seconds as a human reading (`3 h 05 min`), next to the exact number in the tables."""
    if seconds is None or math.isnan(seconds):
        return "n/a"
    s = int(round(seconds))
    if s < 60:
        return f"{seconds:.1f} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def _secs(seconds: float) -> str:
    """Exact seconds plus the human reading, e.g. `292.0 s (4 min 52 s)`."""
    if seconds is None or math.isnan(seconds):
        return "n/a"
    human = _duration(seconds)
    return f"{seconds:.1f} s" + ("" if human.endswith(f"{seconds:.1f} s") else f" ({human})")


def _stamp(ts: pd.Timestamp) -> str:
    return "n/a" if ts is None or pd.isna(ts) else ts.strftime("%Y-%m-%d %H:%M:%S UTC")


def _md_table(header: list[str], rows: list[list[str]], align: list[str]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---:" if a == "r" else ":---" for a in align) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


CHANCE_MARK = "†"


def _chance(r: pd.Series) -> str:
    """The mark after a number whose cell holds a row at chance level."""
    return CHANCE_MARK if r.get("at_chance", False) else ""


def _chance_note(stats: pd.DataFrame) -> list[str]:
    """The footnote of the † mark, when some cell carries it."""
    if not stats["at_chance"].any():
        return []
    cells = stats[stats["at_chance"]]
    return [f"{CHANCE_MARK} = at chance level: {len(cells)} cell(s) hold a row whose held-out pretext "
            "metric or test accuracy is no better than guessing (within max(2 points, 3 binomial "
            "standard errors) of 100/classes %, `ssl_bench/chance.py`). Such a network most likely "
            "diverged or learnt nothing: read its numbers as a failure, not a result; the CSV's "
            "`at_chance` column names the rows (`pretext`, `accuracy` or both).", ""]


def _overlap(a: pd.Series, b: pd.Series) -> bool:
    return bool(a["lo"] <= b["hi"] and b["lo"] <= a["hi"])


def _k_block(part: pd.DataFrame) -> list[str]:
    """One K: the ranked table and the note on which methods the best is not separable from."""
    part = part.sort_values(["rank", "task"])
    rows = []
    for _, r in part.iterrows():
        name, mean = str(r["task"]), _num(r["mean"])
        if r["best"]:
            name, mean = f"**{name}**", f"**{mean}**"
        mean += _chance(r)
        ci = "n/a" if math.isnan(r["ci95"]) else f"[{r['lo']:.2f}, {r['hi']:.2f}]"
        std = "n/a" if r["n"] < 2 else _num(r["std"])
        rows.append([str(r["rank"]), name, mean, std, ci, str(r["n"])])
    lines = _md_table(["rank", "method", "mean", "± std", "95% CI", "seeds (n)"], rows,
                      ["r", "l", "r", "r", "l", "r"])
    top = part.iloc[0]
    others = part.iloc[1:]
    notes = []
    if math.isnan(top["ci95"]):
        notes.append(f"The best, {top['task']}, has n = {top['n']} seed(s): its 95% CI is n/a, "
                     "so whether it is separable from the others is unknown.")
    else:
        with_ci = others[others["ci95"].notna()]
        pairs = [f"{top['task']} and {r['task']}" for _, r in with_ci.iterrows() if _overlap(top, r)]
        if pairs:
            notes.append(f"Intervals overlap: {'; '.join(pairs)} (not separable at 95%).")
        elif len(with_ci):
            notes.append(f"No other interval overlaps {top['task']}'s: its lead is separable at 95%.")
    undefined = sorted(str(t) for t in others.loc[others["ci95"].isna(), "task"])
    if undefined:
        notes.append(f"95% CI n/a (fewer than 2 seeds): {', '.join(undefined)}.")
    if notes:
        lines += ["", " ".join(notes)]
    return lines


CHECK_MARK = {"pass": "✓", "fail": "✗", "not run": "?"}


def _overview(stats: pd.DataFrame, checks: pd.DataFrame) -> list[str]:
    """Main protocol, methods × K, `mean ± std`, best bold, convergence mark; ordered by mean rank."""
    main = stats[stats["protocol"] == MAIN_PROTOCOL]
    lines = [f"## Overview: {MAIN_PROTOCOL}", ""]
    if main.empty:
        return lines + [f"No {MAIN_PROTOCOL} results yet.", ""]
    lines += ["Test accuracy %, mean ± std over seeds; **bold** = best per K; methods ordered by "
              "their mean rank over K. Convergence check (the same cell with twice the labelled-"
              f"sample budget): ✓ changed the mean by at most {CONVERGENCE_TOLERANCE:g} point, "
              "✗ by more (not converged: read with care), ? not run.", ""]
    for setting, part in main.groupby(SETTING, dropna=False, sort=True):
        ks = sorted(part["labels_per_class"].unique())
        order = part.groupby("task")["rank"].mean().reset_index().sort_values(["rank", "task"])
        rows = []
        for task in order["task"]:
            row = [str(task)]
            for k in ks:
                cell = part[(part["task"] == task) & (part["labels_per_class"] == k)]
                if cell.empty:
                    row.append("–")
                    continue
                c = cell.iloc[0]
                text = f"{c['mean']:.2f} ± {'n/a' if c['n'] < 2 else _num(c['std'])}"
                mark = CHECK_MARK[convergence_status(checks, setting, MAIN_PROTOCOL, k, task)]
                row.append((f"**{text}**" if c["best"] else text) + f"{_chance(c)} {mark}")
            rows.append(row)
        lines += [f"### {_setting_label(*setting)}", ""]
        lines += _md_table(["method"] + [f"K={k}" for k in ks], rows, ["l"] + ["r"] * len(ks))
        lines.append("")
    return lines


def _budget_label(r: pd.Series) -> str:
    """`×2`, with the labelled samples at B where the rows record them (`×2 of 256,000`)."""
    samples = r.get("base_samples", "-")
    return f"×{r['scale']:g}" + ("" if samples == "-" or pd.isna(samples) else f" of {int(samples):,}")


def _convergence_section(checks: pd.DataFrame) -> list[str]:
    lines = ["## Convergence check", ""]
    if checks.empty:
        return lines + ["Not run: no rows with a larger budget (`make converge`, i.e. "
                        "`ssl-bench experiment=converge`). Every cell is unchecked (?).", ""]
    lines += ["Each checked cell rerun with the labelled-sample budget times `scale` (of the labelled "
              "samples at B, where recorded); means over the seeds that have both budgets. ✗ = |Δ| above "
              f"{CONVERGENCE_TOLERANCE:g} point.", ""]
    rows = []
    for _, r in checks.sort_values(SETTING + ["protocol", "task", "labels_per_class"]).iterrows():
        rows.append([_setting_label(r["dataset"], r["pretrain_dataset"], r["backbone"]), str(r["protocol"]),
                     str(r["task"]), str(r["labels_per_class"]), _budget_label(r), str(r["n"]),
                     _num(r["mean_b"]), _num(r["mean_2b"]), f"{r['delta']:+.2f}",
                     CHECK_MARK[r["status"]]])
    lines += _md_table(["setting", "protocol", "method", "K", "budget", "seeds", "mean at B",
                        "mean at larger B", "Δ", "check"], rows,
                       ["l", "l", "l", "r", "r", "r", "r", "r", "r", "l"])
    return lines + [""]


def _diff_cell(r: pd.Series) -> str:
    if math.isnan(r["ci95"]):
        return f"{r['mean_diff']:+.2f} (n={r['n']})"
    sign = "" if r["lo"] <= 0 <= r["hi"] else " *"
    return f"{r['mean_diff']:+.2f} [{r['lo']:+.2f}, {r['hi']:+.2f}]{sign}"


def _paired_section(table: pd.DataFrame) -> list[str]:
    """Each method minus each baseline present, paired by seed, main protocol."""
    lines = ["## Paired differences", ""]
    blocks = []
    for baseline in ("random", "supervised"):
        diffs = paired_differences(table, baseline, MAIN_PROTOCOL)
        if diffs.empty:
            continue
        for setting, part in diffs.groupby(SETTING, dropna=False, sort=True):
            ks = sorted(part["labels_per_class"].unique())
            rows = []
            for task, tpart in part.groupby("task", sort=True):
                cells = {int(r["labels_per_class"]): _diff_cell(r) for _, r in tpart.iterrows()}
                rows.append([str(task)] + [cells.get(int(k), "–") for k in ks])
            blocks += [f"### method − {baseline}: {_setting_label(*setting)}", ""]
            blocks += _md_table(["method"] + [f"K={k}" for k in ks], rows, ["l"] + ["r"] * len(ks))
            blocks.append("")
    if not blocks:
        return lines + ["No baseline (random, supervised) with a shared seed yet.", ""]
    return lines + [f"{MAIN_PROTOCOL} accuracy of each method minus the baseline's, seed by seed "
                    "(every method with a seed shares that seed's labelled subsets): mean "
                    "difference in points [95% interval, Student t over the per-seed "
                    "differences]; * = the interval excludes 0.", ""] + blocks


def _sections(stats: pd.DataFrame) -> list[str]:
    lines: list[str] = []
    for setting, spart in stats.groupby(SETTING, dropna=False, sort=True):
        for protocol in sorted(spart["protocol"].unique(), key=_protocol_rank):
            ppart = spart[spart["protocol"] == protocol]
            lines += [f"## {protocol}: {_setting_label(*setting)}", ""]
            notes = [text for prefix, text in PROTOCOL_NOTES.items() if str(protocol).startswith(prefix)]
            lines += [notes[0], ""] if notes else []
            for k in sorted(ppart["labels_per_class"].unique()):
                lines += [f"### {protocol}, K = {k} labels per class", ""]
                lines += _k_block(ppart[ppart["labels_per_class"] == k])
                lines.append("")
    return lines


def _probe_summary(stats: pd.DataFrame) -> list[str]:
    """Per method and K, the probed stage with the best mean: where a pretext task puts its use."""
    lines = ["## Best probed stage per method", ""]
    probes = stats[stats["protocol"].astype(str).str.match(PROBE)].copy()
    if probes.empty:
        return lines + ["No linear_probe_convN results yet.", ""]
    probes["stage"] = probes["protocol"].astype(str).str.extract(PROBE, expand=False)
    probes["depth"] = probes["stage"].str.extract(r"(\d+)", expand=False).astype(int)
    lines += ["Which stage's features a linear probe reads best (mean test accuracy %); "
              "ties go to the shallower stage.", ""]
    for setting, part in probes.groupby(SETTING, dropna=False, sort=True):
        ks = sorted(part["labels_per_class"].unique())
        rows = []
        for task, tpart in part.groupby("task", sort=True):
            row = [str(task)]
            for k in ks:
                cell = tpart[tpart["labels_per_class"] == k].sort_values(["mean", "depth"],
                                                                         ascending=[False, True])
                row.append("–" if cell.empty else
                           f"{cell.iloc[0]['stage']} ({cell.iloc[0]['mean']:.2f}{_chance(cell.iloc[0])})")
            rows.append(row)
        lines += [f"### {_setting_label(*setting)}", ""]
        lines += _md_table(["method"] + [f"K={k}" for k in ks], rows, ["l"] + ["l"] * len(ks))
        lines.append("")
    return lines


# ----------------------------------------------------------------------------- compute time


@dataclass
class TimeSummary:
    """Compute and wall-clock accounting of a leaderboard (seconds)."""

    per_method: pd.DataFrame  # task, runs, pretrain_per_run, eval_per_run_<protocol>..., totals
    protocols: list[str]
    pretrain_total: float
    eval_total: float
    reused_runs: int
    span_start: pd.Timestamp | None
    span_end: pd.Timestamp | None
    rows_without_start: int

    @property
    def compute_total(self) -> float:
        known = [v for v in (self.pretrain_total, self.eval_total) if not math.isnan(v)]
        return sum(known) if known else math.nan

    @property
    def span_seconds(self) -> float:
        if self.span_start is None or self.span_end is None:
            return math.nan
        return (self.span_end - self.span_start).total_seconds()


def _is_true(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value) if value is not None and not pd.isna(value) else False


def compute_times(table: pd.DataFrame) -> TimeSummary:
    """Pretraining counted once per pretraining, evaluation summed over rows, and the span.

    Every row of a run repeats the run's `pretrain_seconds`, and a run that reused an earlier
    pretraining (`pretrain_reused`) repeats the original's, so pretraining is keyed by
    `pretrain_id` where recorded and by `run_id` otherwise; `eval_seconds` is per row.
    """
    df = _prepare(table)
    has_id = df["pretrain_id"].notna()
    df["pretrain_key"] = np.where(has_id, "pretrain:" + df["pretrain_id"].astype(str),
                                  "run:" + df["run_id"].astype(str))
    pre = df.groupby(["task", "pretrain_key"], dropna=False)["pretrain_seconds"].max().reset_index()
    protocols = sorted(df["protocol"].dropna().unique(), key=_protocol_rank)
    per_run_eval = (df.groupby(["task", "protocol", "run_id"], dropna=False)["eval_seconds"]
                    .sum(min_count=1).reset_index())
    rows = []
    for task in sorted(df["task"].dropna().unique()):
        tpre = pre.loc[pre["task"] == task, "pretrain_seconds"]
        tev = per_run_eval[per_run_eval["task"] == task]
        row: dict[str, object] = {"task": task, "runs": df.loc[df["task"] == task, "run_id"].nunique(),
                                  "pretrain_per_run": tpre.mean(),
                                  "pretrain_total": tpre.sum(min_count=1)}
        for protocol in protocols:
            row[f"eval_per_run_{protocol}"] = tev.loc[tev["protocol"] == protocol, "eval_seconds"].mean()
        row["eval_total"] = tev["eval_seconds"].sum(min_count=1)
        parts = [v for v in (row["pretrain_total"], row["eval_total"]) if not pd.isna(v)]
        row["total"] = sum(parts) if parts else math.nan
        rows.append(row)
    per_method = pd.DataFrame(rows)
    # The benchmark total dedups pretraining across methods too (a pretraining shared by tasks).
    pretrain_total = float(df.groupby("pretrain_key")["pretrain_seconds"].max().sum(min_count=1))
    eval_total = float(df["eval_seconds"].sum(min_count=1))
    reused = int(df.loc[df["pretrain_reused"].map(_is_true), "run_id"].nunique())
    # Rows lacking started_at (older CSVs) still prove the benchmark ran by their finished_at.
    stamps = pd.concat([df["started_at"], df["finished_at"]]).dropna()
    start = stamps.min() if len(stamps) else None
    end = stamps.max() if len(stamps) else None
    return TimeSummary(per_method, protocols, pretrain_total, eval_total, reused, start, end,
                       int(df["started_at"].isna().sum()))


def _time_section(times: TimeSummary) -> list[str]:
    lines = ["## Wall-clock time", ""]
    if times.per_method.empty:
        return lines + ["No runs yet.", ""]
    header = (["method", "runs", "pretrain s/run"] + [f"eval s/run ({p})" for p in times.protocols]
              + ["pretrain total s", "eval total s", "total s"])
    rows = []
    for _, r in times.per_method.iterrows():
        rows.append([str(r["task"]), str(r["runs"]), _num(r["pretrain_per_run"], 1)]
                    + [_num(r[f"eval_per_run_{p}"], 1) for p in times.protocols]
                    + [_num(r["pretrain_total"], 1), _num(r["eval_total"], 1), _num(r["total"], 1)])
    lines += _md_table(header, rows, ["l"] + ["r"] * (len(header) - 1))
    lines += ["", "Pretraining is counted once per pretraining (per `pretrain_id` where recorded, "
              "else per run), evaluation once per (run, protocol, K) row; s/run are means over runs."]
    if times.reused_runs:
        lines.append(f"{times.reused_runs} run(s) reused an earlier pretraining.")
    span = times.span_seconds
    lines += ["",
              f"- Total compute: {_secs(times.compute_total)} = "
              f"pretraining {_secs(times.pretrain_total)} + evaluation {_secs(times.eval_total)}",
              f"- Wall-clock span: {_stamp(times.span_start)} → {_stamp(times.span_end)}: {_secs(span)}"]
    if not math.isnan(span) and span > 0 and not math.isnan(times.compute_total):
        lines.append(f"- Compute / wall-clock: {times.compute_total / span:.2f}× "
                     "(above 1 means runs overlapped)")
    if times.rows_without_start:
        lines.append(f"- {times.rows_without_start} row(s) lack `started_at`: the span starts at the "
                     "earliest recorded time, so it may be short.")
    return lines + [""]


def _header(df: pd.DataFrame) -> list[str]:
    def counts(col: str, short: bool = False) -> str:
        runs = df.dropna(subset=[col]).groupby(col)["run_id"].nunique().sort_index()
        if runs.empty:
            return "n/a"
        parts = []
        for value, n in runs.items():
            text = str(value)
            if short:  # a 10-digit sha is unambiguous here; keep the -dirty flag visible
                text = text[:10] + ("-dirty" if text.endswith("-dirty") else "")
            parts.append(f"{text} ({n} run{'s' if n != 1 else ''})")
        return ", ".join(parts)

    pairs = df[["dataset", "pretrain_dataset"]].drop_duplicates().sort_values(["dataset", "pretrain_dataset"])
    data = ", ".join(_setting_label(d, p, "").rstrip(" /") for d, p in pairs.itertuples(index=False))
    finished = df["finished_at"].dropna()
    dates = (f"{_stamp(finished.min())} → {_stamp(finished.max())}" if len(finished) else "n/a")
    return ["# Leaderboard", "",
            f"- Data set(s): {data or 'n/a'}",
            f"- Profile(s): {counts('profile')}",
            f"- Git sha(s): {counts('git_sha', short=True)}",
            f"- Precision(s): {counts('precision')}",
            f"- Machine(s): {counts('machine')}",
            f"- Runs: {df['run_id'].nunique()} ({len(df)} result rows)",
            f"- Finished: {dates}", "",
            "Regenerated from the leaderboard CSV by `ssl-bench-leaderboard`; do not edit. "
            "Test accuracy in percent, mean over seeds; ± std is the sample standard deviation; "
            "95% CI is mean ± t(0.975, n−1)·std/√n (n/a below 2 seeds).", "",
            _interval_scope(df), "", *_conditions_note(df), *_cell_conditions_note(df)]


def _value_groups(rows: pd.DataFrame, values: pd.Series) -> str:
    """`value: task, task; value: task` — which methods ran with each value of a condition."""
    return "; ".join(f"{value}: {', '.join(sorted(g['task'].astype(str).unique()))}"
                     for value, g in rows.assign(_v=values).groupby("_v", sort=True))


def _conditions_note(df: pd.DataFrame) -> list[str]:
    """One line per condition (`CONDITIONS`) that differs between the rows: which methods ran
    with which value, so a reader sees what a comparison across them mixes.

    Precision and passes change the numbers (within noise or not, a user should be told); the
    machine changes only the seconds. Pretraining passes and precision count only for methods
    that pretrain (0 passes for the baselines is not a difference); a row from before the
    pretraining's precision was its own setting pretrained in the row's precision. Rows that
    lack a column (older CSVs) say so.
    """
    lines = []
    epochs = pd.to_numeric(df["pretrain_epochs"], errors="coerce")
    pretrains = epochs.fillna(0) > 0
    for col, label in CONDITIONS.items():
        part = df
        if col == "pretrain_epochs":
            part = df[pretrains].assign(**{col: epochs[pretrains].astype(int)})
        elif col == "pretrain_precision":
            part = df[pretrains].assign(**{col: df[col].where(df[col].notna(), df["precision"])[pretrains]})
        values = part[col].astype(object).where(part[col].notna(), "not recorded")
        if values.nunique() < 2:
            continue
        lines.append(f"Not one {label} for every row: " + _value_groups(part, values)
                     + ". Comparisons across these groups mix it.")
    return lines + ([""] if lines else [])


def _cell_conditions_note(df: pd.DataFrame) -> list[str]:
    """One line per (setting, protocol, K) whose ranked rows (budget scale 1) do not share one
    labelled-sample budget or one augmentation (`CELL_CONDITIONS`), with the methods of each.

    The protocol gives every method the same budget and augmentation at a K; a leaderboard
    merged from runs of two profiles, or a K rerun at a new budget beside its old rows, breaks
    that silently, and a method listed under two values has both budgets averaged in one cell.
    Rows without a budget (the probes: nothing is trained) are left out.
    """
    main = df[np.isclose(budget_scale(df), 1.0)]
    lines = []
    for col, label in CELL_CONDITIONS.items():
        if col not in main.columns:
            continue
        part = main[main[col].notna()]
        for cell, rows in part.groupby([*SETTING, "protocol", "labels_per_class"], sort=True):
            values = rows[col].map(lambda v: f"{v:.0f}" if isinstance(v, float) else str(v))
            if values.nunique() < 2:
                continue
            where = f"{_setting_label(*cell[:3])}, {cell[3]}, K={int(cell[4])}"
            lines.append(f"Not one {label} at {where}: " + _value_groups(rows, values)
                         + ". Its ranking is not like for like; a method named twice averages both.")
    return lines + ([""] if lines else [])


def _interval_scope(df: pd.DataFrame) -> str:
    """What the spread over seeds covers: does each seed have its own pretraining?"""
    base = ("What the intervals cover: a seed draws the labelled subsets (the same for every "
            "method with that seed) and initialises the evaluated layers")
    if "pretrain_seed" not in df.columns or "seed" not in df.columns:
        return base + "; whether each seed also has its own pretraining is not recorded in these rows."
    pre = df[pd.to_numeric(df["pretrain_seed"], errors="coerce").notna()]
    if pre.empty:
        return base + "."
    own = (pd.to_numeric(pre["pretrain_seed"]) == pd.to_numeric(pre["seed"])).all()
    per_task = pre.groupby("task")["pretrain_seed"].nunique()
    if own:
        return base + ", and each seed pretrains its own backbone: pretraining variance is included."
    if (per_task == 1).all():
        return (base + "; each method has one pretraining (`train.seed` fixed), shared by every "
                "seed: pretraining variance is not included.")
    return (base + "; some seeds share a pretraining (`train.seed`), so pretraining variance is "
            "partly included.")


def render_markdown(table: pd.DataFrame) -> str:
    """The whole LEADERBOARD.md text."""
    duplicates = duplicates_note(table)
    table = unique_rows(table)
    older = len(table) - len(current_rows(table))
    table = current_rows(table)  # older results versions measured something else
    df = _prepare(table)
    if df.empty:
        return "# Leaderboard\n\nThe leaderboard is empty: run `ssl-bench` (or `make smoke`) first.\n"
    stats = summarize(table)
    checks = convergence(table)
    header = _header(df)
    if older:
        header += [f"{older} row(s) of older results versions stay in the CSV and are left out of "
                   f"everything below (results version {int(results_version(table).max())} is "
                   "reported; `ssl_bench/versions.py` says what each version changed).", ""]
    if duplicates:
        header += [duplicates, ""]
    header += _chance_note(stats)
    lines = (header + _overview(stats, checks) + _paired_section(table)
             + _convergence_section(checks) + _sections(stats) + _probe_summary(stats)
             + _time_section(compute_times(table)))
    return "\n".join(lines).rstrip() + "\n"


# ----------------------------------------------------------------------------- plots


def _colors(tasks: list[str]) -> dict[str, tuple]:
    """One colour per method, stable across both plots."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(tasks) <= 10 else "tab20"]
    return {t: cmap(i % cmap.N) for i, t in enumerate(sorted(tasks))}


def _save(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def _placeholder(path: Path, message: str) -> None:
    """An explicit 'nothing yet' image, so a stale plot never outlives the data it showed."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 2))
    fig.text(0.5, 0.5, message, ha="center", va="center")
    _save(fig, path)


def plot_accuracy_vs_labels(table: pd.DataFrame, path: Path) -> None:
    """Main-protocol accuracy against K (log x), a line per method with its 95% CI band."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    stats = summarize(table)
    main = stats[stats["protocol"] == MAIN_PROTOCOL]
    if main.empty:
        _placeholder(path, f"no {MAIN_PROTOCOL} results yet")
        return
    settings = list(main.groupby(SETTING, dropna=False, sort=True))
    colors = _colors(list(stats["task"].unique()))
    fig = Figure(figsize=(7 * len(settings), 5), layout="constrained")
    axes = fig.subplots(1, len(settings), squeeze=False)[0]
    for ax, (setting, part) in zip(axes, settings):
        for task, tpart in part.groupby("task", sort=True):
            tpart = tpart.sort_values("labels_per_class")
            k = tpart["labels_per_class"].to_numpy(dtype=float)
            ax.plot(k, tpart["mean"], marker="o", color=colors[task], label=str(task))
            band = tpart["n"] >= 2  # CI undefined below two seeds: no band there
            lo = tpart["lo"].where(band).to_numpy(dtype=float)
            hi = tpart["hi"].where(band).to_numpy(dtype=float)
            if np.isfinite(lo).any():
                ax.fill_between(k, lo, hi, where=np.isfinite(lo), color=colors[task], alpha=0.18,
                                linewidth=0)
        ks = sorted(part["labels_per_class"].unique())
        ax.set_xscale("log")
        ax.set_xticks(ks)
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("labels per class (K, log scale)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{_setting_label(*setting)}, {MAIN_PROTOCOL}\nmean over seeds, band = 95% CI")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    _save(fig, path)


def _chosen_ks(ks: list[int]) -> list[int]:
    """Smallest, middle and largest K: the trend without a subplot per K."""
    ks = sorted(ks)
    return ks if len(ks) <= 3 else [ks[0], ks[len(ks) // 2], ks[-1]]


def _spearman(means: pd.DataFrame) -> tuple[float, int]:
    """Rank correlation across methods whose pretext metric is an accuracy (others differ in kind)."""
    from scipy.stats import spearmanr

    acc = means[means["pretext_metric_name"].astype(str).str.contains("acc", case=False)]
    n = acc["task"].nunique()
    if n < 3:
        return math.nan, n
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant input: rho is nan, shown as n/a
        rho = spearmanr(acc["x"], acc["y"]).statistic
    return float(rho), n


def plot_pretext_vs_downstream(table: pd.DataFrame, path: Path) -> None:
    """Pretext metric (x) against main-protocol accuracy (y): does the pretext score predict it?

    One subplot per chosen K (rows: settings); a small point per run, a large edged marker per
    method mean; colour = method, marker = metric name, since metric names are not comparable.
    """
    from matplotlib.figure import Figure

    df = _prepare(main_rows(table))
    colors = _colors(list(df["task"].unique()))  # the same colour per method as the other plot
    df = df[(df["protocol"] == MAIN_PROTOCOL) & df["pretext_metric"].notna()].copy()
    if df.empty:
        _placeholder(path, f"no {MAIN_PROTOCOL} results with a pretext metric yet")
        return
    df["pretext_metric_name"] = df["pretext_metric_name"].fillna("metric").astype(str)
    names = sorted(df["pretext_metric_name"].unique())
    markers = {m: MARKERS[i % len(MARKERS)] for i, m in enumerate(names)}
    settings = list(df.groupby(SETTING, dropna=False, sort=True))
    ncols = max(len(_chosen_ks(list(p["labels_per_class"].unique()))) for _, p in settings)
    fig = Figure(figsize=(5.5 * ncols, 4.5 * len(settings)), layout="constrained")
    axes = fig.subplots(len(settings), ncols, squeeze=False)
    for row, (setting, part) in zip(axes, settings):
        ks = _chosen_ks(list(part["labels_per_class"].unique()))
        for ax, k in zip(row, ks):
            kpart = part[part["labels_per_class"] == k]
            means = (kpart.groupby(["task", "pretext_metric_name"])
                     .agg(x=("pretext_metric", "mean"), y=("test_acc", "mean")).reset_index())
            for (task, name), g in kpart.groupby(["task", "pretext_metric_name"], sort=True):
                ax.scatter(g["pretext_metric"], g["test_acc"], color=colors[task], marker=markers[name],
                           alpha=0.45, s=22, label=f"{task} ({name})")
            for _, m in means.iterrows():
                ax.scatter([m["x"]], [m["y"]], color=colors[m["task"]],
                           marker=markers[m["pretext_metric_name"]], s=110, edgecolors="black",
                           linewidths=1.2, zorder=3)
            rho, n = _spearman(means)
            corr = (f"Spearman ρ = {rho:.2f} over {n} accuracy-metric methods" if not math.isnan(rho)
                    else f"Spearman n/a ({n} accuracy-metric method(s), need ≥ 3)")
            ax.set_title(f"{_setting_label(*setting)}, K = {k}\n{corr}", fontsize="medium")
            ax.set_xlabel("pretext metric (units per metric name, see legend)")
            ax.set_ylabel(f"{MAIN_PROTOCOL} test accuracy (%)")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize="x-small", title="method (metric name); big = mean",
                      title_fontsize="x-small")
        for ax in row[len(ks):]:
            ax.set_visible(False)
    _save(fig, path)


# ----------------------------------------------------------------------------- entry point


def write_report(table: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Write LEADERBOARD.md and the two plots into `out_dir` (atomically); return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / MARKDOWN_NAME
    atomic_write_bytes(md, render_markdown(table).encode())
    acc = out_dir / ACCURACY_PLOT
    plot_accuracy_vs_labels(table, acc)
    pre = out_dir / PRETEXT_PLOT
    plot_pretext_vs_downstream(table, pre)
    return [md, acc, pre]
