"""Every random stream of a run, derived from one integer seed in one place.

A run's `seed` (and a pretraining's `train.seed`) drives several independent streams: which
images are labelled, how layers are initialised, the order of the data, the augmentation
draws. Each has a name here and one formula, so a reader sees what a seed controls and a
new stream is added where it cannot silently reuse another's numbers. The formulas are the
ones the benchmark has used since its first release, so results are bit-identical to rows
written before the streams had names (the row key does not change either).

A stream's value seeds its own `torch.Generator` (or the global RNG inside `fork_rng`), so
two streams with equal values for some seed (`eval_train` at K=1 and `augment` both give
seed + 1) still drive different draws of different objects; none is shared by one object.
"""

from __future__ import annotations

from collections.abc import Callable

# name -> (formula of (seed, index), what it drives); `index` is the pass, K or 0
STREAMS: dict[str, tuple[Callable[[int, int], int], str]] = {
    "init": (lambda s, i: s, "a model's initialisation (backbone, heads, α of the search)"),
    "subset": (lambda s, i: s, "the K labelled images per class (the same for every method)"),
    "order": (lambda s, i: s * 1_000_003 + i, "the data order of pass i of a training loop"),
    "augment": (lambda s, i: s + 1, "crop/flip draws and pseudo-labels of training steps"),
    "heldout": (lambda s, i: s + 2, "pseudo-labels of the held-out pretext metric"),
    "eval_init": (lambda s, i: s * 100_003 + i, "the evaluated layers' initialisation at K=i"),
    "eval_train": (lambda s, i: s + i, "the evaluator's training loop at K=i (its order and "
                                       "augment streams derive from this value)"),
    "test_subsample": (lambda s, i: s + 1, "which test images a data.max_test limit keeps"),
    "unlabeled_subsample": (lambda s, i: s + 2, "which unlabeled images a data.max_train limit keeps"),
    "synthetic_test": (lambda s, i: s + 1_000_003, "the test half of the synthetic data set"),
    "search_alpha_order": (lambda s, i: s + 7919, "the data order of the search's α steps"),
}


def derive(seed: int, stream: str, index: int = 0) -> int:
    """The seed of `stream` (see `STREAMS`) for a run seeded `seed`, at pass/K `index`."""
    try:
        formula, _ = STREAMS[stream]
    except KeyError:
        raise KeyError(f"unknown random stream {stream!r}; the streams are {sorted(STREAMS)}") from None
    return int(formula(int(seed), int(index)))
