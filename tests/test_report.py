"""The report regenerated from the leaderboard CSV: numbers checked against hand computation."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from ssl_bench.leaderboard import append_rows, main
from ssl_bench.report import _chosen_ks, _spearman, compute_times, render_markdown, write_report

T975_2 = 4.302652729911275  # t(0.975, 2): three seeds
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
OUTPUTS = {"LEADERBOARD.md", "accuracy_vs_labels.png", "pretext_vs_downstream.png"}


def _row(run: str, task: str, k: int, acc: float, *, protocol: str = "conv3_linear", seed: int = 0,
         **extra: object) -> dict:
    row = {"run_id": run, "task": task, "dataset": "cifar10", "pretrain_dataset": "cifar10",
           "backbone": "small", "protocol": protocol, "labels_per_class": k, "seed": seed,
           "test_acc": acc, "pretext_metric": math.nan, "pretext_metric_name": None,
           "pretrain_seconds": 0.0, "eval_seconds": 1.0, "eval_steps": 10, "profile": "smoke",
           "git_sha": "abcdef0123456789", "started_at": "2024-05-01T10:00:00+00:00",
           "finished_at": "2024-05-01T10:30:00+00:00", "run_dir": f"runs/{run}"}
    row.update(extra)
    return row


# Test accuracy per (task, K) over seeds 0, 1, 2 (inpainting: one seed only).
ACC = {
    ("rotation", 20): [50.0, 52.0, 54.0],     # mean 52, std 2
    ("jigsaw", 20): [48.0, 49.0, 50.0],       # mean 49, std 1: overlaps rotation
    ("random", 20): [30.0, 31.0, 32.0],       # mean 31, std 1: clearly below
    ("inpainting", 20): [40.0],               # n = 1: no std, no CI
    ("rotation", 100): [60.0, 61.0, 62.0],    # mean 61, std 1: overlaps jigsaw
    ("jigsaw", 100): [62.0, 64.0, 66.0],      # mean 64, std 2: best
    ("random", 100): [35.0, 36.0, 40.0],      # mean 37, std sqrt(7)
    ("inpainting", 100): [45.0],
}
METRIC = {"rotation": (80.0, "accuracy"), "jigsaw": (60.0, "accuracy"),
          "inpainting": (0.02, "masked_mse"), "random": (math.nan, None)}


def _table() -> pd.DataFrame:
    rows = []
    for (task, k), accs in ACC.items():
        metric, name = METRIC[task]
        for seed, acc in enumerate(accs):
            rows.append(_row(f"{task}-{seed}", task, k, acc, seed=seed, pretext_metric=metric + seed,
                             pretext_metric_name=name))
    # A probe protocol: rotation is best read at conv2, jigsaw at conv1.
    for task, stage, acc in [("rotation", "conv1", 40.0), ("rotation", "conv2", 45.0),
                             ("jigsaw", "conv1", 44.0), ("jigsaw", "conv2", 41.0)]:
        rows.append(_row(f"{task}-0", task, 20, acc, protocol=f"linear_probe_{stage}"))
    return pd.DataFrame(rows)


def _k_table(md: str, protocol: str, k: int) -> tuple[list[list[str]], str]:
    """The rows (cells) of one K table, and the note paragraph below it."""
    lines = md.splitlines()
    start = lines.index(f"### {protocol}, K = {k} labels per class")
    rows, i = [], start + 2
    while lines[i].startswith("|"):
        rows.append([c.strip() for c in lines[i].strip("|").split("|")])
        i += 1
    assert rows[0][:2] == ["rank", "method"]
    note = lines[i + 1] if i + 1 < len(lines) and not lines[i + 1].startswith("#") else ""
    return rows[2:], note


def _ci(mean: float, std: float) -> str:
    half = T975_2 * std / 3 ** 0.5
    return f"[{mean - half:.2f}, {mean + half:.2f}]"


def test_ranked_tables_match_hand_computation():
    md = render_markdown(_table())
    rows, note = _k_table(md, "conv3_linear", 20)
    assert rows == [
        ["1", "**rotation**", "**52.00**", "2.00", _ci(52.0, 2.0), "3"],
        ["2", "jigsaw", "49.00", "1.00", _ci(49.0, 1.0), "3"],
        ["3", "inpainting", "40.00", "n/a", "n/a", "1"],
        ["4", "random", "31.00", "1.00", _ci(31.0, 1.0), "3"],
    ]
    assert _ci(52.0, 2.0) == "[47.03, 56.97]"  # the hand value, spelled out once
    assert "Intervals overlap: rotation and jigsaw (not separable at 95%)." in note
    assert "random" not in note.split("95% CI n/a")[0]  # separated: no overlap claimed
    assert "95% CI n/a (fewer than 2 seeds): inpainting." in note

    rows, note = _k_table(md, "conv3_linear", 100)
    assert [r[:3] for r in rows] == [["1", "**jigsaw**", "**64.00**"], ["2", "rotation", "61.00"],
                                     ["3", "inpainting", "45.00"], ["4", "random", "37.00"]]
    assert rows[3][3] == f"{7 ** 0.5:.2f}" == "2.65"
    assert rows[3][4] == _ci(37.0, 7 ** 0.5)
    assert "Intervals overlap: jigsaw and rotation (not separable at 95%)." in note
    assert "jigsaw and random" not in md


def test_layout_order_overview_and_probe_summary():
    md = render_markdown(_table())
    headings = [line for line in md.splitlines() if line.startswith("## ")]
    assert headings == ["## Overview: conv3_linear", "## Paired differences", "## Convergence check",
                        "## conv3_linear: cifar10 / small",
                        "## linear_probe_conv1: cifar10 / small", "## linear_probe_conv2: cifar10 / small",
                        "## Best probed stage per method", "## Wall-clock time"]
    overview = md.split("## Overview: conv3_linear")[1].split("\n## ")[0]
    assert "| method | K=20 | K=100 |" in overview
    # "?": no convergence-check rows, so every cell is marked unchecked
    assert "| rotation | **52.00 ± 2.00** ? | 61.00 ± 1.00 ? |" in overview
    assert "| jigsaw | 49.00 ± 1.00 ? | **64.00 ± 2.00** ? |" in overview
    assert "| inpainting | 40.00 ± n/a ? | 45.00 ± n/a ? |" in overview
    probe = md.split("## Best probed stage per method")[1].split("\n## ")[0]
    assert "| rotation | conv2 (45.00) |" in probe and "| jigsaw | conv1 (44.00) |" in probe
    assert "- Data set(s): cifar10" in md and "- Profile(s): smoke (10 runs)" in md
    assert "- Git sha(s): abcdef0123 (10 runs)" in md and "- Runs: 10 (24 result rows)" in md


def test_header_names_precisions_machines_and_which_methods_differ():
    """A run finished on another machine, in another precision, is marked, with the methods
    on each side; pretraining passes count only for methods that pretrain."""
    zen5 = "AMD EPYC, family 26 model 2, 2 CPUs, bf16 native"
    zen3 = "AMD EPYC, family 25 model 1, 2 CPUs, no native bf16"
    rows = [_row(f"{t}{s}", t, 20, 40.0 + s, seed=s, precision=p, machine=m, pretrain_epochs=e)
            for t, p, m, e in [("rotation", "bf16", zen5, 4), ("random", "bf16", zen5, 0),
                               ("supervised_pretrain", "fp32", zen3, 4)] for s in range(3)]
    md = render_markdown(pd.DataFrame(rows))
    assert "- Precision(s): bf16 (6 runs), fp32 (3 runs)" in md
    assert f"- Machine(s): {zen3} (3 runs), {zen5} (6 runs)" in md
    assert ("Not one precision for every row: bf16: random, rotation; fp32: supervised_pretrain. "
            "Comparisons across these groups mix it.") in md
    assert f"Not one machine for every row: {zen3}: supervised_pretrain; {zen5}: random, rotation." in md
    assert "pretraining passes" not in md  # 4 and 4; random's 0 is no pretraining, not a difference
    rows[-1]["pretrain_epochs"], rows[-1]["machine"] = 2, math.nan  # one row without a machine
    md = render_markdown(pd.DataFrame(rows))
    assert ("Not one pretraining passes (pretext methods) for every row: 2: supervised_pretrain; "
            "4: rotation, supervised_pretrain.") in md
    assert "not recorded: supervised_pretrain" in md
    same = render_markdown(pd.DataFrame([r for r in rows if r["task"] != "supervised_pretrain"]))
    assert "Not one" not in same
    # rows from before the pretraining's precision was its own setting pretrained in theirs
    assert ("Not one pretraining precision for every row: bf16: rotation; fp32: supervised_pretrain."
            in md)
    # rotation's bf16 pretraining evaluated in fp32 beside its bf16 rows: one pretraining
    # precision (random, which does not pretrain, has none), two evaluator precisions
    kept = [r for r in rows if r["task"] != "supervised_pretrain"]
    kept += [_row(f"rotation{s}fp32", "rotation", 400, 60.0, seed=s, precision="fp32",
                  pretrain_precision="bf16", machine=zen5, pretrain_epochs=4) for s in range(3)]
    md = render_markdown(pd.DataFrame(kept))
    assert "Not one precision for every row: bf16: random, rotation; fp32: rotation." in md
    assert "pretraining precision" not in md


def test_header_marks_a_k_whose_methods_got_unequal_budgets_or_augmentations():
    """Every method at a K gets one labelled-sample budget and one augmentation; a K rerun at
    a new budget beside its old rows, or merged profiles, is named per cell with its methods.
    Check rows (scale 2) and the probes (no budget) never trigger it."""
    rows = [_row(f"{t}{s}", t, k, 40.0 + s, seed=s, eval_samples=128000, eval_augment="crop4+flip",
                 eval_budget_scale=1.0) for t in ("rotation", "random") for k in (20, 400) for s in range(3)]
    rows += [_row(f"{t}{s}x2", t, 400, 41.0, seed=s, eval_samples=256000, eval_augment="crop4+flip",
                  eval_budget_scale=2.0) for t in ("rotation", "random") for s in range(3)]
    rows += [_row(f"{t}{s}", t, 400, 30.0, seed=s, protocol="knn_conv3", eval_samples=math.nan,
                  eval_augment=math.nan) for t in ("rotation", "random") for s in range(3)]
    assert "Not one" not in render_markdown(pd.DataFrame(rows))
    rows += [_row(f"random{s}new", "random", 400, 45.0, seed=s, eval_samples=512000,
                  eval_augment="crop4+flip", eval_budget_scale=1.0) for s in range(3)]
    rows[0]["eval_augment"] = "flip"  # rotation seed 0 at K=20
    md = render_markdown(pd.DataFrame(rows))
    assert ("Not one labelled-sample budget at cifar10 / small, conv3_linear, K=400: 128000: random, "
            "rotation; 512000: random. Its ranking is not like for like; a method named twice "
            "averages both.") in md
    assert ("Not one evaluator augmentation at cifar10 / small, conv3_linear, K=20: crop4+flip: random, "
            "rotation; flip: rotation.") in md
    assert "budget at cifar10 / small, conv3_linear, K=20" not in md
    assert "knn_conv3, K=" not in md


def _timed() -> pd.DataFrame:
    """Three runs: pretrain seconds repeated on every row of a run, eval seconds per row."""
    r1 = dict(pretrain_seconds=100.0, started_at="2024-05-01T10:00:00+00:00",
              finished_at="2024-05-01T10:05:00+00:00", pretrain_id="p1", pretrain_reused=False)
    r2 = dict(pretrain_seconds=120.0, started_at="2024-05-01T10:03:00+00:00",
              finished_at="2024-05-01T10:20:00+00:00", pretrain_id="p2", pretrain_reused=False)
    r3 = dict(pretrain_seconds=0.0, started_at="2024-05-01T10:01:00+00:00",
              finished_at="2024-05-01T10:02:00+00:00", pretrain_id=None, pretrain_reused=False)
    return pd.DataFrame([
        _row("r1", "rotation", 20, 50.0, eval_seconds=10.0, **r1),
        _row("r1", "rotation", 100, 60.0, eval_seconds=20.0, **r1),
        _row("r1", "rotation", 20, 40.0, protocol="linear_probe_conv1", eval_seconds=5.0, **r1),
        _row("r2", "rotation", 20, 52.0, seed=1, eval_seconds=12.0, **r2),
        _row("r2", "rotation", 100, 62.0, seed=1, eval_seconds=22.0, **r2),
        _row("r3", "random", 20, 30.0, eval_seconds=1.0, **r3),
        _row("r3", "random", 100, 35.0, eval_seconds=2.0, **r3),
    ])


def test_time_accounting_counts_pretraining_once_per_run():
    times = compute_times(_timed())
    assert times.pretrain_total == pytest.approx(220.0)  # 100 + 120 + 0, not 3*100 + 2*120
    assert times.eval_total == pytest.approx(72.0)  # 10+20+5 + 12+22 + 1+2
    assert times.compute_total == pytest.approx(292.0)
    assert times.span_seconds == pytest.approx(1200.0)  # 10:00 -> 10:20
    rot = times.per_method.set_index("task").loc["rotation"]
    assert rot["runs"] == 2 and rot["pretrain_per_run"] == pytest.approx(110.0)
    assert rot["eval_per_run_conv3_linear"] == pytest.approx(32.0)  # (30 + 34) / 2
    assert rot["eval_per_run_linear_probe_conv1"] == pytest.approx(5.0)  # only r1 probed
    assert rot["total"] == pytest.approx(220.0 + 69.0)
    md = render_markdown(_timed())
    assert "| rotation | 2 | 110.0 | 32.0 | 5.0 | 220.0 | 69.0 | 289.0 |" in md
    assert ("- Total compute: 292.0 s (4 min 52 s) = pretraining 220.0 s (3 min 40 s) + "
            "evaluation 72.0 s (1 min 12 s)") in md
    assert ("- Wall-clock span: 2024-05-01 10:00:00 UTC → 2024-05-01 10:20:00 UTC: 1200.0 s "
            "(20 min 00 s)") in md


def test_reused_pretraining_counted_once_per_pretrain_id():
    reuse = dict(pretrain_seconds=100.0, pretrain_id="p1", pretrain_reused=True,
                 started_at="2024-05-01T10:30:00+00:00", finished_at="2024-05-01T10:31:00+00:00")
    table = pd.concat([_timed(), pd.DataFrame([_row("r4", "rotation", 20, 51.0, seed=2,
                                                    eval_seconds=3.0, **reuse)])])
    times = compute_times(table)
    assert times.pretrain_total == pytest.approx(220.0) and times.reused_runs == 1
    assert times.eval_total == pytest.approx(75.0)
    assert times.span_seconds == pytest.approx(1860.0)
    assert "1 run(s) reused an earlier pretraining." in render_markdown(table)
    # Without pretrain_id, each run is its own pretraining.
    assert compute_times(table.drop(columns=["pretrain_id"])).pretrain_total == pytest.approx(320.0)


def test_span_tolerates_missing_start_times():
    table = _timed()
    table.loc[table["run_id"] == "r1", "started_at"] = math.nan
    times = compute_times(table)
    assert times.rows_without_start == 3
    assert times.span_start == pd.Timestamp("2024-05-01T10:01:00+00:00")  # r3 started earliest
    assert times.span_seconds == pytest.approx(1140.0)
    assert "3 row(s) lack `started_at`" in render_markdown(table)


def test_write_report_writes_valid_files_atomically(tmp_path: Path):
    written = write_report(_table(), tmp_path / "report")
    assert {p.name for p in written} == OUTPUTS
    assert {p.name for p in (tmp_path / "report").iterdir()} == OUTPUTS  # no temporary files left
    for p in written:
        assert p.stat().st_size > 0
        if p.suffix == ".png":
            assert p.read_bytes()[:8] == PNG_SIGNATURE


def test_cli_writes_report_and_explains_missing_csv(tmp_path: Path, capsys):
    csv = tmp_path / "lb.csv"
    append_rows(csv, _table().to_dict("records"))
    out = tmp_path / "out"
    assert main(["--path", str(csv), "--report-dir", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == OUTPUTS
    printed = capsys.readouterr().out
    assert "rotation" in printed and f"wrote {out / 'LEADERBOARD.md'}" in printed
    assert main(["--path", str(csv)]) == 0  # default: next to the CSV
    assert OUTPUTS <= {p.name for p in tmp_path.iterdir()}
    skip = tmp_path / "skip"
    assert main(["--path", str(csv), "--report-dir", str(skip), "--no-report"]) == 0
    assert not skip.exists()
    assert main(["--path", str(tmp_path / "none.csv")]) == 2
    assert "no leaderboard" in capsys.readouterr().err


def test_old_leaderboard_without_new_columns(tmp_path: Path):
    old = ["run_id", "task", "dataset", "backbone", "protocol", "labels_per_class", "seed", "test_acc",
           "pretext_metric", "pretext_metric_name", "pretrain_seconds", "eval_seconds", "eval_steps",
           "profile", "git_sha", "finished_at", "run_dir"]
    csv = tmp_path / "old.csv"
    _table()[old].to_csv(csv, index=False)
    assert main(["--path", str(csv), "--report-dir", str(tmp_path / "r")]) == 0
    md = (tmp_path / "r" / "LEADERBOARD.md").read_text()
    assert "## conv3_linear: cifar10 / small" in md  # no pretrain_dataset: same as dataset
    assert "Wall-clock span:" in md and "24 row(s) lack `started_at`" in md


def test_minimal_rows_and_mixed_pretrain_dataset(tmp_path: Path):
    # As the earliest leaderboards: only the key, the task and the accuracy.
    csv = tmp_path / "lb.csv"
    append_rows(csv, [{"run_id": "r", "task": "rotation", "dataset": "d", "backbone": "b",
                       "protocol": "conv3_linear", "labels_per_class": 20, "seed": 0, "test_acc": 50.0}])
    assert main(["--path", str(csv)]) == 0
    md = (tmp_path / "LEADERBOARD.md").read_text()
    assert "- Total compute: n/a = pretraining n/a + evaluation n/a" in md  # no times recorded
    assert "| 1 | **rotation** | **50.00** | n/a | n/a | 1 |" in md
    table = _table()
    table.loc[table["task"] == "random", "pretrain_dataset"] = math.nan
    md = render_markdown(table)
    assert md.count("## conv3_linear:") == 1


def test_pretext_plot_helpers():
    assert _chosen_ks([100, 10, 20]) == [10, 20, 100]
    assert _chosen_ks([10, 20, 50, 100, 500]) == [10, 50, 500]
    means = pd.DataFrame({"task": ["a", "b", "c", "d"], "x": [1.0, 2.0, 3.0, 0.5],
                          "y": [10.0, 30.0, 20.0, 5.0],
                          "pretext_metric_name": ["accuracy", "accuracy", "rotation_accuracy", "masked_mse"]})
    rho, n = _spearman(means)
    assert n == 3 and rho == pytest.approx(0.5)  # ranks x 1,2,3 vs y 1,3,2; d is an MSE: left out
    rho, n = _spearman(means.iloc[[0, 1, 3]])
    assert n == 2 and math.isnan(rho)
