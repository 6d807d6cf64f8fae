"""The run's logger (`logger=csv|tensorboard|none`): what each writes, where, how many steps
of each scalar, and that the choice changes neither the run id nor any leaderboard value."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir

from ssl_bench import distributed, logger
from ssl_bench.cli import CONF_DIR
from ssl_bench.data.sources import load_synthetic
from ssl_bench.errors import UserError
from ssl_bench.methods import PRETEXT_TASKS, pretrained_methods
from ssl_bench.run import run
from ssl_bench.schema import validate

EPOCHS, PER_EPOCH, EVAL_STEPS, KS = 2, 3, 8, [5, 10]
SMALL = ("profile=smoke", "data=synthetic", "data.num_train=600", "data.num_test=200", "task=rotation",
         "seed=1", "train.batch_size=16", f"train.steps_per_epoch={PER_EPOCH}",
         "train.pretext_eval_images=100", "eval.batch_size=16", f"eval.min_steps={EVAL_STEPS}",
         f"eval.max_steps={EVAL_STEPS}", f"eval.labels_per_class={KS}",
         f"eval.probes.labels_per_class={KS}", "eval.probes.linear_stages=[conv2]",
         "eval.probes.knn_stages=[conv2]", "eval.probes.cosine_knn.stages=[conv3]")
PROTOCOLS = ["conv3_linear", "linear_probe_conv2", "knn_conv2", "knn_cosine_conv3"]
PER_STEP = {"pretrain/loss": EPOCHS * PER_EPOCH, "pretrain/lr": EPOCHS * PER_EPOCH,
            "pretrain/accuracy": EPOCHS * PER_EPOCH,
            **{f"eval/conv3_linear/K={k}/loss": EVAL_STEPS for k in KS}}
TAGS = {**PER_STEP, **{f"accuracy/{p}": len(KS) for p in PROTOCOLS}}
# what differs between two runs of one configuration: when, how long and where
VARYING = {"started_at", "finished_at", "eval_seconds", "pretrain_seconds", "run_dir"}


def _compose(root: Path, *overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("config", overrides=[f"paths.runs_dir={root / 'runs'}",
                                            f"paths.cache_dir={root / 'cache'}", "progress=false",
                                            *overrides])


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[Path, list[dict]]]:
    """The same small run once per logger, each with its own folders (no reused pretraining)."""
    out = {}
    for kind in logger.KINDS:
        root = tmp_path_factory.mktemp(kind)
        out[kind] = (root / "run", run(_compose(root, *SMALL, f"logger={kind}"), root / "run"))
    return out


def _events(run_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events


def test_tensorboard_has_every_tag_with_its_steps_and_the_task_picture(runs):
    run_dir, rows = runs["tensorboard"]
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    events = _events(run_dir)
    scalars = {tag: events.Scalars(tag) for tag in events.Tags()["scalars"]}
    assert {tag: len(values) for tag, values in scalars.items()} == TAGS
    for tag in PER_STEP:  # steps 1..n: pretraining counts its steps over both epochs
        assert [e.step for e in scalars[tag]] == list(range(1, PER_STEP[tag] + 1))
    main = {r["labels_per_class"]: r for r in rows if r["protocol"] == "conv3_linear"}
    assert all(main[k]["eval_steps"] == EVAL_STEPS for k in KS)
    for protocol in PROTOCOLS:  # step = K, value = the row's accuracy
        got = {e.step: e.value for e in scalars[f"accuracy/{protocol}"]}
        want = {r["labels_per_class"]: r["test_acc"] for r in rows if r["protocol"] == protocol}
        assert got == pytest.approx(want, abs=1e-4)
    assert scalars["pretrain/lr"][0].value == pytest.approx(0.1)  # rotation's task.train_lr
    assert events.Tags()["images"] == ["examples/rotation"]
    picture = events.Images("examples/rotation")
    assert len(picture) == 1 and picture[0].width > 100 and picture[0].height > 100
    assert not (run_dir / "scalars.csv").exists()


def test_csv_holds_the_same_scalars_and_matches_the_epoch_metrics(runs):
    run_dir, rows = runs["csv"]
    table = pd.read_csv(run_dir / "scalars.csv")
    assert list(table.columns) == ["tag", "step", "value", "wall_time"]
    assert table.groupby("tag").size().to_dict() == TAGS
    assert not (run_dir / "tensorboard").exists()
    # the logged step losses are the ones the epoch's mean loss in metrics.jsonl is made of
    pretrain_dir = Path(rows[0]["run_dir"]).parent / "runs" / "pretrain" / rows[0]["pretrain_id"]
    epochs = [json.loads(line) for line in (pretrain_dir / "metrics.jsonl").read_text().splitlines()]
    losses = table[table.tag == "pretrain/loss"].sort_values("step").value.to_numpy()
    for epoch in (1, 2):
        assert losses[(epoch - 1) * PER_EPOCH:epoch * PER_EPOCH].mean() == pytest.approx(
            epochs[epoch - 1]["loss"], rel=1e-5)


def test_none_writes_no_scalars(runs):
    run_dir, _ = runs["none"]
    assert not (run_dir / "scalars.csv").exists() and not (run_dir / "tensorboard").exists()
    assert (run_dir / "results.json").is_file()


def test_the_logger_changes_neither_the_run_id_nor_any_row(runs):
    tables = {kind: pd.DataFrame(rows).drop(columns=sorted(VARYING)) for kind, (_, rows) in runs.items()}
    for kind in ("tensorboard", "none"):
        pd.testing.assert_frame_equal(tables[kind], tables["csv"])
    assert tables["csv"].run_id.nunique() == 1


def test_every_n_steps_and_tensors_read_back_at_close(tmp_path):
    sink = logger.CsvLogger(tmp_path / "scalars.csv", every_n_steps=3, flush_every=4)
    assert [s for s in range(1, 10) if sink.due(s)] == [3, 6, 9]
    weight = torch.ones((), requires_grad=True)
    for step in range(1, 7):
        sink.scalar("loss", weight * step, step)  # a tensor with a graph: kept detached
    assert len(pd.read_csv(tmp_path / "scalars.csv")) == 4  # the first batch of four is written
    sink.close()
    sink.close()  # closing twice is harmless
    again = logger.CsvLogger(tmp_path / "scalars.csv")  # a second run into the folder appends
    again.scalar("loss", 7.0, 7)
    again.close()
    table = pd.read_csv(tmp_path / "scalars.csv")
    assert table.step.tolist() == list(range(1, 8)) and table.value.tolist() == list(map(float, range(1, 8)))
    with pytest.raises(ValueError, match="one value"):
        logger.CsvLogger(tmp_path / "other.csv").scalar("loss", torch.ones(2), 1)


def test_tensorboard_takes_an_array_as_picture(tmp_path):
    sink = logger.TensorBoardLogger(tmp_path / "tensorboard")
    sink.image("picture", np.zeros((20, 30, 3), dtype=np.uint8), 0)
    with pytest.raises(ValueError, match="H×W×3"):
        sink.image("picture", np.zeros((20, 30)), 0)
    sink.close()
    picture = _events(tmp_path).Images("picture")
    assert (picture[0].width, picture[0].height) == (30, 20)


def test_current_is_the_null_logger_outside_a_run_and_on_other_ranks(tmp_path, monkeypatch):
    assert type(logger.current()) is logger.Logger and not logger.current().due(1)
    config = {"kind": "csv", "every_n_steps": 1}
    with pytest.raises(RuntimeError), logger.opened(config, tmp_path / "a") as sink:
        assert logger.current() is sink and isinstance(sink, logger.CsvLogger)
        sink.scalar("loss", 1.0, 1)
        raise RuntimeError("the run failed")
    assert type(logger.current()) is logger.Logger  # restored, and what was logged is written
    assert len(pd.read_csv(tmp_path / "a" / "scalars.csv")) == 1
    monkeypatch.setattr(distributed, "_context", distributed.Context(rank=1, world=2))
    with logger.opened(config, tmp_path / "b") as sink:
        assert type(sink) is logger.Logger
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("override, message", [
    ("logger.kind=wandb", "logger.kind='wandb' is not allowed"),
    ("logger.every_n_steps=0", "logger.every_n_steps=0 is not allowed: must be at least 1"),
    ("+logger.flush=1", "logger.flush is not a setting"),
])
def test_bad_logger_settings_are_one_clear_line(tmp_path, override, message):
    with pytest.raises(UserError, match=re.escape(message)):
        validate(_compose(tmp_path, override))


def test_the_search_config_takes_a_logger(tmp_path):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("search", overrides=["logger=tensorboard", "data=synthetic"])
    validate(cfg)
    assert cfg.logger.kind == "tensorboard"


@pytest.mark.parametrize("task", [m for m in pretrained_methods() if m not in PRETEXT_TASKS])
def test_every_pretrained_method_has_a_picture(tmp_path, task):
    """The picture a run logs once: every task with a pretext module draws one (the single
    pretext tasks through `ssl-bench-show` in test_pipeline)."""
    from ssl_bench.show import examples_figure

    cfg = _compose(tmp_path, "data=synthetic", f"task={task}", "show.num_images=2")
    data = load_synthetic("synthetic", num_train=100, num_test=20, image_size=32, seed=0)
    state = torch.random.get_rng_state()
    figure = examples_figure(cfg, data)
    assert torch.equal(torch.random.get_rng_state(), state)  # results never depend on the picture
    assert len([ax for ax in figure.axes if ax.images]) >= 2
    import matplotlib.pyplot as plt

    plt.close(figure)
