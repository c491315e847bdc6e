"""One WGAN training iteration: (1) update the critic on a batch, (2) every ``n_critic``-th iteration update G.

The algorithm, with the math in ``wgan.training.losses``:

    (1) critic:    minimize  mean D(G(z)) - mean D(x)  [+ gp_lambda * (||grad D(x_hat)|| - 1)^2   (wgan-gp)]
                   then clip every critic weight to [-clip_value, clip_value]                          (wgan)
    (2) generator: minimize  -mean D(G(z)), gradients through the frozen critic into G

An iteration is one critic step; the generator steps on every iteration ``i`` (0-based, counted over the
whole run, not per epoch as in the tutorial) with ``i % n_critic == 0``, so the cadence does not jump at
epoch boundaries. Fresh noise is drawn for every step from the seeded ``noise`` stream.

Conditional runs (``train.conditional``, ``wgan.models.conditional``): both models also take a digit per image. The
critic sees the real batch with its labels and fakes of the same digits, row for row; the generator is asked for
uniformly drawn digits. Same digits, because the gradient penalty cannot hold a critic score that depends on the
digit alone: with uniform fake digits against MNIST's shares (11.2% ones, 9.0% fives) the critic gains
``sum_y (share_real(y) - 0.1) * c_y`` from per-digit offsets ``c_y`` and grows them without bound (measured: the
100-epoch conditional recipe diverged from about epoch 23, its offsets reaching +-1000 at epoch 40, r = 0.99 with
the share differences; docs/results.md, "Conditional"). With equal digits on both sides they cancel in every batch.
Per step, the noise stream gives the latents first, then (generator step) the fake digits, then (wgan-gp) the
interpolation weights. The penalty holds each mixed image's label fixed at its real image's.

Metrics are summed on the device and read (one host sync) only by ``take_metrics``. Speed choices: fakes for
the critic are made under ``no_grad``; real and fake go through the critic in one forward; the critic is
frozen during the generator step; clipping is two ``_foreach`` calls; on the CPU the optimizers run fused
kernels (``wgan.training.optim``). On CUDA, ``make_step`` records the iteration as CUDA graphs (``cuda_graphs``).
Under several processes (``wgan.training.distributed``) each rank trains on its rows of every batch and of the batch's
noise, and the gradients are averaged over ranks before each optimizer step: the same math as one process.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

from wgan.config import TrainConfig
from wgan.models.conditional import label_args
from wgan.models.networks import Critic, Generator
from wgan.training import losses, optim
from wgan.training.batches import draw_fake_labels
from wgan.training.distributed import ALONE, World
from wgan.training.ema import make_average

# DVCLive metric names of the step's sums: files are dvclive/plots/metrics/<name>.tsv, keys nest on "/"
M_CRITIC = "train/critic_loss"  # what the critic minimizes: -wasserstein, plus the penalty under wgan-gp
M_GENERATOR = "train/generator_loss"
M_WASSERSTEIN = "train/wasserstein"
M_GP = "train/gradient_penalty"


class WGANStep:
    """The eager training step; ``benchmarks/bench_train.py`` times this class, so it is the real code."""

    def __init__(
        self,
        cfg: TrainConfig,
        generator: Generator,
        critic: Critic,
        noise: torch.Generator,
        world: World = ALONE,
        ema_start_iteration: int = 0,
    ) -> None:
        """``ema_start_iteration``: the iteration at which the average starts moving (``train.ema_start``)."""
        self.cfg = cfg
        self.world = (
            world  # this process's share of each batch, and the gradient all-reduce (wgan.training.distributed)
        )
        self.generator = generator
        self.critic = critic
        self.noise = noise
        self.device = next(generator.parameters()).device
        self.critic_params = list(critic.parameters())
        self.opt_g = optim.make_optimizer(cfg, generator.parameters(), self.device, cfg.lr)
        self.opt_d = optim.make_optimizer(cfg, self.critic_params, self.device, optim.critic_lr(cfg))
        self.ema = make_average(generator, cfg.ema_decay, cfg.seed, ema_start_iteration)  # the average, or None
        self.gp = cfg.loss == "wgan-gp"
        self.conditional = cfg.conditional
        cuda = self.device.type == "cuda"
        if cuda:  # TF32 tensor cores for float32 matmuls (10-bit mantissa inputs, float32 sums); CUDA only
            torch.backends.cuda.matmul.allow_tf32 = True  # the legacy switch: the new one breaks legacy readers
        self.autocast: Callable[[], Any] = functools.partial(
            # no weight-cast cache on CUDA: a cache inside a graph capture would hold freed capture memory
            torch.autocast,
            self.device.type,
            dtype=torch.bfloat16,
            enabled=cfg.precision == "bf16",
            cache_enabled=not cuda,
        )
        # sums of [critic loss, train Wasserstein estimate, gradient penalty] and of the generator loss
        self.critic_sums = torch.zeros(3, device=self.device)
        self.generator_sum = torch.zeros((), device=self.device)
        self.critic_count = 0
        self.generator_count = 0
        self.zero = torch.zeros((), device=self.device)

    def __call__(self, real: torch.Tensor, iteration: int, labels: torch.Tensor | None = None) -> None:
        """Train on one batch of real images (and their digits, in a conditional run); ``iteration`` is the
        0-based global iteration number."""
        self.critic_step(real, labels)
        if iteration % self.cfg.n_critic == 0:
            self.generator_step(real.shape[0], iteration)

    def critic_step(self, real: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        self._critic_update(real, labels)
        self.critic_count += 1

    def generator_step(self, n: int, iteration: int) -> None:
        self._generator_update(n)
        self.generator_count += 1
        if self.ema is not None:
            self.ema.update(iteration)  # the average follows every generator step (train.ema_decay)

    def _latent(self, n: int) -> torch.Tensor:
        """This rank's ``n`` rows of the global batch's noise, drawn from ``self.noise`` on its own device."""
        size = n * self.world.world_size
        z = torch.randn(size, self.cfg.latent_dim, device=self.noise.device, generator=self.noise)
        return self.world.share(z).to(self.device)  # the move is a no-op in training (the model's device)

    def _fake_labels(self, n: int) -> torch.Tensor | None:
        """Uniform digits from ``self.noise`` for a conditional generator step (after the latents), else None."""
        if not self.conditional:
            return None
        return draw_fake_labels(self.noise, n, rank=self.world.rank, world_size=self.world.world_size).to(self.device)

    # ------------------------------------------------------------------ (1) update the critic
    def _critic_update(self, real: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        n = real.shape[0]
        z = self._latent(n)
        with torch.no_grad(), self.autocast():  # fakes of the real batch's digits (see the module's docstring)
            fake = self.generator(z, *label_args(labels)).to(real.dtype)
        both = None if labels is None else torch.cat([labels, labels])
        with self.autocast():  # one forward for both halves: the critic has no BatchNorm
            scores = self.critic(torch.cat([real, fake]), *label_args(both))
        d_real, d_fake = scores[:n], scores[n:]
        loss = losses.critic_loss(d_real, d_fake)
        if self.gp:
            eps = self.world.share(losses.mixing_weights(n * self.world.world_size, real, self.noise))
            x_hat = losses.penalty_points(real, fake, eps=eps)
            penalty = losses.gradient_penalty(
                self.critic, x_hat, self.cfg.gp_lambda, autocast=self.cfg.precision == "bf16", labels=labels
            )
            total = loss + penalty
        else:
            penalty, total = self.zero, loss
        self.opt_d.zero_grad(set_to_none=True)
        total.backward()
        self.world.average_gradients(self.critic_params)
        self.opt_d.step()
        if not self.gp:
            losses.clip_weights_(self.critic_params, self.cfg.clip_value)
        self.critic_sums += torch.stack([total.detach(), -loss.detach(), penalty.detach()])

    # ------------------------------------------------------------------ (2) update the generator
    def _generator_update(self, n: int) -> None:
        """Gradients flow through the (frozen) critic into the generator; the critic's weights stay put."""
        for p in self.critic_params:
            p.requires_grad_(False)
        try:
            z, fake_labels = self._latent(n), self._fake_labels(n)
            with self.autocast():
                loss = losses.generator_loss(
                    self.critic(self.generator(z, *label_args(fake_labels)), *label_args(fake_labels))
                )
            self.opt_g.zero_grad(set_to_none=True)
            loss.backward()
            self.world.average_gradients(self.generator.parameters())
            self.opt_g.step()
        finally:
            for p in self.critic_params:
                p.requires_grad_(True)
        self.generator_sum += loss.detach()

    def take_metrics(self) -> dict[str, float]:
        """Averages since the last call (one host sync), then reset; empty groups are left out."""
        out: dict[str, float] = {}
        critic_sums, generator_sum = self._global_sums()
        if self.critic_count:
            critic, wasserstein, penalty = (critic_sums / self.critic_count).tolist()
            out[M_CRITIC], out[M_WASSERSTEIN] = critic, wasserstein
            if self.gp:
                out[M_GP] = penalty
        if self.generator_count:
            out[M_GENERATOR] = generator_sum.item() / self.generator_count
        self.critic_sums.zero_()
        self.generator_sum.zero_()
        self.critic_count = self.generator_count = 0
        return out

    def _global_sums(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The metric sums of the global batch: every rank's sums of its share's means, averaged over ranks."""
        sums = self.world.mean(torch.cat([self.critic_sums, self.generator_sum[None]]))
        return sums[:3], sums[3]

    def state_dict(self) -> dict[str, Any]:
        """The step's state as of the global batch (a collective under several processes: call it on every rank)."""
        critic_sums, generator_sum = self._global_sums()  # any process count resumes from them
        state = {
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "critic_sums": critic_sums.cpu(),
            "generator_sum": generator_sum.cpu(),
            "critic_count": self.critic_count,
            "generator_count": self.generator_count,
        }
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.critic_sums.copy_(state["critic_sums"])
        self.generator_sum.copy_(state["generator_sum"])
        self.critic_count = int(state["critic_count"])
        self.generator_count = int(state["generator_count"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
