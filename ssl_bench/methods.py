"""The benchmark's methods: the one list that every other list is derived from.

`conf/experiment/benchmark.yaml` sweeps exactly `METHODS` (the Makefile reads its task list
from there), `perf` measures the `PRETEXT_TASKS`, and the tests take theirs from here;
`tests/test_methods.py` checks that they agree and that every task config is a method, so
a new method is added in one place (its config) plus this list.
"""

from __future__ import annotations

from omegaconf import OmegaConf

from ssl_bench import configs

# the single pretext tasks (each has its own module and a per-sample reference pipeline in
# perf), their combinations, and the baselines
PRETEXT_TASKS = ("rotation", "jigsaw", "relative_position", "inpainting")
METHODS = (*PRETEXT_TASKS, "multitask", "multitask_all", "layerwise", "random", "supervised",
           "supervised_pretrain")
# task configs that are not methods of the benchmark: `external` evaluates a checkpoint the
# user brings (ssl-bench-eval)
OTHER_TASKS = ("external",)


def pretrains(method: str) -> bool:
    """Whether a method pretrains a backbone, as its config says (`pretrain`, default true).

    Read from the task's own file, not composed: the baselines set it there. The file is
    read as a resource (`configs.files`), so an installed copy finds it inside the package.
    """
    text = (configs.files() / "task" / f"{method}.yaml").read_text(encoding="utf-8")
    return bool(OmegaConf.create(text).get("pretrain", True))


def pretrained_methods() -> tuple[str, ...]:
    """The methods with a pretraining (all but the random-init and from-scratch baselines)."""
    return tuple(m for m in METHODS if pretrains(m))
