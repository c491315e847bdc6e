"""The optimizers, and a fused RMSprop for the CPU.

torch's RMSprop updates each parameter in five passes (``mul_``, ``addcmul_``, ``sqrt``, ``add_``, ``addcdiv_``)
and has no fused kernel; on a small CPU that was a fifth of a training iteration. torch's fused Adam kernel (one
pass per tensor, vectorized and multithreaded) computes RMSprop exactly when ``beta1 = 0`` and both bias
corrections are 1 (docs/benchmarks.md has the timings):

    exp_avg    = 0 * exp_avg + grad = grad                    (beta1 = 0; a zeroed scratch buffer, not state)
    square_avg = alpha * square_avg + (1 - alpha) * grad**2   (beta2 = alpha)
    param     -= lr * grad / (sqrt(square_avg) + eps)         (1 - beta**step == 1 for a saturated step count)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from wgan.config import TrainConfig

# beta ** SATURATED_STEP underflows to 0 for every float beta < 1: bias corrections of exactly 1, as in RMSprop
SATURATED_STEP = 2.0**62


class FusedRMSprop(torch.optim.Optimizer):
    """RMSprop as torch defines it without momentum, centering or weight decay, in one fused kernel per step.

    Results match ``torch.optim.RMSprop(params, lr, alpha, eps)`` to float rounding (the kernel's own order of
    operations); the state is RMSprop's ``square_avg``, so checkpoints hold what RMSprop's would.
    """

    def __init__(self, params: Iterable[Any], lr: float, alpha: float = 0.99, eps: float = 1e-8) -> None:
        if not (lr > 0 and 0 <= alpha < 1 and eps > 0):
            raise ValueError(f"invalid RMSprop settings: lr={lr}, alpha={alpha}, eps={eps}")
        super().__init__(params, {"lr": lr, "alpha": alpha, "eps": eps})
        self._scratch: dict[torch.Tensor, torch.Tensor] = {}  # the kernel's exp_avg output, not optimizer state
        self._steps: dict[torch.device, torch.Tensor] = {}

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            for p in params:
                if not self.state[p]:
                    self.state[p]["square_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                if p not in self._scratch:
                    self._scratch[p] = torch.zeros_like(p)  # zeroed: the kernel multiplies it by 0, and 0 * NaN = NaN
            device = params[0].device
            if device not in self._steps:
                self._steps[device] = torch.tensor(SATURATED_STEP, device=device)
            torch._fused_adam_(
                params,
                [p.grad for p in params],
                [self._scratch[p] for p in params],
                [self.state[p]["square_avg"] for p in params],
                [],
                [self._steps[device]] * len(params),
                lr=group["lr"],
                beta1=0.0,
                beta2=group["alpha"],
                weight_decay=0.0,
                eps=group["eps"],
                amsgrad=False,
                maximize=False,
            )
        return loss


def make_optimizer(cfg: TrainConfig, params: Iterable[Any], device: torch.device, lr: float) -> torch.optim.Optimizer:
    """RMSprop (the WGAN paper and tutorial) or Adam with ``train.betas`` (WGAN-GP's usual choice), at ``lr``:
    ``train.lr`` for the generator, ``critic_lr(cfg)`` for the critic.

    On the CPU both use fused kernels (FusedRMSprop; Adam's ``fused=True``), measured 3-5x faster per step
    than torch's default there. Elsewhere torch's defaults stay: multi-tensor kernels that the CUDA-graph
    path records.
    """
    cpu = device.type == "cpu"
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(cfg.betas[0], cfg.betas[1]), fused=True if cpu else None)
    if cpu:
        return FusedRMSprop(params, lr=lr)
    return torch.optim.RMSprop(params, lr=lr)


def critic_lr(cfg: TrainConfig) -> float:
    """The critic's learning rate: ``train.critic_lr``, or ``train.lr`` when it is 0 (one time-scale).

    A faster critic than generator is the two time-scale update rule (Heusel et al. 2017, "GANs Trained by a
    Two Time-Scale Update Rule Converge to a Local Nash Equilibrium"), what BigGAN and SAGAN train with.
    """
    return cfg.critic_lr or cfg.lr
