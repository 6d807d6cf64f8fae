"""Results versions: what a code change that alters results must bump, and what it changed.

A leaderboard row is reused when a run with the same identity asks for it again. If a code
change alters what a configuration computes (a new augmentation draw, a fixed bug in a
task, a new evaluator), old rows must not be reused as if they were new: bump the version
here, with one line saying what changed. Two counters, because they invalidate different
caches:

- `pretrain`: what a pretraining computes (tasks, the training loop, data order). A bump
  gives every pretraining a new identity, so none is reused: they are recomputed.
- `results`: what the evaluator and the baselines compute from a backbone. A bump gives
  every run a new id, so its rows are recomputed (pretrainings are still reused).

Version 1 of each is the code as it was when versioning began: identities of version 1 are
the identities from before (no version field), so rows and pretrainings written earlier
stay valid. Old rows are never deleted: they stay in the CSV with their `results_version`,
`run` says which older version it found for the configuration it recomputes, and the
summaries rank only the newest version present (`stats.main_rows`).
"""

from __future__ import annotations

PRETRAIN_VERSION = 1
RESULTS_VERSION = 1

# version -> what changed (the reason a rerun recomputes); add a line with every bump
PRETRAIN_HISTORY = {1: "pretrainings as of 2026-12-02 (before versioning)"}
RESULTS_HISTORY = {1: "rows as of 2026-12-02: fair budgets, crop + flip for every method"}


def identity_field(name: str, version: int) -> dict[str, int]:
    """What a version adds to an identity: nothing for version 1 (identities from before
    versioning stay the same), `{name: version}` from version 2 on."""
    return {} if int(version) == 1 else {name: int(version)}
