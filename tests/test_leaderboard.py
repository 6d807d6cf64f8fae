import pandas as pd
import pytest

from ssl_bench.leaderboard import COLUMNS, append_rows, format_summary, main, read
from ssl_bench.stats import summarize


def _row(run, task, k, acc, seed=0):
    return {"run_id": run, "task": task, "dataset": "d", "backbone": "b",
            "protocol": "conv3_linear", "labels_per_class": k, "seed": seed, "test_acc": acc}


def test_append_keeps_columns_and_replaces_same_key(tmp_path):
    path = tmp_path / "lb.csv"
    append_rows(path, [_row("r1", "rotation", 20, 50.0), _row("r1", "rotation", 100, 60.0)])
    append_rows(path, [_row("r2", "random", 20, 40.0)])
    append_rows(path, [_row("r1", "rotation", 20, 51.0)])  # rewritten result, same key
    table = read(path)
    assert list(table.columns[:len(COLUMNS)]) == COLUMNS
    assert len(table) == 3
    assert table.loc[(table.run_id == "r1") & (table.labels_per_class == 20), "test_acc"].item() == 51.0


def test_summary_mean_std_and_best(tmp_path):
    rows = [_row(f"a{s}", "rotation", 20, acc, s) for s, acc in enumerate([50.0, 52.0, 54.0])]
    rows += [_row(f"b{s}", "random", 20, acc, s) for s, acc in enumerate([40.0, 41.0, 42.0])]
    stats = summarize(pd.DataFrame(rows)).set_index("task")
    assert stats.loc["rotation", "mean"] == pytest.approx(52.0)
    assert stats.loc["rotation", "std"] == pytest.approx(2.0)
    assert stats.loc["rotation", "n"] == 3
    assert stats.loc["rotation", "ci95"] == pytest.approx(4.303 * 2.0 / 3 ** 0.5, rel=1e-3)
    assert bool(stats.loc["rotation", "best"]) and not bool(stats.loc["random", "best"])
    text = format_summary(pd.DataFrame(rows))
    assert "52.00 ± 2.00 (3) *" in text and "41.00 ± 1.00 (3)" in text


def test_cli_prints_summary_or_explains(tmp_path, capsys):
    assert main(["--path", str(tmp_path / "none.csv")]) == 2
    assert "no leaderboard" in capsys.readouterr().err
    append_rows(tmp_path / "lb.csv", [_row("r", "rotation", 20, 50.0)])
    assert main(["--path", str(tmp_path / "lb.csv")]) == 0
    assert "rotation" in capsys.readouterr().out
