"""The α update of DARTS (Liu et al. 2019, section 2.3): first or second order.

α minimises the pretext loss on one half of the unlabeled images (here `val`) while the
weights w minimise it on the other half (`train`). The exact gradient of
L_val(w*(α), α) is replaced by one unrolled weight step, w' = w − ξ·Δw(w, α), with Δw the
update the weight optimiser would make (eq. 6):

    ∇α L_val(w', α) − ξ ∇²_{α,w} L_train(w, α) · ∇w' L_val(w', α)

and the second-order term is a finite difference of two α-gradients (eq. 7–8):

    ∇²_{α,w} L_train · v ≈ (∇α L_train(w⁺, α) − ∇α L_train(w⁻, α)) / 2ε,
    w± = w ± ε·v,  ε = r / ‖v‖  (r = 0.01 in DARTS).

ξ = 0 is the first-order approximation: ∇α L_val(w, α), no extra passes.

The virtual step and the two perturbed passes evaluate the model at other weights through
`torch.func.functional_call`, so no copy of the network is made and the real weights are
never modified; BatchNorm running statistics of those passes go to scratch copies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from ssl_bench.device import autocast


@dataclass
class Batch:
    """Network inputs and pseudo-labels of a pretext batch (as `task.make_batch` returns)."""

    inputs: Any
    targets: Any


class SearchModel(nn.Module):
    """The search network and the pretext task as one module, so one parameter dict swaps
    every weight (trunk and head) in a functional call."""

    def __init__(self, net: nn.Module, task: nn.Module):
        super().__init__()
        self.net, self.task = net, task

    def forward(self, inputs: Any) -> Any:
        return self.task(self.net, inputs)

    def loss(self, batch: Batch) -> torch.Tensor:
        return self.task.loss(self(batch.inputs), batch.targets)


def sgd_direction(params: list[torch.Tensor], grads: list[torch.Tensor],
                  optimizer: torch.optim.SGD) -> tuple[list[torch.Tensor], list[float]]:
    """The step direction d of `optimizer` (w_new = w − lr·d) for `grads`, without taking it,
    and each parameter's gain ∂d/∂grad.

    Mirrors torch.optim.SGD (weight decay, momentum with its current buffers, dampening,
    Nesterov), so the unrolled step is the step the weights would really take. The gain
    scales the second-order term: with DARTS's plain momentum it is 1, with Nesterov
    momentum the gradient enters d twice (1 + momentum·(1 − dampening)).
    """
    group = optimizer.param_groups[0]
    wd, momentum = group["weight_decay"], group["momentum"]
    dampening, nesterov = group["dampening"], group["nesterov"]
    out, gains = [], []
    for p, g in zip(params, grads):
        d = g + wd * p.detach() if wd else g
        if momentum:
            buf = optimizer.state.get(p, {}).get("momentum_buffer")
            # torch's first step starts the buffer at d itself, without dampening
            into_buf = 1.0 if buf is None else 1.0 - dampening
            buf = d if buf is None else momentum * buf + into_buf * d
            d = d + momentum * buf if nesterov else buf
            gains.append(1.0 + momentum * into_buf if nesterov else into_buf)
        else:
            gains.append(1.0)
        out.append(d)
    return out, gains


class Architect:
    """Owns α's optimiser (Adam, as DARTS: lr 3e-4, betas (0.5, 0.999), weight decay 1e-3)."""

    def __init__(self, model: SearchModel, weight_optimizer: torch.optim.SGD, lr: float = 3e-4,
                 betas: tuple[float, float] = (0.5, 0.999), weight_decay: float = 1e-3,
                 xi: float = 0.0, fd_radius: float = 0.01, precision: str = "fp32"):
        self.model, self.weight_optimizer = model, weight_optimizer
        self.xi, self.fd_radius, self.precision = float(xi), float(fd_radius), precision
        alphas = {id(p) for p in model.net.arch_parameters()}
        named = list(model.named_parameters())
        self.alpha_names = [n for n, p in named if id(p) in alphas]
        self.weight_names = [n for n, p in named if id(p) not in alphas]
        self.alphas = [p for n, p in named if id(p) in alphas]
        self.weights = [p for n, p in named if id(p) not in alphas]
        self.optimizer = torch.optim.Adam(self.alphas, lr=lr, betas=tuple(betas),
                                          weight_decay=weight_decay)

    def _loss(self, batch: Batch, weights: list[torch.Tensor] | None = None) -> torch.Tensor:
        """The pretext loss of `batch`, at the real weights or at `weights` (same order)."""
        device = self.alphas[0].device
        with autocast(device, self.precision):
            if weights is None:
                return self.model.loss(batch)
            params: dict[str, torch.Tensor] = dict(zip(self.weight_names, weights))
            params.update(zip(self.alpha_names, self.alphas))
            # scratch BatchNorm statistics: a virtual pass must not move the real ones
            params.update((n, b.clone()) for n, b in self.model.named_buffers())
            outputs = functional_call(self.model, params, (batch.inputs,))
            return self.model.task.loss(outputs, batch.targets)

    def first_order_gradient(self, val: Batch) -> tuple[list[torch.Tensor], float]:
        """∇α L_val(w, α), and the loss."""
        loss = self._loss(val)
        return list(torch.autograd.grad(loss, self.alphas)), float(loss.detach())

    def second_order_gradient(self, train: Batch, val: Batch, xi: float,
                              ) -> tuple[list[torch.Tensor], float]:
        """The unrolled gradient of eq. 7 with the finite-difference product of eq. 8."""
        # the virtual weight step w' = w − ξ·Δw
        grads = torch.autograd.grad(self._loss(train, self.weights), self.weights,
                                    allow_unused=True)
        grads = [torch.zeros_like(w) if g is None else g for w, g in zip(self.weights, grads)]
        direction, gains = sgd_direction(self.weights, grads, self.weight_optimizer)
        unrolled = [(w.detach() - xi * d).requires_grad_(True) for w, d in zip(self.weights, direction)]
        # ∇α and ∇w' of the validation loss at (w', α)
        val_loss = self._loss(val, unrolled)
        out = torch.autograd.grad(val_loss, self.alphas + unrolled, allow_unused=True)
        d_alpha = list(out[:len(self.alphas)])
        # dw'/dα = −ξ·gain·∂∇w L_train/∂α, so the product is taken with gain·∇w' L_val
        v = [torch.zeros_like(w) if g is None else gain * g
             for w, g, gain in zip(unrolled, out[len(self.alphas):], gains)]
        # ∇²_{α,w} L_train · v by central differences along v
        norm = torch.sqrt(sum((g * g).sum() for g in v))
        eps = self.fd_radius / norm.clamp_min(1e-12)

        def alpha_grad_at(sign: float) -> tuple[torch.Tensor, ...]:
            shifted = [w.detach() + sign * eps * g for w, g in zip(self.weights, v)]
            return torch.autograd.grad(self._loss(train, shifted), self.alphas)

        plus, minus = alpha_grad_at(1.0), alpha_grad_at(-1.0)
        hessian_v = [(p - m) / (2 * eps) for p, m in zip(plus, minus)]
        return [da - xi * h for da, h in zip(d_alpha, hessian_v)], float(val_loss.detach())

    def gradient(self, train: Batch, val: Batch) -> tuple[list[torch.Tensor], float]:
        if self.xi == 0:
            return self.first_order_gradient(val)
        return self.second_order_gradient(train, val, self.xi)

    def step(self, train: Batch, val: Batch) -> float:
        """One Adam step on α; returns the validation (α-half) loss."""
        grads, loss = self.gradient(train, val)
        for alpha, g in zip(self.alphas, grads):
            alpha.grad = g.detach()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss
