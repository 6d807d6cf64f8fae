"""The configuration is checked whole, before any work: every shipped config passes, and each
class of bad value is refused with one line that names the key, the value and what is allowed.

In-process (compose + `schema.validate`, and `run.run` for "nothing written first"); the
same checks through the real commands are in test_errors.py and test_config_fuzz.py.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from ssl_bench.cli import CONF_DIR
from ssl_bench.errors import UserError
from ssl_bench.run import run
from ssl_bench.schema import Config, SearchConfig, count, positive_int, positive_number, validate

GROUPS = {group: sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml") if not p.stem.startswith("_"))
          for group in ("task", "data", "backbone", "profile")}
NEEDS = {"data=image_folder": ["data.root=/somewhere"], "backbone=searched": ["backbone.genotype=/g.json"],
         "task=external": ["task.checkpoint=/some/backbone.safetensors"]}


def _compose(*overrides: str, name: str = "config"):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(name, overrides=list(overrides))


@pytest.mark.parametrize("override", [f"{g}={o}" for g, opts in GROUPS.items() for o in opts])
def test_every_shipped_config_is_valid(override):
    validate(_compose(override, *NEEDS.get(override, [])))


@pytest.mark.parametrize("name, overrides", [
    ("search", ["search=cpu"]), ("search", ["search=gpu"]), ("search", ["search=smoke"]),
    ("search_benchmark", []), ("config", ["experiment=benchmark"]), ("config", ["experiment=converge"])])
def test_every_shipped_search_and_experiment_is_valid(name, overrides):
    cfg = _compose(*overrides, name=name)
    validate(cfg, SearchConfig if "search" in cfg else Config)


@pytest.mark.parametrize("overrides, message", [
    # wrong type
    (["seed=abc"], "seed='abc' is not allowed: must be a whole number"),
    (["progress=maybe"], "progress='maybe' is not allowed: must be true or false"),
    (["eval.labels_per_class=[abc]"],
     "eval.labels_per_class[0]='abc' is not allowed: must be a whole number"),
    (["train.batch_size=2.5"], "train.batch_size=2.5 is not allowed: must be a whole number"),
    (["train.optimizer=5"], "train.optimizer=5 is not allowed: must be a group of settings"),
    # out of range
    (["train.batch_size=-5"], "train.batch_size=-5 is not allowed: must be at least 2"),
    (["train.optimizer.lr=inf"], "train.optimizer.lr=inf is not allowed: must be a finite number"),
    (["seed=-1"], "seed=-1 is not allowed: must be at least 0"),
    ([f"seed={2**32}"], "seed=4294967296 is not allowed: must be at most 4294967295"),
    (["threads=-1"], "threads=-1 is not allowed: must be at least 1"),
    (["data.image_size=0"], "data.image_size=0 is not allowed: must be at least 1"),
    (["eval.batch_size=1"], "eval.batch_size=1 is not allowed: must be at least 2"),
    (["train.optimizer.momentum=1.5"], "train.optimizer.momentum=1.5 is not allowed: must be less than 1"),
    # crop paddings: never above 128 px, never wider than the images where their size is set
    (["task.crop_padding=12105815358"], "crop_padding=12105815358 is not allowed: must be at most 128"),
    (["eval.augment.crop_padding=129"], "eval.augment.crop_padding=129 is not allowed: must be at most 128"),
    (["data=synthetic", "train.augment.crop_padding=40"],
     "train.augment.crop_padding=40 is wider than the 32-px images it pads"),
    (["data=synthetic", "data@eval.data=digits", "eval.data.image_size=16", "eval.augment.crop_padding=20"],
     "eval.augment.crop_padding=20 is wider than the 16-px images it pads"),
    # zeros that used to mean "no limit" without saying so
    (["train.steps_per_epoch=0"], "train.steps_per_epoch=0 is not allowed: must be at least 1"),
    (["eval.max_steps=0"], "eval.max_steps=0 is not allowed: must be at least 1"),
    (["threads=0"], "threads=0 is not allowed: must be at least 1"),
    # one of a set
    (["device=gpu"], "device='gpu' is not allowed: must be auto, cpu, cuda, cuda:N or mps"),
    (["precision=fp16"], "precision='fp16' is not allowed: must be 'auto', 'fp32' or 'bf16'"),
    (["pretrain_precision=fp16"],
     "pretrain_precision='fp16' is not allowed: must be 'auto', 'fp32' or 'bf16'"),
    (["eval.probes.linear_stages=[conv5]"], "eval.probes.linear_stages[0]='conv5' is not allowed"),
    # lists
    (["eval.labels_per_class=[]"], "eval.labels_per_class=[] is not allowed: must not be empty"),
    (["check_labels_per_class=[0]"], "check_labels_per_class[0]=0 is not allowed: must be at least 1"),
    # rules between keys
    (["eval.min_steps=50", "eval.max_steps=10"], "max_steps=10 is below min_steps=50"),
    (["train.optimizer.momentum=0"], "nesterov=true needs a momentum > 0"),
    (["task=random", "task.pretrain=true"], "pretrain=true needs a module"),
    # the tasks' own arguments
    (["task.module.angles=[0,360]"], "must be distinct modulo 360"),
    (["task.module.angles=[0,45]"], "must be multiples of 90"),
    (["task=jigsaw", "task.module.grid=2", "task.module.num_permutations=100"],
     "num_permutations=100 is more than the 24 orders of a 2x2 grid"),
    (["task=inpainting", "task.module.coverage=[0.5,0.2]"], "low <= high"),
    (["task=multitask", "task.weights=[1]"], "must give one weight per member (2)"),
    (["task=multitask", "task.catalog.jigsaw.module.grid=1"],
     "task.catalog.jigsaw.module.grid=1 is not allowed: must be at least 2"),
    # image sizes the backbone (and the task's tiles) must survive
    (["data=synthetic", "data.image_size=2"], "data.image_size=2 is not allowed: backbone=small2 halves"),
    (["task=jigsaw", "task.module.input_size=3"], "task.module.input_size=3 is not allowed"),
    # unknown or missing keys
    (["+train.foo=1"], "train.foo is not a setting; the settings there are: seed, epochs"),
    (["+task.module.num_rotatoins=4"],
     "task.module.num_rotatoins is not a setting; the settings there are: angles"),
    (["data=image_folder"], "data.root is required (it is ??? in the config): set data.root=..."),
])
def test_bad_values_are_one_clear_line(overrides, message):
    with pytest.raises(UserError) as err:
        validate(_compose(*overrides))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("overrides, message", [
    (["search.network.nodes=0"], "search.network.nodes=0 is not allowed: must be at least 1"),
    (["search.network.cells=[1,1,0]"], "conv3 needs at least one normal cell"),
    (["search.warmup_epochs=5", "search.epochs=5"], "leaves no epoch in which α moves"),
    (["search.arch.betas=[0.5]"], "search.arch.betas=[0.5] is not allowed: must have at least 2 entries"),
    (["derived.backbone.param_budget=0"], "derived.backbone.param_budget=0 is not allowed"),
])
def test_bad_search_values_are_refused(overrides, message):
    with pytest.raises(UserError) as err:
        validate(_compose(*overrides, name="search"), SearchConfig)
    assert message in str(err.value)


def test_run_refuses_before_writing_anything(make_cfg, tmp_path):
    cfg = make_cfg("profile=smoke", "data=synthetic", "seed=-1")
    with pytest.raises(UserError, match="seed=-1"):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("parse, good, bad", [
    (positive_int, ("1", "250"), ("0", "-3", "2.5", "abc", "")),
    (count, ("0", "7"), ("-1", "x")),
    (positive_number, ("0.5", "3"), ("0", "-1", "nan?")),
])
def test_argument_types_of_the_argparse_tools(parse, good, bad):
    for text in good:
        assert parse(text) == float(text)
    for text in bad:
        with pytest.raises(argparse.ArgumentTypeError, match="is not"):
            parse(text)
