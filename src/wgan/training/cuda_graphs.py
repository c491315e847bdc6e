"""The CUDA-graph training step, and ``make_step``: the graphed step where it works, else the eager one.

At batch 64 a GPU spends most of an eager iteration launching ~100 small kernels; replaying a recorded
graph launches them all at once. The graphed iteration is the eager one (``wgan.training.step``) recorded, so it
computes the same math; ``benchmarks/gpu_check.sh`` checks that on a GPU. CI has no GPU: all code that
only a GPU runs lives here; ``save_state``/``restore_state`` (the warm-up undo) are tested on the CPU.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from wgan.config import TrainConfig
from wgan.models.networks import Critic, Generator
from wgan.training.distributed import ALONE, World
from wgan.training.step import WGANStep

SavedState = tuple[list[torch.Tensor], dict[int, list[torch.Tensor]], torch.Tensor]


class GraphedStep(WGANStep):
    """Replays the critic update (every iteration) and the generator update (every ``n_critic``-th) as graphs."""

    def __init__(
        self,
        cfg: TrainConfig,
        generator: Generator,
        critic: Critic,
        noise: torch.Generator,
        ema_start_iteration: int = 0,
    ) -> None:
        super().__init__(cfg, generator, critic, noise, ema_start_iteration=ema_start_iteration)
        self._graphs: tuple[torch.cuda.CUDAGraph, torch.cuda.CUDAGraph] | None = None
        self._static_real = torch.empty(0, device=self.device)
        self._make_capturable()

    def _make_capturable(self) -> None:
        """Optimizer steps that a graph can record: step counts on the device, no host sync."""
        for opt in (self.opt_g, self.opt_d):
            for group in opt.param_groups:
                group["capturable"] = True

    def __call__(self, real: torch.Tensor, iteration: int, labels: torch.Tensor | None = None) -> None:
        """Copy the batch into the captured input, replay one or both updates (never conditional: no labels)."""
        if self._graphs is None or self._static_real.shape != real.shape:
            self._capture(real)
        assert self._graphs is not None
        self._static_real.copy_(real)
        self._graphs[0].replay()
        self.critic_count += 1
        if iteration % self.cfg.n_critic == 0:
            self._graphs[1].replay()
            self.generator_count += 1
            if self.ema is not None:
                self.ema.update(iteration)  # eager, after the replay: the average is not part of the graph

    def _capture(self, real: torch.Tensor) -> None:
        """Record the critic update and the generator update as two CUDA graphs.

        PyTorch's recipe: a few eager iterations on a side stream first, so that the optimizer state, cuBLAS
        workspaces and autograd's lazy setup exist outside the graphs. Their effect on the weights, optimizer
        state, metric sums and the noise stream is then undone, so replaying continues the eager run exactly.
        Everything runs under the step's own device: ``torch.cuda.graph`` captures on a side stream of the
        *current* device, which is cuda:0 unless set, while the tensors may live on cuda:N.
        """
        n = real.shape[0]
        with torch.cuda.device(self.device):
            self._static_real = real.detach().clone()
            saved = save_state(self)
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                for _ in range(3):
                    self._critic_update(self._static_real)
                    self._generator_update(n)
            torch.cuda.current_stream(self.device).wait_stream(side)
            restore_state(self, saved)
            captured = []
            for update in (
                functools.partial(self._critic_update, self._static_real),
                functools.partial(self._generator_update, n),
            ):
                graph = torch.cuda.CUDAGraph()
                graph.register_generator_state(self.noise)  # replays draw fresh noise and advance the stream
                with torch.cuda.graph(graph):
                    update()
                captured.append(graph)
        self._graphs = (captured[0], captured[1])

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._make_capturable()
        self._graphs = None  # the optimizer state tensors were replaced: capture again at the next step


def _state_tensors(step: WGANStep) -> list[torch.Tensor]:
    """Everything a training step changes in place, optimizer state aside."""
    models_state = [*step.generator.state_dict().values(), *step.critic.state_dict().values()]
    return [*models_state, step.critic_sums, step.generator_sum]


def _optimizer_tensors(opt: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [t for state in opt.state.values() for t in state.values() if isinstance(t, torch.Tensor)]


def save_state(step: WGANStep) -> SavedState:
    """Copies of the step's state (optimizer state only where it exists yet) and the noise stream's state."""
    opt_state = {id(opt): [t.clone() for t in _optimizer_tensors(opt)] for opt in (step.opt_g, step.opt_d)}
    return [t.detach().clone() for t in _state_tensors(step)], opt_state, step.noise.get_state()


def restore_state(step: WGANStep, saved: SavedState) -> None:
    """Undo a warm-up: a state that did not exist before is reset to its initial zeros (RMSprop, Adam)."""
    tensors, opt_state, noise_state = saved
    with torch.no_grad():
        for t, old in zip(_state_tensors(step), tensors, strict=True):
            t.copy_(old)
        for opt in (step.opt_g, step.opt_d):
            before = opt_state[id(opt)]
            for i, t in enumerate(_optimizer_tensors(opt)):
                if before:
                    t.copy_(before[i])
                else:
                    t.zero_()
    step.noise.set_state(noise_state)


def make_step(
    cfg: TrainConfig,
    generator: Generator,
    critic: Critic,
    noise: torch.Generator,
    graphs: bool | None = None,
    world: World = ALONE,
    ema_start_iteration: int = 0,
) -> WGANStep:
    """The step for this run: replayed as CUDA graphs where that works (``graphs=None``: auto), else eager.

    Graphs need a CUDA device, the noise drawn on it (a CPU draw would be frozen into the graph), no double
    backward (loss ``wgan``), no labels (not conditional) and one process (the gradient all-reduce is not
    recorded); ``graphs=True`` where that does not hold is an error, ``False`` opts out.
    """
    device = next(generator.parameters()).device
    can_graph = device.type == "cuda" and noise.device.type == "cuda" and cfg.loss == "wgan" and not cfg.conditional
    can_graph = can_graph and world.world_size == 1
    if graphs and not can_graph:
        raise ValueError(
            "CUDA graphs need a CUDA device, a CUDA noise generator, loss 'wgan', no conditional and one process"
        )
    if not (can_graph if graphs is None else graphs):
        return WGANStep(cfg, generator, critic, noise, world, ema_start_iteration)
    return GraphedStep(cfg, generator, critic, noise, ema_start_iteration)
