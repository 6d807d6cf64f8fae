"""When an accuracy is at chance level: one definition for the log, the leaderboard and the report.

A network that diverged or never learnt still produces finite numbers, and a table of them
looks like any other. Chance accuracy of a classification into n classes is 100/n %; an
accuracy is *at chance* when it is no higher than chance plus a margin,

    margin = max(2 points, 3 binomial standard errors of chance accuracy on the test samples)

(below chance counts too: a network that scores under guessing is no better off).

- 3 standard errors: a network that only guesses scores above the line with a probability
  of about 0.1%, so a result at chance is almost never missed on a small test set (the
  smoke profile's 500 test images: margin 4.0 points on 10 classes).
- at least 2 points: on a large test set 3 standard errors shrink below a point (CIFAR-10's
  10,000 test images: 0.9), and 11% on 10 classes is as broken as 10%: it is the diverged
  network of the architecture-search reference (10.4-11.3%), while every network in the
  reference runs that learnt is far above the line (its weakest rows: 20% on 10 classes;
  relative position's pretext, 20% on 8 classes, chance 12.5%).

The samples are test images: for a pretext metric, the held-out images, not the inputs
made from them (rotation's four copies of an image are not four independent samples). On
the smoke profile's tiny budget some rows at the smallest K and the patch tasks' pretext
metrics are at chance in fact, and are flagged: the flag says what the number supports.

Only accuracies have a chance level: a loss (inpainting's masked MSE, layer-wise
reconstruction) has none, and none is made up for it.
"""

from __future__ import annotations

import math

import pandas as pd

FLOOR_POINTS = 2.0
STANDARD_ERRORS = 3.0

# values of the leaderboard's `at_chance` column: what was at chance; NO = checked, nothing was
NO = "no"
PRETEXT = "pretext"
ACCURACY = "accuracy"


def chance_accuracy(num_classes: int) -> float:
    """Accuracy in percent of guessing among `num_classes` classes."""
    if num_classes < 1:
        raise ValueError(f"a classification needs at least one class, got {num_classes}")
    return 100.0 / num_classes


def margin(chance: float, samples: int | None) -> float:
    """Points above `chance` (percent) still counted as chance, for a test of `samples`
    independent samples (None: unknown, the floor alone)."""
    if not samples:
        return FLOOR_POINTS
    p = chance / 100.0
    return max(FLOOR_POINTS, STANDARD_ERRORS * 100.0 * math.sqrt(p * (1.0 - p) / samples))


def at_chance(value: float | None, chance: float | None, samples: int | None) -> bool:
    """Whether an accuracy `value` (percent) is at chance; False when either is unknown."""
    if value is None or chance is None or not math.isfinite(value):
        return False
    return value <= chance + margin(chance, samples)


def describe(value: float, chance: float, samples: int | None) -> str:
    """`10.40% vs chance 10.00% (+4.0 points margin on 500 test images)`: for warnings."""
    on = f" on {samples} test images" if samples else ""
    return f"{value:.2f}% vs chance {chance:.2f}% (+{margin(chance, samples):.1f} points margin{on})"


def flag(pretext: bool, accuracy: bool) -> str:
    """The `at_chance` value of a row: `no`, `pretext`, `accuracy` or `pretext+accuracy`."""
    parts = [name for name, hit in ((PRETEXT, pretext), (ACCURACY, accuracy)) if hit]
    return "+".join(parts) or NO


def flagged(column: pd.Series) -> pd.Series:
    """Which cells of an `at_chance` column mark their row: any value but `no`; empty cells
    (rows written before the column existed) do not."""
    text = column.astype("string").fillna("").str.strip().str.lower()
    return ~text.isin(["", NO, "false"])
