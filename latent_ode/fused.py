"""Faster equivalents of the model's vector fields for inference (no gradients).

On a CPU, ``torch.tanh`` costs about seven times ``torch.sigmoid`` (measured on this project's
2-core machine, torch 2.13, 2048x64 floats: 410 us against 55 us) and the latent vector field of
a served model is mostly that tanh: an MLP ``W2 tanh(W1 z + b1) + b2`` plus a linear part.
Since ``tanh(x) = 2 sigmoid(2x) - 1``, the same function is

    (2 W2) sigmoid((2 W1) z + 2 b1) + (b2 - W2 1),

with the factors folded into the weights: one sigmoid where there was a tanh, no extra
operation, and ``torch.addmm`` calls without ``nn.Module`` dispatch. The answers differ from the
``nn.Module`` path by float32 rounding (about 1e-6 relative), far inside any solver tolerance.

:func:`inference_field` recognises the structures the registries build (an MLP of linear and
tanh layers, :class:`~latent_ode.dynamics.RotationDynamics`,
:class:`~latent_ode.dynamics.BilinearDynamics`) and returns None for anything else, which then
runs as it is. It is used only where no gradient is recorded (``torch.is_grad_enabled()`` is
False); training never sees it. :data:`ENABLED` switches it off (the benchmarks' baseline).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = ["ENABLED", "inference_field"]

ENABLED = True
"""Use the fused fields under inference; False runs the modules as they are (for comparisons)."""

Field = Callable[[Tensor], Tensor]


class _SigmoidMLP:
    """``Linear (Tanh Linear)*`` with every tanh rewritten as a sigmoid (module docstring)."""

    def __init__(self, linears: list[nn.Linear]) -> None:
        weights: list[Tensor] = []
        biases: list[Tensor] = []
        for k, lin in enumerate(linears):
            w, b = lin.weight.detach(), lin.bias.detach()
            if k > 0:  # its input was tanh(x) = 2 s - 1 with s the sigmoid of 2x
                b = b - w.sum(dim=1)
                w = 2.0 * w
            if k < len(linears) - 1:  # its output feeds a tanh: scale by 2 for the sigmoid
                w, b = 2.0 * w, 2.0 * b
            weights.append(w.t().contiguous())
            biases.append(b.contiguous())
        self.weights = weights
        self.biases = biases

    def __call__(self, z: Tensor) -> Tensor:
        last = len(self.weights) - 1
        for k, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            z = torch.addmm(b, z, w)
            if k < last:
                z = z.sigmoid_()
        return z


class _Rotation:
    """``z A^T + mlp(z)``: the linear part added into the MLP's output in place."""

    def __init__(self, mlp: _SigmoidMLP, linear: Tensor) -> None:
        self.mlp = mlp
        self.linear_t = linear.detach().t().contiguous()

    def __call__(self, z: Tensor) -> Tensor:
        return self.mlp(z).addmm_(z, self.linear_t)


class _Bilinear:
    """``inner(z) + (P z + a) * s tanh((Q z + b) / s)`` with the tanh as a sigmoid."""

    def __init__(self, inner: Field, factors: nn.Linear, bound: float) -> None:
        w, b = factors.weight.detach(), factors.bias.detach()
        dim = w.shape[0] // 2
        # s tanh(r / s) = 2 s sigmoid(2 r / s) - s: the right half is scaled by 2 / s.
        scale = torch.ones(2 * dim, dtype=w.dtype, device=w.device)
        scale[dim:] = 2.0 / bound
        self.inner = inner
        self.weight_t = (w * scale[:, None]).t().contiguous()
        self.bias = (b * scale).contiguous()
        self.bound = bound
        self.dim = dim

    def __call__(self, z: Tensor) -> Tensor:
        both = torch.addmm(self.bias, z, self.weight_t)
        left, right = both[:, : self.dim], both[:, self.dim:]
        gate = right.sigmoid().mul_(2.0 * self.bound).sub_(self.bound)
        return torch.addcmul(self.inner(z), left, gate)


def _mlp(module: nn.Module) -> _SigmoidMLP | None:
    if not isinstance(module, nn.Sequential) or len(module) % 2 != 1:
        return None
    layers = list(module)
    linears = layers[0::2]
    if not all(type(m) is nn.Linear and m.bias is not None for m in linears):
        return None
    if not all(type(m) is nn.Tanh for m in layers[1::2]):
        return None
    return _SigmoidMLP(linears)  # type: ignore[arg-type]


def inference_field(module: nn.Module) -> Field | None:
    """A faster function equal to ``module`` (up to float32 rounding) for inference, or None.

    Args:
        module: a vector field built by :data:`~latent_ode.dynamics.DYNAMICS` or the encoder's
            ODE MLP.

    Returns:
        A callable (N, L) -> (N, L) holding detached copies of the weights taken now (build
        it again after the weights change), or None when fusing is off (:data:`ENABLED`), a
        gradient is being recorded, or the structure is not one this module knows.
    """
    if not ENABLED or torch.is_grad_enabled():
        return None
    from latent_ode.dynamics import BilinearDynamics, RotationDynamics  # dynamics imports config

    if isinstance(module, BilinearDynamics):
        inner = inference_field(module.inner)
        return None if inner is None else _Bilinear(inner, module.factors, module.BOUND)
    if isinstance(module, RotationDynamics):
        mlp = _mlp(module.mlp)
        return None if mlp is None else _Rotation(mlp, module.linear)
    return _mlp(module)
