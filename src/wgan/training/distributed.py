"""Training as N processes (``torchrun``): the process group, each rank's share of a batch, the all-reduces.

An N-process run computes the 1-process math up to the order of float sums:

* ``train.batch_size`` is the global batch. Rank ``r`` takes rows ``r, r + N, r + 2N, ...`` of every batch
  (``batches.batch_indices``) and, by ``World.share``, the same rows of the batch's noise: every rank draws
  the global batch's noise (latents and the gradient penalty's mixing weights) from the same seeded stream.
* After each backward pass the gradients are averaged over ranks with one all-reduce of a flat buffer
  (``World.average_gradients``). Not DDP: DDP's hooks fire per backward pass, the gradient penalty's double
  backward runs two of them per critic step, and the generator step backpropagates through a critic that must
  not reduce (it is frozen); one explicit all-reduce per optimizer step has none of these cases.
* The generator's BatchNorm normalizes with the global batch's moments (``GlobalBatchNorm``): torch's
  ``nn.SyncBatchNorm`` only runs on GPUs, this one on every backend, differentiably.
* Every other decision (stop on a signal, checkpoint by time, stop on a NaN, resume) is taken from values that
  are equal on all ranks, so no rank ever waits in a collective that the others have left. A rank that dies ends
  the others' collectives with an error at once; one that stops answering (SIGSTOP, a hang) within
  ``WGAN_DIST_TIMEOUT`` seconds (default 60). Rank 0 then names the silent ranks with a monitored barrier on a
  side Gloo group (the main group's connections are closed by the timeout) and exits with ``EXIT_LOST_PEER``,
  which torchrun's agent restarts under ``WGAN_MAX_RESTARTS`` (``wgan.launch``).

The process count is not a param: the stage reads torchrun's environment (``RANK``, ``WORLD_SIZE``, ...).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import os
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as funcol
from torch import nn

from wgan.errors import UserError, one_line
from wgan.launch import restart_count, restarts_left
from wgan.stage import EXIT_LOST_PEER, EXIT_USER_ERROR, StageInterrupted
from wgan.training.batches import rank_share

ENV_TIMEOUT = "WGAN_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 60.0
STOP_POLL = 10  # iterations between two agreements on a stop signal (each one all-reduce and a host sync)
SILENT_WAIT_S = 10.0  # how long (at most WGAN_DIST_TIMEOUT) rank 0 waits at the monitored barrier for live ranks


class LostPeer(UserError):
    """A collective failed: a rank died or stopped answering. Exit code ``EXIT_LOST_PEER``: a restart may help.
    ``restarted``: torchrun's agent will restart the group, so nothing is for the user to do or restore."""

    exit_code = EXIT_LOST_PEER

    def __init__(self, message: str, restarted: bool = False) -> None:
        super().__init__(message)
        self.restarted = restarted


@dataclass(frozen=True)
class World:
    """This process's place among the training processes; with ``world_size == 1`` every method is a no-op."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    watch: Any = dataclasses.field(default=None, compare=False)  # a side Gloo group to name silent ranks

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def share(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a global batch (strided, as ``batch_indices`` shards the real images)."""
        return rank_share(batch, self.rank, self.world_size)

    def average_gradients(self, params: Iterable[torch.Tensor]) -> None:
        """Replace every gradient by its mean over ranks: one all-reduce of all of them, flattened."""
        if self.world_size == 1:
            return
        grads = [p.grad for p in params if p.grad is not None]
        flat = torch._utils._flatten_dense_tensors(grads)
        dist.all_reduce(flat)
        flat /= self.world_size
        torch._foreach_copy_(grads, torch._utils._unflatten_dense_tensors(flat, grads))

    def mean(self, tensor: torch.Tensor) -> torch.Tensor:
        """The mean over ranks of ``tensor`` (a new tensor; ``tensor`` itself with one process)."""
        if self.world_size == 1:
            return tensor
        total = tensor.clone()
        dist.all_reduce(total)
        return total / self.world_size

    def stop_signal(
        self, signum: int | None, iteration: int | None = None, due: bool = False
    ) -> tuple[int | None, bool]:
        """The signal that stops every rank at this iteration (or None), and whether rank 0 finds a checkpoint
        ``due``: ranks agree every ``STOP_POLL`` iterations, ``iteration=None``: now (an all-rank point).

        torchrun forwards a signal to each worker separately, so ranks may see it one iteration apart; the
        largest signal number seen on any rank wins. Only rank 0's clock decides ``due``: clocks differ.
        """
        if self.world_size == 1:
            return signum, due
        if iteration is not None and iteration % STOP_POLL:
            return None, False
        flag = torch.tensor([signum or 0, int(due and self.is_main)], device=_collective_device())
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag[0].item()) or None, bool(flag[1].item())

    def lost_peer(self, exc: BaseException, where: str = "") -> LostPeer | None:
        """``exc`` as a one-line ``LostPeer`` when it is a failed collective (naming the silent ranks), else None."""
        if self.world_size == 1 or not _lost_peer(exc):
            return None
        silent = self._silent_ranks()
        said = f"rank {silent} did not answer within {ENV_TIMEOUT} = {timeout_s():g} s" if silent else one_line(exc)
        left = restarts_left()
        then = (
            "torchrun's agent restarts every process from the last checkpoint"
            if left
            else "the run is stopped: run the stage again (or set WGAN_MAX_RESTARTS) to resume from its last checkpoint"
        )
        lost = f"training process rank {self.rank} of {self.world_size} lost the others{where} ({said[:200]}); {then}"
        return LostPeer(lost, restarted=bool(left))

    def _silent_ranks(self) -> str:
        """The ranks that do not reach a monitored barrier on the side group ('' when unknown: not rank 0, or a
        rank that died, whose closed connection fails the barrier at once)."""
        if self.watch is None:
            return ""
        try:
            wait = timedelta(seconds=min(SILENT_WAIT_S, timeout_s()))
            dist.monitored_barrier(self.watch, timeout=wait, wait_all_ranks=True)
        except RuntimeError as exc:
            found = re.search(r"Ranks? ([\d, ]+) failed to pass monitoredBarrier", str(exc))
            return found.group(1).strip() if found else ""
        return ""

    def from_main(self, tree: Any) -> Any:
        """Rank 0's ``tree`` (tensors, numbers, strings, lists, dicts, None) on every rank.

        Sent as ``torch.save`` bytes and read with ``weights_only=True``: nothing is unpickled on the receivers.
        """
        if self.world_size == 1:
            return tree
        device = _collective_device()
        payload = torch.empty(0, dtype=torch.uint8)
        if self.is_main:
            buffer = io.BytesIO()
            torch.save(tree, buffer)
            payload = torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)
        size = torch.tensor([payload.numel()], device=device)
        dist.broadcast(size, src=0)
        data = payload.to(device) if self.is_main else torch.empty(int(size.item()), dtype=torch.uint8, device=device)
        dist.broadcast(data, src=0)
        return torch.load(io.BytesIO(data.cpu().numpy().tobytes()), map_location="cpu", weights_only=True)

    def check_same(self, what: str, value: Any) -> None:
        """A ``UserError`` on every rank when ``value`` (e.g. a run fingerprint) differs from rank 0's."""
        if self.world_size == 1:
            return
        digest = hashlib.sha256(repr(value).encode()).hexdigest()
        same = torch.tensor([int(digest == self.from_main(digest))], device=_collective_device())
        dist.all_reduce(same, op=dist.ReduceOp.MIN)
        if not same.item():
            raise UserError(
                f"the training processes disagree on {what}; run the same commit, params and data on every machine"
            )

    def device(self, device: torch.device) -> torch.device:
        """Under several processes a plain ``cuda`` means this process's own GPU: ``cuda:<LOCAL_RANK>``."""
        if self.world_size > 1 and device.type == "cuda" and device.index is None:
            return torch.device("cuda", self.local_rank)
        return device


ALONE = World()  # a one-process run


def _collective_device() -> torch.device:
    """Where small control tensors live: the CPU for Gloo, the current GPU for NCCL."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


class GlobalBatchNorm(nn.BatchNorm1d):
    """``nn.BatchNorm1d`` whose training statistics are those of the global batch, all ranks together.

    Each rank sums its share's moments, shifted by the running mean to keep ``E[x^2] - E[x]^2`` away from
    cancellation; one differentiable all-reduce adds them up (its backward all-reduces the gradients, so each
    rank's inputs get the gradient of every rank's loss through the shared statistics). The running statistics
    are updated as ``nn.BatchNorm1d`` does, with the global batch, identically on every rank. Same parameters,
    buffers and state_dict keys as ``nn.BatchNorm1d``, so saved models load as plain ones.
    """

    world_size = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.world_size == 1 or self.running_mean is None:
            return super().forward(x)
        n = x.shape[0] * self.world_size
        shift = self.running_mean.detach()
        centered = x.float() - shift
        sums = torch.cat([centered.sum(0), centered.square().sum(0)])
        moments = funcol.wait_tensor(funcol.all_reduce(sums, "sum", dist.group.WORLD))  # differentiable
        offset, square = (moments / n).chunk(2)
        mean, var = shift + offset, square - offset.square()
        with torch.no_grad():
            self.num_batches_tracked += 1
            momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
            self.running_mean.lerp_(mean.detach(), momentum)
            self.running_var.lerp_(var.detach() * (n / (n - 1)), momentum)
        out = (x.float() - mean) * torch.rsqrt(var + self.eps)
        if self.affine:
            out = out * self.weight + self.bias
        return out.to(x.dtype)


def use_global_batchnorm(model: nn.Module, world_size: int) -> None:
    """Turn every ``nn.BatchNorm1d`` in ``model`` into a ``GlobalBatchNorm`` (same parameters and buffers)."""
    for module in model.modules():
        if type(module) is nn.BatchNorm1d:
            module.__class__ = GlobalBatchNorm
            module.world_size = world_size


def world_from_env() -> World:
    """This process's place as torchrun's environment says (one process when it is not set)."""
    return World(
        int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("LOCAL_RANK", "0"))
    )


def timeout_s() -> float:
    raw = os.environ.get(ENV_TIMEOUT, "").strip()
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        value = -1.0
    if not value > 0:
        raise UserError(f"{ENV_TIMEOUT}={raw!r} is not a number of seconds; set it to e.g. 60, or unset it")
    return value


def _lost_peer(exc: BaseException) -> bool:
    """Whether ``exc`` is a failed collective (Gloo raises plain ``RuntimeError``s from its transport)."""
    text = str(exc)
    # dist.DistError is a RuntimeError too; other errors (a UserError naming "Timed out") are never a lost peer
    return isinstance(exc, RuntimeError) and (
        isinstance(exc, dist.DistError) or "gloo" in text or "NCCL" in text or "Timed out" in text
    )


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[World]:
    """Join the training processes (Gloo on CPUs, NCCL on GPUs) for the block, then leave; alone: nothing to join.

    A collective that fails (a rank died, or stopped answering for ``WGAN_DIST_TIMEOUT`` seconds) becomes a
    one-line ``UserError`` naming this rank. Ranks decide to stop together, on equal values, so they would all
    print the same line: only each machine's first process (local rank 0) prints; the others exit quietly with
    the same code.
    """
    world = world_from_env()
    if world.world_size == 1:
        yield world
        return
    device = world.device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    timeout = timedelta(seconds=timeout_s())
    if backend == "nccl":
        # a collective that fails or outlives the timeout: the watchdog aborts the communicator and ends this
        # process (the agent sees it die and restarts the group); the heartbeat monitor ends it if the watchdog
        # itself hangs (after the collective timeout plus a minute, not torch's default 8 minutes). Explicit values
        # win: they come from the environment
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
        os.environ.setdefault("TORCH_NCCL_ENABLE_MONITORING", "1")
        os.environ.setdefault("TORCH_NCCL_HEARTBEAT_TIMEOUT_SEC", str(int(timeout.total_seconds()) + 60))
    store, _, _ = next(dist.rendezvous("env://", timeout=timeout))
    # torchrun's agent keeps one store across restarts: a restarted group must not read the dead group's addresses
    store = dist.PrefixStore(f"wgan/restart{restart_count()}", store)
    dist.init_process_group(backend, store=store, rank=world.rank, world_size=world.world_size, timeout=timeout)
    world = dataclasses.replace(world, watch=dist.new_group(backend="gloo", timeout=timeout))
    try:
        try:
            yield world
        except (dist.DistError, RuntimeError) as exc:
            lost = world.lost_peer(exc)
            if lost is None:
                raise
            raise lost from exc
    except UserError as exc:
        if world.local_rank == 0:
            raise
        sys.exit(getattr(exc, "exit_code", EXIT_USER_ERROR))
    except StageInterrupted as exc:
        if world.local_rank == 0:
            raise
        sys.exit(128 + exc.signum)
    finally:
        dist.destroy_process_group()
