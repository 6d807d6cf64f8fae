"""Results versioning: a version bump recomputes instead of reusing, and keeps the old rows."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from ssl_bench import run as run_module
from ssl_bench import versions
from ssl_bench.distributed import Context
from ssl_bench.leaderboard import read
from ssl_bench.run import pretrain_dir, run
from ssl_bench.stats import convergence, main_rows, summarize

FAST = ("profile=smoke", "data=synthetic", "data.num_train=500", "data.num_test=200",
        "train.batch_size=32", "train.steps_per_epoch=2", "train.pretext_eval_images=100",
        "eval.min_steps=5", "eval.max_steps=5", "eval.probes.enabled=false",
        "eval.labels_per_class=[5]")


def _bump(monkeypatch, module_attr: str, history: str) -> None:
    """Pretend a code change bumped a version (as `ssl_bench/versions.py` would say)."""
    new = getattr(versions, module_attr) + 1
    monkeypatch.setattr(run_module, module_attr, new)
    monkeypatch.setitem(getattr(versions, history), new, "a test bump")


def test_version_one_identities_are_those_from_before_versioning(make_cfg):
    cfg = make_cfg(*FAST, "task=rotation")
    ident = run_module.run_identity(cfg, Context())
    assert "results_version" not in ident and "pretrain_version" not in ident
    assert run_module.run_identity(cfg, Context(), version=2)["results_version"] == 2
    assert run_module.pretrain_identity(cfg, Context(), version=2)["pretrain_version"] == 2


def test_a_results_bump_recomputes_rows_keeps_the_old_ones_and_says_so(make_cfg, monkeypatch, caplog):
    cfg = make_cfg(*FAST, "task=rotation")
    (old,) = run(cfg, Path(cfg.paths.runs_dir) / "a")
    assert old["results_version"] == 1
    _bump(monkeypatch, "RESULTS_VERSION", "RESULTS_HISTORY")
    with caplog.at_level(logging.WARNING, logger="ssl_bench.run"):
        (new,) = run(cfg, Path(cfg.paths.runs_dir) / "b")
    assert new["results_version"] == 2 and new["run_id"] != old["run_id"]
    assert bool(new["pretrain_reused"])  # the evaluator changed, not the pretraining
    assert "results version 1" in caplog.text and "a test bump" in caplog.text
    table = read(cfg.leaderboard.path)
    assert set(table["run_id"]) == {old["run_id"], new["run_id"]}  # nothing lost
    assert list(main_rows(table)["run_id"]) == [new["run_id"]]    # only the newest is ranked
    assert summarize(table)["n"].tolist() == [1]


def test_a_pretrain_bump_recomputes_the_pretraining(make_cfg, monkeypatch):
    cfg = make_cfg(*FAST, "task=rotation")
    before = pretrain_dir(cfg, Context())
    monkeypatch.setattr(run_module, "PRETRAIN_VERSION", versions.PRETRAIN_VERSION + 1)
    assert pretrain_dir(cfg, Context()) != before


def test_summaries_and_checks_never_mix_versions():
    rows = [dict(run_id=f"r{v}{s}{scale}", task="rotation", dataset="d", pretrain_dataset="d",
                 backbone="b", protocol="conv3_linear", labels_per_class=20, seed=s, pretrain_id="p",
                 test_acc=acc, eval_budget_scale=scale, results_version=v)
            for v, acc in ((1, 10.0), (2, 50.0)) for s in (0, 1) for scale in (1.0, 2.0)]
    rows[-1]["test_acc"] = 60.0  # version 2, seed 1, budget x2
    table = pd.DataFrame(rows)
    stats = summarize(table)
    assert stats["mean"].tolist() == [50.0] and stats["n"].tolist() == [2]
    (check,) = convergence(table).itertuples()
    assert (check.mean_b, check.mean_2b) == (50.0, 55.0)
    no_column = table[table["results_version"] == 1].drop(columns=["results_version"])
    assert summarize(no_column)["mean"].tolist() == [10.0]  # rows from before versioning: 1


def test_the_report_says_it_left_older_versions_out():
    from ssl_bench.report import render_markdown

    base = dict(task="rotation", dataset="d", pretrain_dataset="d", backbone="b",
                protocol="conv3_linear", labels_per_class=20, seed=0, eval_budget_scale=1.0)
    table = pd.DataFrame([{**base, "run_id": "old", "test_acc": 10.0, "results_version": 1},
                          {**base, "run_id": "new", "test_acc": 50.0, "results_version": 2}])
    text = render_markdown(table)
    assert "1 row(s) of older results versions" in text and "results version 2 is reported" in text
    assert "50.00" in text and "10.00" not in text
