"""The one checkpoint: a training run's resumable state in one file, written atomically.

Pretraining and the architecture search both save one after every epoch and resume from it
(`Checkpoint.load` + `restore`), so a killed run continues where its last epoch ended and
reaches the weights an uninterrupted run would (on CPU). A checkpoint holds:

- the state dicts of named parts (modules, optimisers, schedules), one top-level key each;
- the random state a resumed run needs to draw what an uninterrupted one would (the run's
  augmentation generator, torch's global generator, CUDA's where there is one);
- the counters (`epoch`, `step`), the seconds trained so far, and `finished` once the run's
  last epoch is in it, plus whatever extra keys the run adds (the pretraining's phase).

A file that cannot be read, lacks what a checkpoint has, or holds parts that do not fit the
model (other keys or shapes) is a `BadCheckpoint`. Where the checkpoint belongs to a cache
entry that can be recomputed (a pretraining, a search: `load(..., recompute=...)`), the file
is moved aside (`checkpoint.pt.bad-<time>`, kept for inspection) and the run starts that
computation again, with a warning that says so; elsewhere the refusal is one line that says
what to do. A bad file is never deleted or overwritten.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

import torch

from ssl_bench.errors import UserError
from ssl_bench.runlog import atomic_torch_save, atomic_write_bytes

COUNTERS = ("epoch", "step", "seconds", "rng")
log = logging.getLogger(__name__)


class BadCheckpoint(UserError):
    """A checkpoint file that cannot be used: torn, foreign, or not fitting the model."""

    def __init__(self, path: Path, problem: str):
        self.checkpoint = Checkpoint(path)
        self.problem = f"the checkpoint {path} {problem}"
        super().__init__(f"{self.problem}; move it away to start that run again")


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

    def load(self, device: torch.device, parts: Iterable[str] | Mapping[str, Stateful] = (),
             recompute: str | None = None) -> dict[str, Any] | None:
        """The saved state (None without a file), verified: every counter and every part
        named in `parts` is there, and the parts given as modules fit their saved keys and
        shapes; `restore` loads them.

        `recompute`: what the caller does without a checkpoint ("pretrains from epoch 0"):
        a bad file is then moved aside, with a warning, and None returned; without it a bad
        file is a `BadCheckpoint`.
        """
        if not self.path.exists():
            return None
        try:
            return self._verified(device, parts)
        except BadCheckpoint as exc:
            if recompute is None:
                raise
            aside = self.move_aside()
            log.warning("%s; moved it to %s and %s", exc.problem, aside, recompute)
            return None

    def move_aside(self) -> Path:
        """Rename the file out of the way (never deleted: it may be wanted for a bug report)."""
        if not self.path.exists():
            return self.path
        aside = self.path.with_name(f"{self.path.name}.bad-{time.strftime('%Y%m%d-%H%M%S')}")
        self.path.replace(aside)
        return aside

    def _verified(self, device: torch.device, parts: Iterable[str] | Mapping[str, Stateful]) -> dict:
        try:  # weights_only: tensors, numbers, strings and containers; never arbitrary objects
            with warnings.catch_warnings():  # torch's remarks on a foreign pickle: the error says it
                warnings.simplefilter("ignore", UserWarning)
                state = torch.load(self.path, map_location=device, weights_only=True)
        except Exception as exc:  # a torn or foreign file: torch raises many kinds
            detail = " ".join(str(exc).split())[:200]
            raise BadCheckpoint(self.path, f"cannot be read ({type(exc).__name__}: {detail})") from None
        missing = [k for k in (*COUNTERS, *parts) if not isinstance(state, dict) or k not in state]
        if missing:
            raise BadCheckpoint(self.path, f"lacks {', '.join(missing)}: it was not written by this "
                                           f"run's code")
        if isinstance(parts, Mapping):
            for name, part in parts.items():
                misfit = _misfit(part, state[name])
                if misfit:
                    raise BadCheckpoint(self.path, f"does not fit this run's {name} ({misfit})")
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
                raise BadCheckpoint(self.path, f"does not fit this run's {name} ({detail})") from exc
        if generator is not None:
            set_rng_state(generator, state["rng"])


def _misfit(part: Stateful, saved: Any) -> str:
    """Why the saved state of a module cannot be loaded into it ('' when it can)."""
    if not isinstance(part, torch.nn.Module):
        return ""  # optimisers and schedules: checked by their own load_state_dict
    return state_dict_misfit(part.state_dict(), saved)


def state_dict_misfit(expected: Mapping[str, Any], saved: Any) -> str:
    """Why the state dict `saved` does not fit a model whose own state dict is `expected`
    ('' when it fits): the first missing key, the first extra key, or the first key whose
    shape differs, with both shapes. One function for checkpoints and external backbones."""
    if not isinstance(saved, Mapping):
        return f"it holds a {type(saved).__name__}, not a state dict"
    missing = [k for k in expected if k not in saved]
    unexpected = [k for k in saved if k not in expected]

    def more(keys: list[str]) -> str:
        return f" (and {len(keys) - 1} more)" if len(keys) > 1 else ""
    if missing:
        return f"it lacks the key {missing[0]!r}{more(missing)} that the model has"
    if unexpected:
        return f"it has the key {unexpected[0]!r}{more(unexpected)} that the model does not"
    for key, value in expected.items():
        other = saved[key]
        if not isinstance(other, torch.Tensor):
            return f"{key} is a {type(other).__name__}, not a tensor"
        if other.shape != value.shape:
            return (f"{key} has shape {tuple(other.shape)} in the file but {tuple(value.shape)} "
                    f"in the model")
    return ""


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
