"""The one checkpoint: a training run's resumable state in one file, written atomically.

Pretraining and the architecture search both save one after every epoch and resume from it
(`Checkpoint.load` + `restore`), so a killed run continues where its last epoch ended and
reaches the weights an uninterrupted run would (on CPU). A checkpoint holds:

- the state dicts of named parts (modules, optimisers, schedules), one top-level key each;
- the random state a resumed run needs to draw what an uninterrupted one would (the run's
  augmentation generator, torch's global generator, CUDA's where there is one);
- the counters (`epoch`, `step`), the seconds trained so far, and `finished` once the run's
  last epoch is in it, plus whatever extra keys the run adds (the pretraining's phase).

A file that cannot be read, or lacks what a checkpoint has, is refused with one line that
says what to do; it is never deleted or overwritten by the refusal.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

import torch

from ssl_bench.errors import UserError
from ssl_bench.runlog import atomic_torch_save, atomic_write_bytes

COUNTERS = ("epoch", "step", "seconds", "rng")


class Stateful(Protocol):
    """Anything with PyTorch's state-dict pair: modules, optimisers, schedules."""

    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> Any: ...


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    """The random state of `generator` and of torch's global generators."""
    state = {"aug": generator.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(generator: torch.Generator, state: dict[str, Any]) -> None:
    generator.set_state(state["aug"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Checkpoint:
    """The checkpoint file of one run (`path`), saved and read through this class only."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def exists(self) -> bool:
        return self.path.exists()

    def save(self, parts: Mapping[str, Stateful], generator: torch.Generator, *, epoch: int,
             step: int, seconds: float, finished: bool, **extra: Any) -> None:
        """Replace the file with the state of `parts` and the run's counters (atomic)."""
        state: dict[str, Any] = {name: part.state_dict() for name, part in parts.items()}
        state.update(extra, epoch=int(epoch), step=int(step), seconds=float(seconds),
                     finished=bool(finished), rng=rng_state(generator))
        atomic_torch_save(self.path, state)

    def load(self, device: torch.device, parts: Iterable[str] = ()) -> dict[str, Any] | None:
        """The saved state (None without a file), verified: every counter and every part
        named in `parts` (names, or a mapping of them) is there; `restore` loads them."""
        if not self.path.exists():
            return None
        try:
            state = torch.load(self.path, map_location=device, weights_only=False)
        except Exception as exc:  # a torn or foreign file: torch raises many kinds
            raise UserError(f"the checkpoint {self.path} cannot be read ({type(exc).__name__}: "
                            f"{exc}); move it away to start that run again") from exc
        missing = [k for k in (*COUNTERS, *parts) if not isinstance(state, dict) or k not in state]
        if missing:
            raise UserError(f"the checkpoint {self.path} lacks {', '.join(missing)}: it was not "
                            f"written by this run's code; move it away to start that run again")
        return state

    def restore(self, state: dict[str, Any], parts: Mapping[str, Stateful],
                generator: torch.Generator | None = None) -> None:
        """Load `state` into `parts` (and the random state into `generator` and torch's).

        A part whose saved keys or shapes do not fit the model (another backbone or task
        setting than the folder's name says) is refused with one line, not a traceback.
        """
        for name, part in parts.items():
            try:
                part.load_state_dict(state[name])
            except (RuntimeError, KeyError, ValueError) as exc:
                detail = " ".join(str(exc).split())[:300] or type(exc).__name__
                raise UserError(f"the checkpoint {self.path} does not fit this run's {name} "
                                f"({detail}); move it away to start that run again") from exc
        if generator is not None:
            set_rng_state(generator, state["rng"])


def keep_logged_epochs(path: Path, last_epoch: int) -> None:
    """Keep the metric lines of a checkpoint's epochs in the JSON-lines log `path`, drop
    later ones and lines without an epoch (held-out results).

    Each epoch's line is written just before its checkpoint, so a kill in between leaves a
    line that the resumed run writes again.
    """
    if not path.exists():
        return
    lines = [line for line in path.read_text().splitlines()
             if line.strip() and json.loads(line).get("epoch", last_epoch + 1) <= last_epoch]
    atomic_write_bytes(path, ("\n".join(lines) + "\n" if lines else "").encode())
