"""The pretraining curve (`ssl-bench-curve`): epochs -> pretext metric and accuracy, from rows alone."""

from __future__ import annotations

import pandas as pd

from ssl_bench import curve


def _rows() -> pd.DataFrame:
    rows = []
    # rotation after 1, 2, 4 epochs: +6 then +0.5 at K=20, +3 then +0.8 at K=100
    for epochs, metric, k20, k100 in [(1, 60.0, 40.0, 50.0), (2, 70.0, 46.0, 53.0), (4, 80.0, 46.5, 53.8)]:
        for k, acc in ((20, k20), (100, k100)):
            rows.append({"run_id": f"rotation-e{epochs}", "task": "rotation", "protocol": "conv3_linear",
                         "labels_per_class": k, "seed": 0, "test_acc": acc, "pretext_metric": metric,
                         "pretrain_epochs": epochs, "pretrain_seconds": 100.0 * epochs,
                         "eval_budget_scale": 1.0})
    rows.append({"run_id": "rotation-e4-x2", "task": "rotation", "protocol": "conv3_linear",
                 "labels_per_class": 20, "seed": 0, "test_acc": 99.0, "pretext_metric": 80.0,
                 "pretrain_epochs": 4, "pretrain_seconds": 400.0, "eval_budget_scale": 2.0})  # ignored
    for task, acc in (("random", 30.0), ("supervised", 35.0)):
        rows.append({"run_id": task, "task": task, "protocol": "conv3_linear", "labels_per_class": 20,
                     "seed": 0, "test_acc": acc, "pretext_metric": None, "pretrain_epochs": 0,
                     "pretrain_seconds": 0.0, "eval_budget_scale": 1.0})
    # the columns every leaderboard has (`leaderboard.REQUIRED`)
    return pd.DataFrame(rows).assign(dataset="cifar10", backbone="small")


def test_curve_table_and_the_epochs_that_are_enough(tmp_path):
    table = _rows()
    c = curve.curve_table(table)
    assert c["pretrain_epochs"].tolist() == [1, 2, 4]
    assert c["K=20"].tolist() == [40.0, 46.0, 46.5]  # the budget-x2 row is not mixed in
    assert c["pretext_metric"].tolist() == [60.0, 70.0, 80.0]
    # 1 -> 2 gains 6 points at K=20; 2 -> 4 gains 0.5 and 0.8: two epochs are enough
    assert curve.enough_epochs(c, tolerance=1.0) == 2.0
    assert curve.enough_epochs(c, tolerance=0.6) is None  # K=100 still gains 0.8
    text = curve.render(c, curve.baselines(table), 1.0, "rotation")
    assert "+6.00" in text and "from 2 epochs on" in text and "random: K=20 30.00" in text


def test_cli_writes_table_and_plot(tmp_path, capsys):
    path = tmp_path / "leaderboard.csv"
    _rows().to_csv(path, index=False)
    assert curve.main(["--path", str(path), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "pretrain_curve.md").read_text().startswith("# Pretraining curve")
    assert (tmp_path / "out" / "pretrain_curve.png").stat().st_size > 0
    assert curve.main(["--path", str(tmp_path / "missing.csv")]) == 2
    assert "no leaderboard" in capsys.readouterr().err
