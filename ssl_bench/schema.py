"""The types and ranges of every user-facing setting, declared once and checked before any work.

Hydra composes the configuration and parses each override's text (`5` is an int, `abc` a
string, `[1,2]` a list), but it does not know that a batch size must be positive or that
rotation angles must differ modulo 360. Left unchecked, such values reach deep code and
end in a traceback, a hang (`train.batch_size=-5`) or, worst, a failure after an hour of
pretraining (`seed=-1` inside scikit-learn). This module declares, with pydantic models,
what each key accepts; `validate` checks a composed configuration against them and turns
the first violation into one `UserError` line that names the key, the value and what is
allowed. The CLIs call it before Hydra creates a run folder (`cli.OutputCheck`), for every
job of a sweep, and `run.run` calls it again for callers of the Python API.

The models are strict: a value must already have the declared type (an int where an int is
asked for, `true`/`false` for a flag), because the code reads the configuration itself, not
a converted copy; the one allowance is an int where a float is asked for.

`_target_` sections (data, backbone, task.module) are checked twice: their argument names
against the target's signature (`errors.instantiate`), and their values here, by the model
registered for the target in `TARGET_ARGS`. A target of the user's own (a task outside the
repository, README "Your own task outside the repository") has no model here: that it
imports and its names are checked, its values are its own business.
"""

from __future__ import annotations

import copy
import importlib
import math
import re
import typing
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ssl_bench.errors import UserError

SEED_MAX = 2**32 - 1  # scikit-learn's random_state takes 0 .. 2**32 - 1; torch and numpy take more

PositiveInt = Annotated[int, Field(ge=1)]
Count = Annotated[int, Field(ge=0)]
# Random-crop padding in pixels per side. Above the image's side a crop is mostly zeros, and
# the padded batch grows with the square of it (10^10 would ask for exabytes); no data set
# here has images above 96 px, so 128 bounds every sensible value. `_check_paddings` also
# holds it to `data.image_size` where that is set.
MAX_CROP_PADDING = 128
CropPadding = Annotated[int, Field(ge=0, le=MAX_CROP_PADDING)]
Seed = Annotated[int, Field(ge=0, le=SEED_MAX)]
Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
Momentum = Annotated[float, Field(ge=0, lt=1)]
Stage = Literal["conv1", "conv2", "conv3"]
KList = Annotated[list[PositiveInt], Field(min_length=1)]


class Section(BaseModel):
    """A part of the configuration whose keys are all known: anything else is a typo."""

    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)


class OpenSection(Section):
    """A part that may carry keys of its own (checked elsewhere or by its target)."""

    model_config = ConfigDict(strict=True, extra="allow", allow_inf_nan=False)


# --- the run -------------------------------------------------------------------------------

class Optimizer(Section):
    lr: Positive
    momentum: Momentum
    nesterov: bool
    weight_decay: NonNegative

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> Optimizer:
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov=true needs a momentum > 0 (or set nesterov=false)")
        return self


class Schedule(Section):
    name: Literal["cosine", "step", "constant"]
    milestones: list[Annotated[float, Field(gt=0, lt=1)]]  # fractions of training
    gamma: Positive
    warmup_epochs: NonNegative


class Augment(Section):
    crop_padding: CropPadding
    flip: bool


BatchSize = Annotated[int, Field(ge=2)]  # BatchNorm needs two images of a batch to normalise


class Train(Section):
    seed: Seed
    epochs: PositiveInt
    batch_size: BatchSize
    steps_per_epoch: PositiveInt | None  # null = one pass; 0 would silently mean the same
    optimizer: Optimizer
    schedule: Schedule
    augment: Augment
    pretext_eval_images: PositiveInt

    @model_validator(mode="after")
    def _warmup_within_training(self) -> Train:
        if self.schedule.warmup_epochs > self.epochs:
            raise ValueError(f"schedule.warmup_epochs={self.schedule.warmup_epochs} is longer than "
                             f"the training (epochs={self.epochs})")
        return self


class LogReg(Section):
    C: Positive
    max_iter: PositiveInt


class CosineKnn(Section):
    stages: list[Stage]
    k: PositiveInt
    temperature: Positive


class Probes(Section):
    enabled: bool
    labels_per_class: KList
    linear_stages: list[Stage]
    knn_stages: list[Stage]
    pool_grid: PositiveInt
    logreg: LogReg
    knn_k: PositiveInt
    cosine_knn: CosineKnn


class Finetune(Section):
    enabled: bool
    labels_per_class: KList


class Eval(Section):
    protocol: Literal["conv3_linear"]
    labels_per_class: KList
    reinit_conv3: bool
    batch_size: BatchSize
    epochs: NonNegative  # 0: the budget is min_steps alone (the paper profile)
    min_steps: PositiveInt
    max_steps: PositiveInt | None  # null = no cap; 0 would silently mean the same
    budget_scale: Positive
    augment: Augment
    feature_cache: bool
    bn_recalibrate: bool
    bn_recalibrate_images: PositiveInt
    optimizer: Optimizer
    schedule: Literal["cosine", "step", "constant"]
    chunk_size: PositiveInt
    probes: Probes
    finetune: Finetune
    data: dict | None  # transfer: a data config (checked as `data` is)

    @model_validator(mode="after")
    def _cap_above_floor(self) -> Eval:
        if self.max_steps is not None and self.max_steps < self.min_steps:
            raise ValueError(f"max_steps={self.max_steps} is below min_steps={self.min_steps}")
        return self


class Distributed(Section):
    backend: Literal["auto", "nccl", "gloo", "mpi"]
    sync_batchnorm: bool
    find_unused_parameters: bool
    timeout_minutes: Positive


class Paths(Section):
    runs_dir: Annotated[str, Field(min_length=1)]
    cache_dir: Annotated[str, Field(min_length=1)]


class Leaderboard(Section):
    path: Annotated[str, Field(min_length=1)]


class Show(Section):
    num_images: PositiveInt
    path: Annotated[str, Field(min_length=1)] | None


class Logger(Section):
    kind: Literal["csv", "tensorboard", "none"]  # ssl_bench.logger.KINDS
    every_n_steps: PositiveInt


class Data(OpenSection):
    """Every data config's keys; which of them a loader takes is its signature's business."""

    name: Annotated[str, Field(min_length=1)]
    root: Annotated[str, Field(min_length=1)] | None = None
    image_size: Annotated[int, Field(ge=1)] | None = None
    max_train: PositiveInt | None = None
    max_test: PositiveInt | None = None
    download: bool = False
    skip_bad_files: bool = False
    cache_dir: Annotated[str, Field(min_length=1)] | None = None
    num_train: PositiveInt | None = None
    num_test: PositiveInt | None = None
    num_classes: Annotated[int, Field(ge=2)] | None = None
    seed: Seed | None = None
    test_fraction: Annotated[float, Field(gt=0, lt=1)] | None = None


class StageSpec(Section):
    channels: Annotated[list[PositiveInt], Field(min_length=1)]
    kernels: Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=1)]
    pool: Literal["max", "avg"] | None

    @model_validator(mode="after")
    def _one_kernel_per_conv(self) -> StageSpec:
        if len(self.channels) != len(self.kernels):
            raise ValueError(f"channels {self.channels} and kernels {self.kernels} must have one "
                             f"entry per convolution (the same length)")
        return self


class Backbone(OpenSection):
    name: Annotated[str, Field(min_length=1)]
    conv1: StageSpec | None = None
    conv2: StageSpec | None = None
    conv3: StageSpec | None = None
    conv4: StageSpec | None = None
    # the searched backbone's keys
    genotype: Annotated[str, Field(min_length=1)] | None = None
    channels: Annotated[list[Annotated[int, Field(ge=2)]], Field(min_length=3, max_length=3)] | None = None
    cells: list[Count] | None = None
    stem_multiplier: PositiveInt | None = None
    param_budget: PositiveInt | None = None

    def halvings(self) -> int:
        """How many times the stages halve the image (max/avg pools; each reduction cell)."""
        if self.cells is not None:
            return 2
        return sum(1 for s in (self.conv1, self.conv2, self.conv3) if s is not None and s.pool)


class Task(OpenSection):
    name: Annotated[str, Field(min_length=1)]
    pretrain: bool
    module: dict | None
    train_lr: Positive
    crop_padding: CropPadding
    evaluation: Literal["frozen", "scratch"]

    @model_validator(mode="after")
    def _pretext_needs_module(self) -> Task:
        if self.pretrain and self.module is None:
            raise ValueError("pretrain=true needs a module (the pretext task) to pretrain with")
        return self


class ExternalTask(Task):
    """`task=external`: a checkpoint evaluated under the protocol (ssl_bench/external.py)."""

    checkpoint: Annotated[str, Field(min_length=1)]
    model: dict | None
    stages: dict[Stage, Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]] | None

    @model_validator(mode="after")
    def _module_needs_stages(self) -> ExternalTask:
        if self.pretrain or self.evaluation != "frozen":
            raise ValueError("an external checkpoint is evaluated, not trained: pretrain=false, "
                             "evaluation=frozen")
        if (self.model is None) != (self.stages is None):
            raise ValueError("task.model and task.stages go together: a module of your own needs the "
                             "map from its layers to conv1, conv2, conv3 (and the suite's layout neither)")
        if self.model is not None and "_target_" not in self.model:
            raise ValueError("task.model needs a _target_ (the class or function that builds the network)")
        return self


class Config(Section):
    """`conf/config.yaml` as composed: what `ssl-bench` and `ssl-bench-show` run."""

    seed: Seed
    device: str
    precision: Literal["auto", "fp32", "bf16"]
    pretrain_precision: Literal["auto", "fp32", "bf16"] | None = None  # null = precision
    deterministic: bool
    threads: PositiveInt | None  # null = torch's default; 0 would silently mean the same
    channels_last: bool
    progress: bool
    profile_name: Annotated[str, Field(min_length=1)]
    check_labels_per_class: KList
    distributed: Distributed

    paths: Paths
    train: Train
    leaderboard: Leaderboard
    show: Show
    logger: Logger
    data: Data
    task: Task
    backbone: Backbone
    eval: Eval

    @field_validator("device")
    @classmethod
    def _device_name(cls, device: str) -> str:
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", device):
            raise ValueError("must be auto, cpu, cuda, cuda:N or mps")
        return device


# --- the architecture search (`ssl-bench-search`) ------------------------------------------

class Network(Section):
    channels: Annotated[list[Annotated[int, Field(ge=2)]], Field(min_length=3, max_length=3)]
    cells: Annotated[list[Count], Field(min_length=3, max_length=3)]
    nodes: PositiveInt
    stem_multiplier: PositiveInt

    @field_validator("cells")
    @classmethod
    def _conv3_has_a_cell(cls, cells: list[int]) -> list[int]:
        if cells[-1] < 1:
            raise ValueError("conv3 needs at least one normal cell (the evaluator retrains it)")
        return cells


class WeightSteps(Section):
    lr: Positive
    lr_min: NonNegative
    momentum: Momentum
    nesterov: bool
    weight_decay: NonNegative
    grad_clip: Positive | None

    @model_validator(mode="after")
    def _floor_below_lr(self) -> WeightSteps:
        if self.lr_min > self.lr:
            raise ValueError(f"lr_min={self.lr_min} is above lr={self.lr}")
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov=true needs a momentum > 0 (or set nesterov=false)")
        return self


class ArchSteps(Section):
    lr: Positive
    betas: Annotated[list[Annotated[float, Field(ge=0, lt=1)]], Field(min_length=2, max_length=2)]
    weight_decay: NonNegative


class Search(Section):
    profile: Annotated[str, Field(min_length=1)]
    epochs: PositiveInt
    steps_per_epoch: PositiveInt | None
    batch_size: BatchSize
    warmup_epochs: Count
    network: Network
    weights: WeightSteps
    arch: ArchSteps
    xi: NonNegative
    fd_radius: Positive

    @model_validator(mode="after")
    def _alpha_moves(self) -> Search:
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs={self.warmup_epochs} leaves no epoch in which α moves "
                             f"(epochs={self.epochs}); make it smaller than epochs")
        return self


class Derived(Section):
    backbone: Backbone
    evaluate: bool
    match_budget: bool


class SearchConfig(Config):
    """`conf/search.yaml` as composed: what `ssl-bench-search` runs."""

    search: Search
    derived: Derived


# --- the pretext tasks' own arguments (task.module), by `_target_` -------------------------

class RotationArgs(Section):
    angles: Annotated[list[int], Field(min_length=2)]

    @field_validator("angles")
    @classmethod
    def _distinct(cls, angles: list[int]) -> list[int]:
        turns = [a % 360 for a in angles]
        if len(set(turns)) != len(turns):
            raise ValueError(f"angles {angles} must be distinct modulo 360 (each is a class)")
        if any(a % 90 for a in angles):
            raise ValueError(f"angles {angles} must be multiples of 90 (rotations without resampling)")
        return angles


class JigsawArgs(Section):
    grid: Annotated[int, Field(ge=2)]
    num_permutations: Annotated[int, Field(ge=2)]
    jitter: Count
    input_size: PositiveInt
    normalize_tiles: bool
    embed_dim: PositiveInt
    hidden_dim: PositiveInt
    permutation_seed: Seed
    cell: PositiveInt | None = None
    origin_shifts: PositiveInt = 1
    origin: Count = 0

    @model_validator(mode="after")
    def _enough_orders(self) -> JigsawArgs:
        orders = math.factorial(self.grid * self.grid)
        if self.num_permutations > orders:
            raise ValueError(f"num_permutations={self.num_permutations} is more than the "
                             f"{orders} orders of a {self.grid}x{self.grid} grid")
        return self


class RelativePositionArgs(Section):
    patch: Annotated[int, Field(ge=2)]
    gap: Count
    jitter: Count
    input_size: PositiveInt
    color_dropping: bool
    noise_scale: NonNegative
    normalize_patches: bool
    embed_dim: PositiveInt
    hidden_dim: PositiveInt
    origin_shifts: PositiveInt = 1
    origin: Count | None = None


class InpaintingArgs(Section):
    mask: Literal["central", "random_block", "random_region"]
    num_blocks: Annotated[int, Field(ge=1, le=16)]  # cells of a 4x4 grid
    coverage: Annotated[list[Annotated[float, Field(gt=0, lt=1)]], Field(min_length=2, max_length=2)]
    overlap: Count
    overlap_weight: NonNegative
    decoder_channels: PositiveInt
    upsample_steps: Count
    adversarial: bool
    adversarial_weight: NonNegative

    @field_validator("coverage")
    @classmethod
    def _ordered(cls, coverage: list[float]) -> list[float]:
        if coverage[0] > coverage[1]:
            raise ValueError(f"coverage {coverage} must be [low, high] with low <= high")
        return coverage


class LayerwiseArgs(Section):
    stages: Annotated[list[Stage], Field(min_length=1)]
    noise_std: NonNegative


class MultiTaskArgs(Section):
    members: Annotated[list[str], Field(min_length=1)]
    weights: Annotated[list[NonNegative], Field(min_length=1)]
    catalog: dict

    @model_validator(mode="after")
    def _members_in_catalog(self) -> MultiTaskArgs:
        unknown = [m for m in self.members if m not in self.catalog]
        if unknown or len(set(self.members)) != len(self.members):
            raise ValueError(f"members {self.members} must be distinct names from {sorted(self.catalog)}")
        if len(self.weights) != len(self.members) or not any(self.weights):
            raise ValueError(f"weights {self.weights} must give one weight per member "
                             f"({len(self.members)}), not all 0")
        return self


class NoArgs(Section):
    pass


TARGET_ARGS: dict[str, type[Section]] = {
    "ssl_bench.tasks.rotation.RotationTask": RotationArgs,
    "ssl_bench.tasks.jigsaw.JigsawTask": JigsawArgs,
    "ssl_bench.tasks.relative_position.RelativePositionTask": RelativePositionArgs,
    "ssl_bench.tasks.inpainting.InpaintingTask": InpaintingArgs,
    "ssl_bench.tasks.layerwise.LayerwiseTask": LayerwiseArgs,
    "ssl_bench.tasks.multitask.MultiTask": MultiTaskArgs,
    "ssl_bench.tasks.classification.ClassificationTask": NoArgs,
}


# --- command-line arguments of the argparse tools (ssl-bench-perf, -leaderboard, -curve) ----

def _argument(model_type: Any, what: str) -> Any:
    """An argparse `type=` that checks a value as the configuration's own types do."""
    from pydantic import TypeAdapter

    adapter = TypeAdapter(model_type)

    def parse(text: str) -> Any:
        import argparse

        try:
            return adapter.validate_json(text)
        except ValidationError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None

    parse.__name__ = what  # argparse names the type in its messages
    return parse


positive_int = _argument(PositiveInt, "a whole number >= 1")
count = _argument(Count, "a whole number >= 0")
positive_number = _argument(Positive, "a number > 0")


# --- checking ------------------------------------------------------------------------------

PHRASES = {  # pydantic's error types, as what the value must be
    "greater_than_equal": "must be at least {ge}", "greater_than": "must be greater than {gt}",
    "less_than_equal": "must be at most {le}", "less_than": "must be less than {lt}",
    "int_type": "must be a whole number", "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number", "float_type": "must be a number",
    "float_parsing": "must be a number", "finite_number": "must be a finite number",
    "bool_type": "must be true or false", "string_type": "must be text",
    "literal_error": "must be {expected}", "list_type": "must be a list, e.g. [1,2]",
    "too_short": "must have at least {min_length} entries",
    "too_long": "must have at most {max_length} entries",
    "dict_type": "must be a group of settings (key: value)",
    "model_type": "must be a group of settings (key: value)",
}


def _is_tag(part: str) -> bool:
    """A pydantic location part that names a union member or a validator, not a key."""
    return part in ("int", "float", "str", "bool", "list", "dict", "none") or "[" in part or "-" in part


def _key(loc: tuple, values: Any, prefix: tuple = ()) -> str:
    """The setting a pydantic error location points at, e.g. 'eval.labels_per_class[0]'.

    Only the parts of `loc` that exist in `values` are kept: the others name union members
    or validators ('int', 'function-after[...]'), not keys.
    """
    parts: list = []
    node = values
    for part in loc:
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            if isinstance(node, Mapping) and isinstance(part, str) and not _is_tag(part):
                parts.append(part)  # a missing or an unknown key, named as given
            break
        parts.append(part)
    text = ""
    for part in (*prefix, *parts):
        text += f"[{part}]" if isinstance(part, int) else f"{'.' if text else ''}{part}"
    return text


def _settings_at(model: type[BaseModel], loc: tuple) -> list[str] | None:
    """The keys `model` declares at `loc` (the section an unknown key was found in)."""
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        models = [a for a in (typing.get_args(field.annotation) or (field.annotation,))
                  if isinstance(a, type) and issubclass(a, BaseModel)]
        if not models:
            return None
        model = models[0]
    return list(model.model_fields)


def _message(exc: ValidationError, values: Any, model: type[BaseModel], prefix: tuple = ()) -> str:
    """The first violation as one line: key=value, then what is allowed."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    key = _key(tuple(first["loc"]), values, prefix)
    kind, ctx = first["type"], first.get("ctx") or {}
    if kind == "missing":
        text = f"{key} is missing: add it (+{key}=...)"
    elif kind == "extra_forbidden":
        known = _settings_at(model, tuple(first["loc"])[:-1])
        text = f"{key} is not a setting; " + (f"the settings there are: {', '.join(known)}" if known
                                              else "check its spelling (`--cfg job` lists them)")
    else:
        if kind in PHRASES:
            what = PHRASES[kind].format(**ctx)
        else:
            what = str(first["msg"]).removeprefix("Value error, ")
            what = what[:1].lower() + what[1:]
        if kind == "too_short" and (isinstance(first["input"], str) or ctx.get("min_length") == 1):
            what = "must not be empty"
        text = f"{key or 'the configuration'}={first['input']!r} is not allowed: {what}"
        if kind == "value_error" and isinstance(first["input"], Mapping):  # a section's rule
            text = f"{key or 'the configuration'}: {what}"
    more = len({tuple(e["loc"][:1]) + (e["type"],) for e in errors}) - 1
    return text + (f" (and {more} more problem{'s' if more > 1 else ''})" if more else "")


def _check(model: type[BaseModel], values: Any, prefix: tuple = ()) -> None:
    try:
        model.model_validate(values)
    except ValidationError as exc:
        raise UserError(_message(exc, values, model, prefix)) from None


def _check_module(module: Mapping | None, prefix: tuple) -> None:
    """A pretext task's own arguments, by its `_target_` (and a multitask's members)."""
    if module is None:
        return
    target = str(module.get("_target_"))
    model = TARGET_ARGS.get(target)
    if model is None:  # the user's own task: that it imports is checked, its values are its own
        _check_importable(target, ".".join((*prefix, "_target_")))
        return
    args = {k: v for k, v in module.items() if not str(k).startswith("_")}
    _check(model, args, prefix)
    if model is MultiTaskArgs:
        for member in args["members"]:
            entry = args["catalog"][member]
            _check(Task, entry, ("task", "catalog", member))  # where the user sets them
            _check_module(entry.get("module"), ("task", "catalog", member, "module"))


def _check_importable(target: str, key: str) -> None:
    """A `_target_` that names no importable object is a one-line error, before any work.

    The usual cause is a task of the user's own whose module is not on PYTHONPATH; left to
    Hydra, it surfaces as a traceback once the data is loaded. A module that is found but
    fails while importing (a missing import inside it, a syntax error) keeps its traceback.
    """
    parts = target.split(".")
    for end in range(len(parts), 0, -1):  # the longest prefix that is a module
        name = ".".join(parts[:end])
        try:
            found = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
                continue  # `name` itself is no module: try a shorter prefix
            raise
        for attr in parts[end:]:
            if not hasattr(found, attr):
                raise UserError(f"{key}={target!r} cannot be imported: {name} has no {attr!r}")
            found = getattr(found, attr)
        return
    raise UserError(f"{key}={target!r} cannot be imported: there is no module {parts[0]!r}; put the "
                    f"folder that holds it on PYTHONPATH")


def _check_sizes(values: Mapping) -> None:
    """Images (and the tiles/patches a task feeds) must survive the backbone's halvings."""
    backbone = Backbone.model_validate(values["backbone"])
    smallest = 2 ** backbone.halvings()
    sizes = [("data.image_size", values["data"].get("image_size"))]
    module = values["task"].get("module") or {}
    modules = [("task.module", module)] + [
        (f"task.catalog.{m}.module", values["task"]["catalog"][m].get("module") or {})
        for m in module.get("members", [])]
    sizes += [(f"{where}.input_size", m.get("input_size")) for where, m in modules]
    for key, size in sizes:
        if size is not None and size < smallest:
            raise UserError(f"{key}={size} is not allowed: backbone={backbone.name} halves its input "
                            f"{backbone.halvings()} times, so images must be at least {smallest} px")


def _check_paddings(values: Mapping) -> None:
    """A crop padding wider than the images it pads (where `data.image_size`, or for the
    evaluator `eval.data.image_size`, says how wide) is refused: its crops would be mostly
    padding."""
    pretrain_size = values["data"].get("image_size")
    train, evaluation = values.get("train", {}), values.get("eval", {})
    eval_data = evaluation.get("data")
    eval_size = eval_data.get("image_size") if eval_data is not None else pretrain_size
    paddings = [("task.crop_padding", values["task"].get("crop_padding"), pretrain_size),
                ("train.augment.crop_padding", train.get("augment", {}).get("crop_padding"), pretrain_size),
                ("eval.augment.crop_padding", evaluation.get("augment", {}).get("crop_padding"), eval_size)]
    for key, padding, size in paddings:
        if size is not None and padding is not None and padding > size:
            raise UserError(f"{key}={padding} is wider than the {size}-px images it pads: its crops "
                            f"would be mostly padding; use at most {size}")


def resolved(cfg: DictConfig) -> dict:
    """The configuration as plain values, interpolations resolved (a missing one is a UserError)."""
    if "hydra" in cfg:  # Hydra's own section resolves only inside a job (hydra.job.num, ...)
        cfg = copy.copy(cfg)
        with open_dict(cfg):
            del cfg["hydra"]
    try:
        values = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except MissingMandatoryValue as exc:
        raise UserError(f"{exc.full_key} is required (it is ??? in the config): set "
                        f"{exc.full_key}=...") from None
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", "") or "a setting"
        raise UserError(f"{key} cannot be resolved: {getattr(exc, 'msg', exc)}") from None
    return values  # type: ignore[return-value]


def validate(cfg: DictConfig, model: type[Config] | None = None) -> None:
    """Check `cfg` against `model` and the task's arguments; the first problem as a UserError.

    Without `model`: `SearchConfig` for a configuration with a `search` section (the search
    and the runs its comparison starts), else `Config`.
    """
    values = resolved(cfg)
    if model is None:
        model = SearchConfig if "search" in values else Config
    _check(model, values)
    if "checkpoint" in values["task"]:
        _check(ExternalTask, values["task"], ("task",))
    if values["eval"].get("data") is not None:
        _check(Data, values["eval"]["data"], ("eval", "data"))
    _check_module(values["task"].get("module"), ("task", "module"))
    _check_sizes(values)
    _check_paddings(values)
