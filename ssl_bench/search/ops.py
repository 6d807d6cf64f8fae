"""The candidate operations of an edge, and the mixed operation that blends them (DARTS).

Every edge of a cell carries all of `PRIMITIVES`; during the search its output is
softmax(α_edge)-weighted sum of their outputs, so the choice of operation is continuous
and α gets gradients. Operations keep the channel count (C -> C); in a reduction cell
the edges leaving the cell's inputs use stride 2, every other edge stride 1.

`affine=False` during the search (as in DARTS): a learnable BatchNorm scale after each
candidate could rescale its output and so compete with α for the same role.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ssl_bench.errors import ConfigError

# The order fixes the columns of α; "none" (the zero op) is never chosen when deriving.
PRIMITIVES: tuple[str, ...] = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",   # identity (a factorised 1x1 reduction when the edge has stride 2)
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)


class Zero(nn.Module):
    """The "no edge" operation: zeros of the output's shape (stride 2 halves H and W)."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, ::self.stride, ::self.stride].mul(0.0)


class FactorizedReduce(nn.Module):
    """Identity at stride 2: half the outputs are a 1×1 conv of the even pixels (2i, 2j), the
    other half one of the odd pixels (2i+1, 2j+1), so no pixel row or column is ignored.

    Computed as one 2×2 stride-2 convolution whose kernel is zero except the top-left tap
    (first half of the outputs) and the bottom-right tap (second half): the same function
    as DARTS's two 1×1 convolutions and a concatenation, with the same parameters. The
    concatenated version sent channel slices of the gradient into the convolutions'
    backward, which hung in PyTorch 2.14's channels-last CPU kernels (4 channels, 32 px).
    Zero padding at the right and bottom makes odd sizes work (ceil(H/2) like every op).
    """

    def __init__(self, c_in: int, c_out: int, affine: bool = True, relu: bool = True):
        super().__init__()
        self.relu = nn.ReLU(inplace=False) if relu else nn.Identity()
        self.even = nn.Parameter(torch.empty(c_out // 2, c_in))
        self.odd = nn.Parameter(torch.empty(c_out - c_out // 2, c_in))
        self.bn = nn.BatchNorm2d(c_out, affine=affine)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """As a 1×1 nn.Conv2d initialises its weight (and what the evaluator's re-init calls)."""
        for w in (self.even, self.odd):
            nn.init.kaiming_uniform_(w.view(*w.shape, 1, 1), a=5 ** 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(self.relu(x), (0, 1, 0, 1))
        zeros_e, zeros_o = torch.zeros_like(self.even), torch.zeros_like(self.odd)
        # kernel taps in (row, col) order (0,0) (0,1) (1,0) (1,1): out × in × 2 × 2
        kernel = torch.cat([torch.stack([self.even, zeros_e, zeros_e, zeros_e], -1),
                            torch.stack([zeros_o, zeros_o, zeros_o, self.odd], -1)])
        kernel = kernel.view(*kernel.shape[:2], 2, 2)
        return self.bn(F.conv2d(x, kernel, stride=2))


def relu_conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1, affine: bool = True,
                 ) -> nn.Sequential:
    """ReLU -> conv -> BN (the order of DARTS: the ReLU belongs to the edge, not the node)."""
    return nn.Sequential(nn.ReLU(inplace=False),
                         nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False),
                         nn.BatchNorm2d(c_out, affine=affine))


def dil_conv(c: int, kernel: int, stride: int, dilation: int, affine: bool,
             relu: bool = True) -> nn.Sequential:
    """ReLU -> dilated depthwise k×k -> pointwise 1×1 -> BN."""
    padding = dilation * (kernel - 1) // 2
    return nn.Sequential(
        nn.ReLU(inplace=False) if relu else nn.Identity(),
        nn.Conv2d(c, c, kernel, stride, padding, dilation=dilation, groups=c, bias=False),
        nn.Conv2d(c, c, 1, bias=False),
        nn.BatchNorm2d(c, affine=affine))


def sep_conv(c: int, kernel: int, stride: int, affine: bool, relu: bool = True) -> nn.Sequential:
    """A depthwise-separable conv applied twice (the first one carries the stride), as in DARTS."""
    return nn.Sequential(dil_conv(c, kernel, stride, 1, affine, relu), dil_conv(c, kernel, 1, 1, affine))


def _pool(kind: str, stride: int) -> nn.Module:
    if kind == "max":
        return nn.MaxPool2d(3, stride, padding=1)
    # padding is not an input pixel: average only the real ones at the border
    return nn.AvgPool2d(3, stride, padding=1, count_include_pad=False)


# (channels, stride, affine, relu) -> the operation; `relu` only matters where reads_relu()
OPS: dict[str, Callable[[int, int, bool, bool], nn.Module]] = {
    "none": lambda c, stride, affine, relu: Zero(stride),
    "max_pool_3x3": lambda c, stride, affine, relu: _pool("max", stride),
    "avg_pool_3x3": lambda c, stride, affine, relu: _pool("avg", stride),
    "skip_connect": lambda c, stride, affine, relu: (nn.Identity() if stride == 1
                                                     else FactorizedReduce(c, c, affine, relu)),
    "sep_conv_3x3": lambda c, stride, affine, relu: sep_conv(c, 3, stride, affine, relu),
    "sep_conv_5x5": lambda c, stride, affine, relu: sep_conv(c, 5, stride, affine, relu),
    "dil_conv_3x3": lambda c, stride, affine, relu: dil_conv(c, 3, stride, 2, affine, relu),
    "dil_conv_5x5": lambda c, stride, affine, relu: dil_conv(c, 5, stride, 2, affine, relu),
}


def reads_relu(name: str, stride: int) -> bool:
    """Whether the operation starts with a ReLU of its input (the convolutions do; pooling,
    identity and zero read the input itself)."""
    return "conv" in name or (name == "skip_connect" and stride > 1)


def make_op(name: str, channels: int, stride: int, affine: bool = True, relu: bool = True,
            ) -> nn.Module:
    """One candidate operation, C -> C channels.

    `relu=False` leaves out the leading ReLU of the operations that have one: the caller
    then passes ReLU(x) itself, computed once for every operation reading the same node.
    """
    if name not in OPS:
        raise ConfigError(f"unknown operation {name!r}; choose from {list(OPS)}")
    return OPS[name](channels, stride, affine, relu)


class MixedOp(nn.Module):
    """All candidate operations on one edge; the output is their weighted sum.

    Pooling has no BatchNorm of its own, so DARTS adds a non-affine one after it: otherwise
    its unnormalised output would have a different scale from the convolutions' and the
    comparison of their weights would be skewed. The operations that start with a ReLU are
    built without it and read one ReLU(x), shared (the same result, a fraction of the
    memory traffic, which is what a search on a CPU spends most of its time on).
    """

    def __init__(self, channels: int, stride: int, primitives: tuple[str, ...] = PRIMITIVES):
        super().__init__()
        self.primitives = primitives
        self.reads_relu = [reads_relu(name, stride) for name in primitives]
        ops = []
        for name in primitives:
            op = make_op(name, channels, stride, affine=False, relu=False)
            if "pool" in name:
                op = nn.Sequential(op, nn.BatchNorm2d(channels, affine=False))
            ops.append(op)
        self.ops = nn.ModuleList(ops)

    def forward(self, x: torch.Tensor, weights: torch.Tensor,
                relu_x: torch.Tensor | None = None) -> torch.Tensor:
        """x: N×C×H×W; weights: one per candidate (softmax of the edge's α); relu_x: ReLU(x)
        when the caller has it already."""
        if relu_x is None:
            relu_x = F.relu(x)
        out = None
        for w, name, op, wants_relu in zip(weights, self.primitives, self.ops, self.reads_relu):
            if name == "none":  # w · 0 adds nothing: skip the work
                continue
            term = w * op(relu_x if wants_relu else x)
            out = term if out is None else out + term
        return out if out is not None else self.ops[0](x)
