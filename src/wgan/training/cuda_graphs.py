"""The training iteration recorded once and replayed as CUDA graphs, and ``make_step``: graphs where they work.

A recipe iteration on a GPU is a few hundred kernels of a few microseconds: launching them one by one from Python
bounds it, not arithmetic. ``torch.cuda.graph`` records every kernel of the eager iteration (``wgan.training.step``)
once; a replay launches them all at once. What is recorded (``GraphedStep``):

* with ``n_critic`` 1 (the recipes): one graph, the whole iteration (critic update, generator update, the
  averaged generator's update); else two: the critic update (every iteration) and the generator update with the
  average's (every ``n_critic``-th);
* the critic update with its gradient penalty: ``torch.autograd.grad(create_graph=True)`` then ``backward()`` are
  kernels like any other (``make_graphed_callables`` and ``torch.compile`` refuse the double backward; a plain
  capture does not); the interpolation weights, latents and fake digits are drawn inside the graph from the
  step's noise generator, registered with the graph, so each replay draws fresh numbers and advances the stream
  exactly as the eager step would;
* conditional runs: the real batch's digits are a static input beside the images; nothing in the models syncs
  with the host (the digits index ``nn.Embedding`` tables, no ``one_hot``, no boolean mask, no ``.item()``);
* the average's update, ``lerp`` of the live weights by a weight held on the device (1 before ``train.ema_start``:
  ``lerp`` by 1 gives the live weights exactly, which is the eager step's copy).

Capture rules (PyTorch's "CUDA Graphs" notes): static shapes and addresses (inputs are copied into static
tensors before each replay); no host sync inside (optimizers ``capturable``: step counts on the device);
a few warm-up iterations on the side stream the graphs are then captured on, so autograd's lazy setup, the
optimizer state and cuBLAS workspaces exist outside the graphs and autograd tags its gradient accumulation to
that stream. The warm-up's effect is undone (weights, optimizer state, metric sums, the average, the noise stream),
so a replayed run continues the eager one exactly. Metric sums accumulate on the device inside the graphs and are
read every ``log_every`` iterations (``WGANStep.take_metrics``).

Under several processes the step stays eager: the gradient all-reduce is not recorded (docs/distributed.md).
CI has no GPU: the recording runs through a ``Recorder``; ``EagerRecorder`` runs the very same bodies eagerly on
the CPU, so tests check the graphed iteration's math and bookkeeping against ``WGANStep`` there.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch

from wgan.config import TrainConfig
from wgan.models.networks import Critic, Generator
from wgan.training.distributed import ALONE, World
from wgan.training.step import WGANStep

SavedState = tuple[list[torch.Tensor], dict[int, list[torch.Tensor]], torch.Tensor]
WARM_UP = 3  # eager iterations before capture (PyTorch's examples use 3; DDP needs 11, not used here)


class Replayable(Protocol):
    def replay(self) -> None: ...


class Recorder(Protocol):
    """Where the bodies run: warm-up and capture (``CudaRecorder``), or as they are (``EagerRecorder``)."""

    def warm_up(self, body: Callable[[], None]) -> None: ...

    def record(self, body: Callable[[], None]) -> Replayable: ...


class CudaRecorder:
    """Warm-up and capture on one side stream of ``device``; every graph draws from ``noise`` (registered)."""

    def __init__(self, device: torch.device, noise: torch.Generator) -> None:
        self.device, self.noise = device, noise
        self.stream = torch.cuda.Stream(device)

    def warm_up(self, body: Callable[[], None]) -> None:
        current = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(current)
        with torch.cuda.stream(self.stream):
            body()
        current.wait_stream(self.stream)

    def record(self, body: Callable[[], None]) -> Replayable:
        graph = torch.cuda.CUDAGraph()
        graph.register_generator_state(self.noise)  # replays draw fresh numbers and advance the stream
        with torch.cuda.graph(graph, stream=self.stream):  # the warm-up's stream
            body()
        return graph


class _Eager:
    def __init__(self, body: Callable[[], None]) -> None:
        self.replay = body


class EagerRecorder:
    """Runs the bodies as they are: the graphed iteration's math and bookkeeping, checkable on a CPU."""

    def warm_up(self, body: Callable[[], None]) -> None:
        body()

    def record(self, body: Callable[[], None]) -> Replayable:
        return _Eager(body)


class GraphedStep(WGANStep):
    """The eager step's iteration replayed as one graph (``n_critic`` 1) or two (critic; generator + average)."""

    def __init__(
        self,
        cfg: TrainConfig,
        generator: Generator,
        critic: Critic,
        noise: torch.Generator,
        ema_start_iteration: int = 0,
        recorder: Recorder | None = None,
    ) -> None:
        super().__init__(cfg, generator, critic, noise, ema_start_iteration=ema_start_iteration)
        self.recorder = recorder if recorder is not None else CudaRecorder(self.device, noise)
        self._parts: list[Replayable] | None = None  # [whole iteration] or [critic update, generator update]
        self._static_real = torch.empty(0, device=self.device)
        self._static_labels: torch.Tensor | None = None
        self._ema_weight = torch.ones((), device=self.device)  # the average's lerp weight, read by the graph
        self._ema_weight_set: float | None = None
        if self.device.type == "cuda":
            make_capturable(self.opt_g, self.opt_d)

    def __call__(self, real: torch.Tensor, iteration: int, labels: torch.Tensor | None = None) -> None:
        """Copy the batch (and digits) into the recorded inputs, then replay this iteration's updates."""
        if self._parts is None or self._static_real.shape != real.shape:
            self._capture(real, labels)
        assert self._parts is not None
        self._static_real.copy_(real)
        if self._static_labels is not None and labels is not None:
            self._static_labels.copy_(labels)
        generator_turn = iteration % self.cfg.n_critic == 0
        if generator_turn and self.ema is not None:
            self._set_ema_weight(self.ema.weight(iteration))
        self._parts[0].replay()
        self.critic_count += 1
        if generator_turn:
            if len(self._parts) > 1:
                self._parts[1].replay()
            self.generator_count += 1
            if self.ema is not None:
                self.ema.moved()

    def _set_ema_weight(self, weight: float) -> None:
        """One fill on the device when the weight changes (at ``train.ema_start``), none otherwise."""
        if weight != self._ema_weight_set:
            self._ema_weight.fill_(weight)
            self._ema_weight_set = weight

    # ------------------------------------------------------------------ what the graphs record
    def _critic_body(self) -> None:
        self._critic_update(self._static_real, self._static_labels)

    def _generator_body(self) -> None:
        self._generator_update(self._static_real.shape[0])
        if self.ema is not None:
            self.ema.lerp_(self._ema_weight)

    def _whole_body(self) -> None:
        self._critic_body()
        self._generator_body()

    def bodies(self) -> Sequence[Callable[[], None]]:
        """The recorded callables: one iteration with ``n_critic`` 1, else the critic's and the generator's."""
        if self.cfg.n_critic == 1:
            return [self._whole_body]
        return [self._critic_body, self._generator_body]

    def _capture(self, real: torch.Tensor, labels: torch.Tensor | None) -> None:
        """Warm up on the recorder's stream, undo the warm-up, then record each body.

        On CUDA everything runs under the step's own device: ``torch.cuda.graph`` captures on a stream of the
        *current* device, which is cuda:0 unless set, while the tensors may live on cuda:N.
        """
        with torch.cuda.device(self.device) if self.device.type == "cuda" else contextlib.nullcontext():
            self._static_real = real.detach().clone()
            self._static_labels = None if labels is None else labels.detach().clone()
            saved = save_state(self)
            for _ in range(WARM_UP):
                for body in self.bodies():
                    self.recorder.warm_up(body)
            restore_state(self, saved)
            self._parts = [self.recorder.record(body) for body in self.bodies()]

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if self.device.type == "cuda":
            make_capturable(self.opt_g, self.opt_d)  # the loaded groups say what the saving run used
        self._parts = None  # the optimizer state tensors were replaced: capture again at the next step


def make_capturable(*optimizers: torch.optim.Optimizer) -> None:
    """Optimizer steps that a graph can record: ``capturable`` groups, their step counts on the params' devices.

    A checkpoint of an eager run (several processes, or ``graphs=False``) holds its step counts on the CPU, and
    ``load_state_dict`` keeps them there for a group that was not capturable when saved; the first capturable
    Adam or RMSprop step would then fail its check that every step count lives on the device. Float32, as torch
    creates them for capturable groups.
    """
    for opt in optimizers:
        for group in opt.param_groups:
            group["capturable"] = True
            for p in group["params"]:
                state = opt.state.get(p, {})
                step = state.get("step")
                if isinstance(step, torch.Tensor) and (step.device != p.device or step.dtype != torch.float32):
                    state["step"] = step.to(device=p.device, dtype=torch.float32)


def _state_tensors(step: WGANStep) -> list[torch.Tensor]:
    """Everything a training step changes in place, optimizer state aside."""
    models = [step.generator, step.critic] + ([step.ema.model] if step.ema is not None else [])
    return [*(t for m in models for t in m.state_dict().values()), step.critic_sums, step.generator_sum]


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

    Graphs need a CUDA device, the noise drawn on it (a CPU draw would be frozen into the graph) and one process
    (the gradient all-reduce is not recorded); ``graphs=True`` where that does not hold is an error, ``False``
    opts out. The CPU always gets the eager step.
    """
    device = next(generator.parameters()).device
    can_graph = device.type == "cuda" and noise.device.type == "cuda" and world.world_size == 1
    if graphs and not can_graph:
        raise ValueError("CUDA graphs need a CUDA device, a CUDA noise generator and one process")
    if not (can_graph if graphs is None else graphs):
        return WGANStep(cfg, generator, critic, noise, world, ema_start_iteration)
    return GraphedStep(cfg, generator, critic, noise, ema_start_iteration)
