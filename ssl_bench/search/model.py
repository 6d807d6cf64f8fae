"""Cell-based backbones: the search network (mixed edges, α) and the network of a genotype.

Both have the stages of `ConvBackbone`, so the protocol applies unchanged:

    conv1: stem (3×3 conv) -> cells[0] normal cells -> reduction cell   32 px -> 16 px
    conv2: cells[1] normal cells -> reduction cell                      16 px ->  8 px
    conv3: cells[2] normal cells                                         8 px

A cell reads the outputs of the two cells before it *within its stage* (the first cell of
a stage reads the stage input twice, as DARTS's first cell reads the stem). No cell reads
across a stage boundary, because the evaluator hands conv3 nothing but conv2's output.
A cell's output is the concatenation of its intermediate nodes: `nodes × C_stage` channels.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ssl_bench.backbone import STAGES, ConvBackbone, StageSpec
from ssl_bench.errors import ConfigError, UserError
from ssl_bench.search.genotype import Cell, Genotype, derive, load_genotype, num_edges
from ssl_bench.search.ops import PRIMITIVES, MixedOp, make_op, relu_conv_bn

log = logging.getLogger(__name__)


def stage_plan(cells: Sequence[int]) -> list[list[str]]:
    """Cell kinds per stage: `cells[i]` normal cells, then a reduction cell in conv1 and conv2."""
    cells = [int(c) for c in cells]
    if len(cells) != len(STAGES) or min(cells) < 0 or cells[-1] < 1:
        raise ConfigError(f"cells must list the normal cells of conv1, conv2 and conv3 (conv3 at "
                          f"least one, as the evaluator retrains it), got {cells}")
    return [["normal"] * n + (["reduce"] if i < len(STAGES) - 1 else []) for i, n in enumerate(cells)]


class SearchCell(nn.Module):
    """A cell whose every edge is a `MixedOp`; `weights` (edges × ops) come from the network."""

    def __init__(self, c_prev_prev: int, c_prev: int, c: int, nodes: int, kind: str,
                 primitives: tuple[str, ...] = PRIMITIVES):
        super().__init__()
        self.kind, self.nodes = kind, nodes
        # ReLU-conv1x1-BN bring both inputs to C channels (non-affine, as every search BN)
        self.pre0 = relu_conv_bn(c_prev_prev, c, 1, affine=False)
        self.pre1 = relu_conv_bn(c_prev, c, 1, affine=False)
        # edges of node j: from inputs 0, 1 (stride 2 in a reduction cell) and nodes 2..j+1
        self.edges = nn.ModuleList(
            MixedOp(c, 2 if kind == "reduce" and source < 2 else 1, primitives)
            for node in range(nodes) for source in range(2 + node))

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        states = [self.pre0(s0), self.pre1(s1)]
        relus = [F.relu(h) for h in states]  # one ReLU per node, read by all its out-edges
        edge = 0
        for node in range(self.nodes):
            total = None
            for h, relu_h in zip(states, relus):  # every earlier node feeds this one
                term = self.edges[edge](h, weights[edge], relu_h)
                total = term if total is None else total + term
                edge += 1
            states.append(total)
            if node < self.nodes - 1:  # the last node feeds no edge of this cell
                relus.append(F.relu(total))
        return torch.cat(states[2:], dim=1)


class DerivedCell(nn.Module):
    """A discrete cell: each node is the sum of two operations on two earlier nodes."""

    def __init__(self, c_prev_prev: int, c_prev: int, c: int, cell: Cell, kind: str):
        super().__init__()
        self.kind = kind
        self.pre0 = relu_conv_bn(c_prev_prev, c, 1)
        self.pre1 = relu_conv_bn(c_prev, c, 1)
        self.sources = [source for _, source in cell]
        self.ops = nn.ModuleList(make_op(op, c, 2 if kind == "reduce" and source < 2 else 1)
                                 for op, source in cell)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        states = [self.pre0(s0), self.pre1(s1)]
        for j in range(len(self.ops) // 2):
            a, b = 2 * j, 2 * j + 1
            states.append(self.ops[a](states[self.sources[a]]) + self.ops[b](states[self.sources[b]]))
        return torch.cat(states[2:], dim=1)


class CellStage(nn.Module):
    """One stage: an optional stem, then cells, each reading the two outputs before it."""

    def __init__(self, stem: nn.Module | None, cells: list[nn.Module]):
        super().__init__()
        self.stem = stem
        self.cells = nn.ModuleList(cells)

    def forward(self, x: torch.Tensor, weights: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """`weights` (softmax of α per cell kind) only for the search network's cells."""
        if self.stem is not None:
            x = self.stem(x)
        s0 = s1 = x
        for cell in self.cells:
            out = cell(s0, s1) if weights is None else cell(s0, s1, weights[cell.kind])
            s0, s1 = s1, out
        return s1


CellFactory = Callable[[int, int, int, str], nn.Module]  # (c_pp, c_p, c, kind) -> cell


def build_stages(make_cell: CellFactory, channels: Sequence[int], cells: Sequence[int], nodes: int,
                 stem_multiplier: int, in_channels: int, affine: bool,
                 ) -> tuple[list[CellStage], list[int]]:
    """The three stages and their output channels, for either kind of cell."""
    channels = [int(c) for c in channels]
    if len(channels) != len(STAGES) or min(channels) < 2:
        raise ConfigError(f"channels must give a width >= 2 for conv1, conv2 and conv3, got {channels}")
    stem_out = int(stem_multiplier) * channels[0]
    stem = nn.Sequential(nn.Conv2d(in_channels, stem_out, 3, padding=1, bias=False),
                         nn.BatchNorm2d(stem_out, affine=affine))
    stages, outs, c_in = [], [], stem_out
    for i, kinds in enumerate(stage_plan(cells)):
        c_pp = c_p = c_in
        stage_cells = []
        for kind in kinds:
            stage_cells.append(make_cell(c_pp, c_p, channels[i], kind))
            c_pp, c_p = c_p, nodes * channels[i]
        stages.append(CellStage(stem if i == 0 else None, stage_cells))
        outs.append(c_p)
        c_in = c_p
    return stages, outs


class SearchNetwork(nn.Module):
    """The DARTS search network: conv1–conv3 of mixed-op cells and α per cell type.

    α (`alpha_normal`, `alpha_reduce`: edges × operations) is shared by all cells of a kind;
    `arch_parameters()` are α, `weight_parameters()` everything else. Same interface as
    `ConvBackbone` (`features`, `forward`, `out_channels`), so pretext tasks use it as is.
    """

    def __init__(self, channels: Sequence[int] = (8, 16, 32), cells: Sequence[int] = (1, 1, 1),
                 nodes: int = 4, stem_multiplier: int = 3, in_channels: int = 3,
                 primitives: tuple[str, ...] = PRIMITIVES):
        super().__init__()
        self.name = "search"
        self.nodes, self.primitives = int(nodes), tuple(primitives)
        unknown = [p for p in self.primitives if p not in PRIMITIVES]
        if unknown or not set(self.primitives) - {"none"}:
            raise ConfigError(f"primitives must be non-zero operations among {list(PRIMITIVES)}, "
                              f"got {list(self.primitives)}")
        stages, self._out = build_stages(
            lambda c_pp, c_p, c, kind: SearchCell(c_pp, c_p, c, self.nodes, kind, self.primitives),
            channels, cells, self.nodes, stem_multiplier, in_channels, affine=False)
        for name, stage in zip(STAGES, stages):
            setattr(self, name, stage)
        shape = (num_edges(self.nodes), len(self.primitives))
        # near-uniform start (DARTS: 1e-3 · N(0, 1)): no operation is favoured at first
        self.alpha_normal = nn.Parameter(1e-3 * torch.randn(shape))
        self.alpha_reduce = nn.Parameter(1e-3 * torch.randn(shape))
        self.pool = nn.AdaptiveAvgPool2d(1)

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alpha_normal, self.alpha_reduce]

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def cell_weights(self) -> dict[str, torch.Tensor]:
        """softmax(α) per edge, for each cell kind."""
        return {"normal": torch.softmax(self.alpha_normal, dim=-1),
                "reduce": torch.softmax(self.alpha_reduce, dim=-1)}

    def out_channels(self, stage: str = "conv3") -> int:
        return self._out[STAGES.index(stage)]

    def features(self, x: torch.Tensor, upto: str = "conv3") -> torch.Tensor:
        if upto not in STAGES:
            raise ValueError(f"upto must be one of {STAGES}, got {upto!r}")
        weights = self.cell_weights()  # once per forward, shared by every cell of a kind
        for stage in STAGES[:STAGES.index(upto) + 1]:
            x = getattr(self, stage)(x, weights)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled conv3 features, N×D."""
        return self.pool(self.features(x)).flatten(1)

    def genotype(self) -> Genotype:
        return derive(self.alpha_normal, self.alpha_reduce, self.nodes, self.primitives)


class SearchedBackbone(ConvBackbone):
    """The network of a genotype, a drop-in `ConvBackbone` (conv1/conv2/conv3, features, ...).

    `ConvBackbone.__init__` builds plain conv stages, so this calls `nn.Module.__init__`
    and builds cell stages instead; `features`, `forward` and `out_channels` are inherited.
    `specs` summarises each stage as one block (output channels; pool = "max" when the
    stage halves the resolution), which is what greedy layer-wise decoders read.
    """

    def __init__(self, genotype: Genotype, channels: Sequence[int] = (16, 32, 64),
                 cells: Sequence[int] = (1, 1, 1), stem_multiplier: int = 3,
                 name: str = "searched", in_channels: int = 3):
        nn.Module.__init__(self)
        genotype.validate()
        self.name, self.genotype = name, genotype
        self.channels, self.cells = [int(c) for c in channels], [int(c) for c in cells]
        stages, outs = build_stages(
            lambda c_pp, c_p, c, kind: DerivedCell(c_pp, c_p, c, genotype.cell(kind), kind),
            channels, cells, genotype.nodes, stem_multiplier, in_channels, affine=True)
        self.specs = {}
        for name_, stage, out, kinds in zip(STAGES, stages, outs, stage_plan(cells)):
            setattr(self, name_, stage)
            self.specs[name_] = StageSpec([out], [3], "max" if "reduce" in kinds else None)
        self.pool = nn.AdaptiveAvgPool2d(1)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _count_on_meta(genotype: Genotype, channels: list[int], cells: Sequence[int],
                   stem_multiplier: int, in_channels: int) -> int:
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        return count_parameters(SearchedBackbone(genotype, channels, cells, stem_multiplier,
                                                 in_channels=in_channels))


def match_budget(genotype: Genotype, channels: Sequence[int], cells: Sequence[int],
                 stem_multiplier: int, budget: int, in_channels: int = 3) -> list[int]:
    """`channels` scaled by one factor so the network's parameter count is nearest `budget`.

    The count only grows with the factor, so bisection finds the two widths around the
    budget; the closer one wins (the ratio between stages is kept, up to rounding).
    """
    base = [int(c) for c in channels]

    def widths(m: float) -> list[int]:
        return [max(2, round(c * m)) for c in base]

    def count(m: float) -> int:
        return _count_on_meta(genotype, widths(m), cells, stem_multiplier, in_channels)

    lo, hi = 1e-3, 1.0
    while count(hi) < budget:
        hi *= 2
        if hi > 1e4:
            raise UserError(f"backbone.param_budget={budget} is out of reach for this genotype")
    for _ in range(40):
        if widths(lo) == widths(hi):
            break
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if count(mid) < budget else (lo, mid)
    best = min((lo, hi), key=lambda m: abs(count(m) - budget))
    return widths(best)


def searched_backbone(genotype: str | None = None, name: str = "searched",
                      channels: Sequence[int] = (16, 32, 64), cells: Sequence[int] = (1, 1, 1),
                      stem_multiplier: int = 3, param_budget: int | None = None,
                      in_channels: int = 3) -> SearchedBackbone:
    """Builder of `conf/backbone/searched.yaml`: the network of the genotype file `genotype`.

    With `param_budget`, the widths are `channels` scaled to that many parameters (e.g. the
    hand-designed backbone's), so architectures are compared at the same size.
    """
    cells_ = load_genotype(genotype)
    widths = list(channels)
    if param_budget:
        widths = match_budget(cells_, channels, cells, stem_multiplier, int(param_budget), in_channels)
    net = SearchedBackbone(cells_, widths, cells, stem_multiplier, name, in_channels)
    log.info("searched backbone %s from %s: channels %s, cells %s, %d parameters%s", name, genotype,
             widths, list(cells), count_parameters(net),
             f" (budget {int(param_budget)})" if param_budget else "")
    return net
