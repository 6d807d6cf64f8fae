"""Genotypes: the discrete cells derived from α, their file format and their validation.

A cell has two input nodes (0 and 1: the outputs of the two cells before it) and `nodes`
intermediate nodes (2, 3, ...); node j reads two earlier nodes, each through one
operation. A genotype lists, for the normal and the reduction cell, two (operation, input)
pairs per intermediate node, in node order.

Files are named by a hash of the genotype (`genotype_<hash>.json`) and the loader checks
the name against the content. Runs are identified by their configuration, which holds the
file's *path*; a content-addressed name makes the path stand for one genotype, so a
pretraining cache or leaderboard row can never be reused for a different cell.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from ssl_bench.errors import UserError
from ssl_bench.runlog import atomic_write_bytes
from ssl_bench.search.ops import PRIMITIVES

CELL_TYPES = ("normal", "reduce")
FORMAT = "ssl_bench.genotype/1"
_HASHED_NAME = re.compile(r"_([0-9a-f]{10})$")

# (operation, input node) pairs, two per intermediate node
Cell = tuple[tuple[str, int], ...]


def num_edges(nodes: int) -> int:
    """Edges of a cell: intermediate node j has 2 + j incoming ones (two inputs, j nodes)."""
    return sum(2 + j for j in range(nodes))


def edge_offset(node: int) -> int:
    """Index of the first incoming edge of intermediate node `node` in α's rows."""
    return sum(2 + j for j in range(node))


@dataclass(frozen=True)
class Genotype:
    normal: Cell
    reduce: Cell

    @property
    def nodes(self) -> int:
        return len(self.normal) // 2

    def cell(self, kind: str) -> Cell:
        return self.normal if kind == "normal" else self.reduce

    def validate(self) -> None:
        """Raise ValueError unless both cells have two distinct, earlier inputs per node and
        only known non-zero operations."""
        for kind in CELL_TYPES:
            pairs = self.cell(kind)
            if not pairs or len(pairs) % 2:
                raise ValueError(f"{kind}: needs two (op, input) pairs per node, got {len(pairs)} pairs")
        if len(self.normal) != len(self.reduce):
            raise ValueError(f"the normal cell has {len(self.normal) // 2} nodes, the reduction "
                             f"cell {len(self.reduce) // 2}; both need the same number")
        for kind in CELL_TYPES:
            pairs = self.cell(kind)
            for node in range(len(pairs) // 2):
                (op_a, in_a), (op_b, in_b) = pairs[2 * node], pairs[2 * node + 1]
                for op, source in ((op_a, in_a), (op_b, in_b)):
                    if op not in PRIMITIVES or op == "none":
                        raise ValueError(f"{kind} node {node}: operation {op!r} is not one of "
                                         f"{[p for p in PRIMITIVES if p != 'none']}")
                    if not isinstance(source, int) or not 0 <= source < node + 2:
                        raise ValueError(f"{kind} node {node}: input {source!r} must be an "
                                         f"integer in 0..{node + 1} (an earlier node)")
                if in_a == in_b:
                    raise ValueError(f"{kind} node {node}: both inputs are node {in_a}; "
                                     f"a node reads two different earlier nodes")

    def to_dict(self) -> dict[str, list[list]]:
        return {kind: [[op, source] for op, source in self.cell(kind)] for kind in CELL_TYPES}

    @classmethod
    def from_dict(cls, d: dict) -> Genotype:
        cells = []
        for kind in CELL_TYPES:
            if kind not in d:
                raise ValueError(f"no {kind!r} cell (keys: {sorted(d)})")
            try:
                cells.append(tuple((str(op), source) for op, source in d[kind]))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{kind}: expected a list of [operation, input] pairs ({exc})") from exc
        genotype = cls(*cells)
        genotype.validate()
        return genotype

    def digest(self) -> str:
        """Hash of the cells alone (not of metadata or formatting): names the file."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:10]

    def describe(self) -> str:
        """One line per cell, e.g. `normal: n2 = sep_conv_3x3(0) + skip_connect(1); ...`."""
        lines = []
        for kind in CELL_TYPES:
            pairs = self.cell(kind)
            nodes = [f"n{j + 2} = {pairs[2 * j][0]}({pairs[2 * j][1]}) + "
                     f"{pairs[2 * j + 1][0]}({pairs[2 * j + 1][1]})" for j in range(self.nodes)]
            lines.append(f"{kind}: " + "; ".join(nodes))
        return "\n".join(lines)


def derive_cell(alpha: torch.Tensor, nodes: int, primitives: tuple[str, ...] = PRIMITIVES) -> Cell:
    """The discrete cell of DARTS from one cell type's α (edges × operations).

    For each node: every incoming edge is scored by its strongest non-zero operation's
    softmax weight; the two best edges are kept, each with that operation.
    """
    if alpha.shape != (num_edges(nodes), len(primitives)):
        raise ValueError(f"alpha has shape {tuple(alpha.shape)}, expected "
                         f"{(num_edges(nodes), len(primitives))} for {nodes} nodes")
    weights = torch.softmax(alpha.detach().float().cpu(), dim=-1)
    if "none" in primitives:  # the zero op may be strong, but it is never kept
        weights[:, primitives.index("none")] = -1.0
    strength, best_op = weights.max(dim=1)  # per edge
    pairs: list[tuple[str, int]] = []
    for node in range(nodes):
        rows = slice(edge_offset(node), edge_offset(node + 1))
        top = strength[rows].topk(2).indices.sort().values  # sorted: inputs in node order
        pairs += [(primitives[int(best_op[rows][i])], int(i)) for i in top]
    return tuple(pairs)


def derive(alpha_normal: torch.Tensor, alpha_reduce: torch.Tensor, nodes: int,
           primitives: tuple[str, ...] = PRIMITIVES) -> Genotype:
    genotype = Genotype(derive_cell(alpha_normal, nodes, primitives),
                        derive_cell(alpha_reduce, nodes, primitives))
    genotype.validate()
    return genotype


def save_genotype(genotype: Genotype, folder: Path, metadata: dict | None = None) -> Path:
    """Write `folder/genotype_<hash>.json` (atomically) and return its path."""
    path = Path(folder) / f"genotype_{genotype.digest()}.json"
    record = {"format": FORMAT, **genotype.to_dict(), "nodes": genotype.nodes,
              "description": genotype.describe().splitlines(), "metadata": metadata or {}}
    # one line per key: a cell reads as one list of [op, input] pairs
    lines = [f"  {json.dumps(k)}: {json.dumps(v, default=str)}" for k, v in record.items()]
    atomic_write_bytes(path, ("{\n" + ",\n".join(lines) + "\n}\n").encode())
    return path


def load_genotype(path: str | Path | None) -> Genotype:
    """The genotype in a file written by `save_genotype` (UserError when it cannot be used)."""
    how = "run ssl-bench-search to write one (it prints the path), or pass an existing genotype_<hash>.json"
    if path is None or str(path).strip() in ("", "None", "null"):
        raise UserError(f"backbone=searched needs backbone.genotype=<file>; {how}")
    path = Path(str(path)).expanduser()
    if not path.is_file():
        raise UserError(f"backbone.genotype: no file {path}; {how}")
    try:
        raw = json.loads(path.read_text())
        if not isinstance(raw, dict):
            raise ValueError("the file holds no JSON object")
        genotype = Genotype.from_dict(raw)
    except (ValueError, TypeError) as exc:  # json.JSONDecodeError is a ValueError
        raise UserError(f"backbone.genotype: {path} is not a valid genotype: {exc}. A genotype "
                        f"file is JSON like {{\"normal\": [[\"sep_conv_3x3\", 0], "
                        f"[\"skip_connect\", 1], ...], \"reduce\": [...]}}, two [op, input] pairs "
                        f"per node") from exc
    found = _HASHED_NAME.search(path.stem)
    digest = genotype.digest()
    if found is None or found.group(1) != digest:
        base = path.stem[:found.start()] if found else path.stem
        why = ("its content changed after it was named" if found else
               "its name does not carry the hash of its content")
        raise UserError(f"backbone.genotype: {path}: {why}. Runs are cached and keyed by the "
                        f"genotype's path, so the name must identify the cells: save it as "
                        f"{path.with_name(f'{base}_{digest}.json')} and pass that path")
    return genotype
