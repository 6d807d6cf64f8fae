"""A backbone brought from outside: export, `load_backbone`, `ssl-bench-eval` (task=external),
and the protocols other suites report (temperature-weighted cosine k-NN, fine-tuning)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file, save_file
from torch import nn

from ssl_bench import load_backbone
from ssl_bench.errors import UserError
from ssl_bench.evaluate import trainable_copy
from ssl_bench.export import CONFIG, WEIGHTS
from ssl_bench.probes import cosine_knn_accuracy, cosine_knn_name
from ssl_bench.run import build_backbone, run
from ssl_bench.train import load_pretrained
from tests.conftest import PROJECT_ROOT

SMOKE = ("profile=smoke", "data=synthetic", "seed=1")


class TinyNet(nn.Module):
    """A network of someone else's layout: layer names unlike the suite's stages."""

    def __init__(self, width: int = 8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.down = nn.MaxPool2d(2)
        self.block = nn.Sequential(nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.top = nn.Sequential(nn.Conv2d(2 * width, 4 * width, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(4 * width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.top(self.block(self.down(self.stem(x)))).mean((2, 3)))


TINY = "tests.test_external.TinyNet"
TINY_STAGES = "{conv1: [stem, down], conv2: [block], conv3: [top]}"


@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory):
    """One rotation run (smoke, synthetic) with fine-tuning on: its rows and export folder."""
    from hydra import compose, initialize_config_dir

    from ssl_bench.cli import CONF_DIR

    tmp = tmp_path_factory.mktemp("pretrained")
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[f"paths.runs_dir={tmp / 'runs'}",
                                           f"paths.cache_dir={tmp / 'cache'}", "progress=false", *SMOKE,
                                           "task=rotation", "eval.finetune.enabled=true"])
    rows = run(cfg, tmp / "run")
    return cfg, rows, Path(cfg.paths.runs_dir) / "pretrain" / rows[0]["pretrain_id"]


def _accuracies(rows: list[dict]) -> dict[tuple[str, int], float]:
    return {(r["protocol"], int(r["labels_per_class"])): r["test_acc"] for r in rows}


def test_an_exported_backbone_evaluated_as_external_gives_the_original_rows(make_cfg, tmp_path,
                                                                            pretrained_run):
    _, rows, folder = pretrained_run
    assert (folder / WEIGHTS).is_file() and (folder / CONFIG).is_file()
    cfg = make_cfg(*SMOKE, "task=external", f"task.checkpoint={folder / WEIGHTS}",
                   "eval.finetune.enabled=true")
    again = run(cfg, tmp_path / "ext")
    assert _accuracies(again) == _accuracies(rows)  # every protocol and K, to the last bit
    assert {r["protocol"] for r in again} >= {"conv3_linear", "finetune", "knn_cosine_conv3"}
    assert {r["task"] for r in again} == {f"ext-{folder.name}"}
    assert {r["backbone"] for r in again} == {"small"} and all(pd.isna(r["pretext_metric"]) for r in again)


def test_the_run_id_hashes_the_file_content_not_its_path(make_cfg, tmp_path, pretrained_run):
    _, _, folder = pretrained_run
    copy = tmp_path / "elsewhere" / "weights.safetensors"
    copy.parent.mkdir()
    shutil.copy(folder / WEIGHTS, copy)
    shutil.copy(folder / CONFIG, copy.with_suffix(".json"))
    from ssl_bench.distributed import Context
    from ssl_bench.external import prepare
    from ssl_bench.run import make_run_id

    def run_id(path: Path) -> str:
        cfg = make_cfg(*SMOKE, "task=external", f"task.checkpoint={path}", "task.name=mine")
        prepare(cfg)
        return make_run_id(cfg, Context())

    first = run_id(folder / WEIGHTS)
    assert run_id(copy) == first  # same bytes, other name and folder
    state = load_file(str(copy))
    save_file(state, str(copy), metadata={"exported": "again, by another commit"})
    assert run_id(copy) == first  # same weights, other metadata: the same evaluation
    state["conv1.0.weight"] = state["conv1.0.weight"] + 1e-3
    save_file(state, str(copy))
    assert run_id(copy) != first  # one weight changed: never the old rows


def test_load_backbone_returns_the_trained_weights(pretrained_run):
    cfg, rows, folder = pretrained_run
    from ssl_bench.data import load_data
    from ssl_bench.tasks import build_task
    from ssl_bench.train import PretrainResult

    trained = build_backbone(cfg.backbone, 0)
    task = build_task(cfg.task.module, trained, load_data(cfg.data))
    result = PretrainResult(**json.loads((folder / "pretrain.json").read_text())["result"])
    load_pretrained(folder, trained, task, torch.device("cpu"), result)
    loaded = load_backbone(folder)  # the folder or the file itself
    assert isinstance(loaded, nn.Module) and not loaded.training
    expected, got = trained.state_dict(), loaded.state_dict()
    assert list(got) == list(expected)
    for key, value in expected.items():
        assert torch.equal(got[key], value), key
    assert torch.equal(load_backbone(folder / WEIGHTS).conv1[0].weight, expected["conv1.0.weight"])
    x = torch.randn(2, 3, 32, 32)
    trained.eval()
    assert torch.allclose(loaded(x), trained(x))


def test_load_backbone_reads_its_description_from_the_file_alone(tmp_path, pretrained_run):
    _, _, folder = pretrained_run
    lone = tmp_path / "lone.safetensors"
    shutil.copy(folder / WEIGHTS, lone)  # no backbone.json beside it: the metadata says it
    assert load_backbone(lone).name == "small"
    plain = tmp_path / "plain.safetensors"
    save_file(load_file(str(lone)), str(plain))  # weights without any description
    with pytest.raises(UserError, match="says nothing about its network"):
        load_backbone(plain)


def test_a_pretext_stage_is_dropped_unless_asked_for(make_cfg, tmp_path):
    from ssl_bench.export import save_backbone

    cfg = make_cfg("backbone.conv4={channels: [8], kernels: [3], pool: null}")
    backbone = build_backbone(cfg.backbone, 0)
    save_backbone(tmp_path, backbone, OmegaConf.to_container(cfg.backbone, resolve=True), {})
    assert "conv4" not in load_backbone(tmp_path).stages
    assert torch.equal(load_backbone(tmp_path, pretext_stage=True).conv4[0].weight, backbone.conv4[0].weight)


# ---------------------------------------------------------------- clear refusals


def _state(tmp_path: Path, state: dict, name: str = "w.safetensors") -> Path:
    path = tmp_path / name
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def _external(make_cfg, path: Path, *extra: str):
    from ssl_bench.external import prepare

    cfg = make_cfg(*SMOKE, "task=external", f"task.checkpoint={path}", *extra)
    return prepare(cfg)


def test_a_wrong_shape_names_the_key_and_both_shapes(make_cfg, tmp_path):
    state = build_backbone(make_cfg(*SMOKE).backbone, 0).state_dict()
    right = tuple(state["conv2.0.weight"].shape)
    state["conv2.0.weight"] = torch.zeros(right[0], right[1] + 1, 3, 3)
    wrong = (right[0], right[1] + 1, 3, 3)
    with pytest.raises(UserError, match=rf"conv2\.0\.weight has shape \({', '.join(map(str, wrong))}\) in "
                                        rf"the file but \({', '.join(map(str, right))}\) in the model"):
        _external(make_cfg, _state(tmp_path, state))


def test_a_missing_or_extra_key_is_named(make_cfg, tmp_path):
    state = build_backbone(make_cfg(*SMOKE).backbone, 0).state_dict()
    del state["conv3.1.running_var"]
    with pytest.raises(UserError, match=r"lacks the key 'conv3\.1\.running_var'"):
        _external(make_cfg, _state(tmp_path, state))
    state = build_backbone(make_cfg(*SMOKE).backbone, 0).state_dict()
    state["fc.weight"] = torch.zeros(10, 64)
    with pytest.raises(UserError, match=r"has the key 'fc\.weight' that the model does not"):
        _external(make_cfg, _state(tmp_path, state, "extra.safetensors"))


def test_a_missing_file_is_one_clear_line(make_cfg, tmp_path):
    with pytest.raises(UserError, match="no backbone weights at .*nothing.safetensors"):
        _external(make_cfg, tmp_path / "nothing.safetensors")
    res = subprocess.run([sys.executable, "-m", "ssl_bench.external", str(tmp_path / "nothing.pt")],
                         capture_output=True, text=True, cwd=PROJECT_ROOT)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.strip().splitlines() == [res.stderr.strip()]  # one line, no traceback
    assert "ssl-bench-eval: error: no backbone weights at" in res.stderr


def test_a_pickle_that_is_not_a_state_dict_is_refused(make_cfg, tmp_path):
    path = tmp_path / "whole_model.pt"
    torch.save({"epoch": 3, "note": "no weights"}, path)
    with pytest.raises(UserError, match="not a state dict"):
        _external(make_cfg, path)


@pytest.mark.slow
def test_a_module_with_a_stage_map_is_evaluated_and_rows_written(make_cfg, tmp_path):
    net = TinyNet()
    path = tmp_path / "tiny.pt"
    torch.save(net.state_dict(), path)  # read back with weights_only=True
    cfg = make_cfg(*SMOKE, "task=external", f"task.checkpoint={path}", f"+task.model._target_={TINY}",
                   f"task.stages={TINY_STAGES}", "eval.finetune.enabled=true")
    rows = run(cfg, tmp_path / "run")
    table = pd.read_csv(cfg.leaderboard.path)
    assert len(rows) == len(table) == 2 * (1 + 7 + 1) and set(table.task) == {"ext-tiny"}
    assert set(table.backbone) == {"TinyNet"} and table.test_acc.between(0, 100).all()


@pytest.mark.parametrize("stages, message", [
    ("{conv1: [stem], conv2: [block5], conv3: [top]}",
     "task.stages.conv2 names the layer 'block5', which tests.test_external.TinyNet does not have; its "
     "top-level layers are: stem, down, block, top, head"),
    ("{conv1: [stem], conv2: [block], conv3: [block]}", "overlaps 'block' of task.stages.conv2"),
    ("{conv1: [stem], conv2: [top], conv3: [block]}", "the stage map does not fit .* fails in conv2"),
    ("{conv1: [stem], conv2: [block], conv3: [head]}", "fails in conv3"),
])
def test_a_stage_map_that_does_not_match_the_module_is_refused(make_cfg, tmp_path, stages, message):
    path = tmp_path / "tiny.pt"
    torch.save(TinyNet().state_dict(), path)
    with pytest.raises(UserError, match=message):
        _external(make_cfg, path, f"+task.model._target_={TINY}", f"task.stages={stages}")


def test_the_schema_refuses_a_module_without_a_stage_map(make_cfg, tmp_path):
    from ssl_bench.schema import validate

    cfg = make_cfg(*SMOKE, "task=external", f"task.checkpoint={tmp_path}", f"+task.model._target_={TINY}")
    with pytest.raises(UserError, match="task.model and task.stages go together"):
        validate(cfg)
    cfg = make_cfg(*SMOKE, "task=external", f"task.checkpoint={tmp_path}", f"+task.model._target_={TINY}",
                   "task.stages={conv1: [stem], conv2: [block], conv5: [top]}")
    with pytest.raises(UserError, match="conv5"):
        validate(cfg)


# ---------------------------------------------------------------- the protocols


def test_cosine_knn_matches_a_vote_computed_by_hand():
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.2]])
    train_y = torch.tensor([0, 1, 1, 2])
    test = torch.tensor([[2.0, 0.1], [-1.0, -0.1]])
    # test 0: cosine similarities 0.9988, 0.0499, 0.7415, -0.9612; its k=3 nearest are
    # train 0 (class 0), 2 (class 1), 1 (class 1): class 0 gets e^(0.9988/T), class 1
    # e^(0.7415/T) + e^(0.0499/T). At T=0.1 class 0 wins (21,700 against 1,664); at T=10
    # the two class-1 neighbours outvote it (2.22 against 1.11).
    sims = nn.functional.normalize(test, dim=1) @ nn.functional.normalize(train, dim=1).T
    for temperature, expected in ((0.1, 0), (10.0, 1)):
        weights = (sims[0, [0, 2, 1]] / temperature).exp()
        by_hand = 0 if weights[0] > weights[1] + weights[2] else 1
        assert by_hand == expected
        acc = cosine_knn_accuracy(train, train_y, test[:1], torch.tensor([expected]), 3, temperature, 3)
        assert acc == 100.0
    # test 1 points the other way: its nearest (train 3, class 2) wins at k=1; k above the
    # number of training images is capped at it
    assert cosine_knn_accuracy(train, train_y, test[1:], torch.tensor([2]), 1, 0.1, 3) == 100.0
    assert cosine_knn_accuracy(train, train_y, test, torch.tensor([0, 2]), 200, 0.1, 3) == 100.0


def test_cosine_knn_rows_carry_non_default_settings_in_their_name(make_cfg):
    cfg = make_cfg()
    assert cosine_knn_name(cfg.eval.probes, "conv3") == "knn_cosine_conv3"
    other = OmegaConf.merge(cfg.eval.probes, {"cosine_knn": {"k": 20, "temperature": 0.07}})
    assert cosine_knn_name(other, "conv2") == "knn_cosine_k20_t0.07_conv2"


def test_finetuning_has_the_supervised_budget_and_starts_from_the_pretrained_weights(pretrained_run):
    cfg, rows, _ = pretrained_run
    table = pd.DataFrame(rows).set_index(["protocol", "labels_per_class"])
    for k in (5, 20):
        finetune, frozen = table.loc[("finetune", k)], table.loc[("conv3_linear", k)]
        for column in ("eval_steps", "eval_samples", "eval_augment"):
            assert finetune[column] == frozen[column]  # one sample budget for every protocol
    backbone = build_backbone(cfg.backbone, 0)
    for p in backbone.conv1.parameters():
        p.requires_grad_(False)  # what the frozen protocol leaves behind
    copied = trainable_copy(backbone)
    assert all(p.requires_grad for p in copied.parameters()) and copied.training
    pairs = zip(copied.state_dict().values(), backbone.state_dict().values())
    assert all(torch.equal(a, b) for a, b in pairs)
    assert not any(p.requires_grad for p in backbone.conv1.parameters())  # the original untouched


@pytest.mark.slow
def test_ssl_bench_eval_on_the_command_line_writes_the_original_rows(tmp_path, pretrained_run):
    _, rows, folder = pretrained_run
    runs = tmp_path / "runs"
    res = subprocess.run([sys.executable, "-m", "ssl_bench.external", str(folder), *SMOKE, "progress=false",
                          f"paths.runs_dir={runs}", f"paths.cache_dir={tmp_path / 'cache'}",
                          "eval.finetune.enabled=true", "--name", "mine"],
                         capture_output=True, text=True, cwd=PROJECT_ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    table = pd.read_csv(runs / "leaderboard.csv")
    assert set(table.task) == {"mine"}
    got = {(r.protocol, int(r.labels_per_class)): r.test_acc for r in table.itertuples()}
    expected = _accuracies(rows)
    assert got.keys() == expected.keys()
    assert all(abs(got[key] - expected[key]) < 1e-4 for key in got)  # the CSV keeps 6 digits


# ---------------------------------------------------------------- what a file may make us do


def test_a_description_naming_another_builder_is_refused_before_anything_is_called(tmp_path):
    target = tmp_path / "written"
    description = {"format": "ssl_bench.backbone/1",
                   "backbone": {"_target_": "torch.save", "obj": 1, "f": str(target)}}
    path = tmp_path / WEIGHTS
    save_file({"w": torch.zeros(1)}, str(path), metadata={"ssl_bench": json.dumps(description)})
    with pytest.raises(UserError, match="names _target_='torch.save'; only ssl_bench's backbones"):
        load_backbone(path)
    assert not target.exists()  # nothing was called


def test_a_json_of_the_users_own_beside_a_state_dict_is_not_taken_for_a_description(make_cfg, tmp_path):
    backbone = build_backbone(make_cfg(*SMOKE).backbone, 0)
    path = tmp_path / "mine.pt"
    torch.save({"state_dict": backbone.state_dict(), "epoch": 7}, path)  # a training checkpoint
    (tmp_path / "mine.json").write_text(json.dumps({"backbone": {"_target_": "os.getcwd"}, "lr": 0.1}))
    loaded = _external(make_cfg, path)  # unwrapped from 'state_dict'; the JSON is the user's
    pairs = zip(loaded.state_dict().values(), backbone.state_dict().values())
    assert all(torch.equal(a, b) for a, b in pairs)


def test_a_module_needs_only_its_mapped_layers_from_the_file(make_cfg, tmp_path):
    net = TinyNet()
    state = {k: v for k, v in net.state_dict().items() if not k.startswith("head.")}
    state["projector.weight"] = torch.zeros(3, 3)  # an SSL checkpoint: no classifier, a projector
    path = tmp_path / "ssl.pt"
    torch.save(state, path)
    mapped = _external(make_cfg, path, f"+task.model._target_={TINY}", f"task.stages={TINY_STAGES}")
    assert torch.equal(mapped.conv1[0][0].weight, net.stem[0].weight)  # the file's weights
    assert torch.equal(mapped.conv3[0][0].weight, net.top[0].weight)
    del state["block.0.bias"]
    torch.save(state, path)
    with pytest.raises(UserError, match=r"mapped layers of .*TinyNet: it lacks the key 'block\.0\.bias'"):
        _external(make_cfg, path, f"+task.model._target_={TINY}", f"task.stages={TINY_STAGES}")


def test_overlapping_layers_in_the_stage_map_are_refused(make_cfg, tmp_path):
    path = tmp_path / "tiny.pt"
    torch.save(TinyNet().state_dict(), path)
    with pytest.raises(UserError, match="'block.0', which overlaps 'block'"):
        _external(make_cfg, path, f"+task.model._target_={TINY}",
                  "task.stages={conv1: [stem, block], conv2: [block.0], conv3: [top]}")


def test_a_finetune_k_above_the_smallest_class_fails_before_pretraining(make_cfg, tmp_path):
    cfg = make_cfg(*SMOKE, "task=rotation", "eval.finetune.enabled=true",
                   "eval.finetune.labels_per_class=[100000]")
    with pytest.raises(UserError, match=r"eval.finetune.labels_per_class has \[100000\]"):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "runs" / "pretrain").exists()


@pytest.mark.slow
def test_a_reused_pretraining_without_its_export_gets_one_and_is_not_retrained(make_cfg, tmp_path,
                                                                              pretrained_run):
    cfg, rows, folder = pretrained_run
    kept = tmp_path / "kept.safetensors"
    (folder / WEIGHTS).replace(kept)  # as a pretraining finished before exports existed
    try:
        checkpoint = (folder / "checkpoint.pt").stat().st_mtime_ns
        # another evaluation seed, the same pretraining
        again = run(OmegaConf.merge(cfg, {"seed": 2, "train": {"seed": 1}}), tmp_path / "again")
        assert again[0]["pretrain_reused"] and (folder / "checkpoint.pt").stat().st_mtime_ns == checkpoint
        fresh, old = load_file(str(folder / WEIGHTS)), load_file(str(kept))
        assert fresh.keys() == old.keys() and all(torch.equal(fresh[k], old[k]) for k in old)
    finally:
        if not (folder / WEIGHTS).exists():  # the other tests of the module read it
            kept.replace(folder / WEIGHTS)


@pytest.mark.slow
def test_finetuning_starts_from_the_weights_the_frozen_protocol_evaluates(make_cfg, tmp_path, monkeypatch,
                                                                         pretrained_run):
    import ssl_bench.run as run_module

    _, _, folder = pretrained_run
    exported = load_file(str(folder / WEIGHTS))
    seen = []
    original = run_module.evaluate_scratch

    def spy(build, *args, **kwargs):
        seen.append((kwargs.get("protocol"), build(0).state_dict()))
        return original(build, *args, **kwargs)

    monkeypatch.setattr(run_module, "evaluate_scratch", spy)
    cfg = make_cfg(*SMOKE, "task=external", f"task.checkpoint={folder}", "eval.finetune.enabled=true",
                   "eval.probes.enabled=false", "eval.finetune.labels_per_class=[5]")
    run(cfg, tmp_path / "run")
    [(protocol, start)] = seen
    assert protocol == "finetune" and start.keys() == exported.keys()
    assert all(torch.equal(start[k], exported[k]) for k in exported)
