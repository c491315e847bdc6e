"""The speed paths of WGANStep and the benchmark scripts: same math as the plain path, and the checks can fail.

The CUDA-graph path itself needs a GPU (``benchmarks/gpu_check.sh`` checks it there); here we test what it
relies on (undoing the warm-up restores the exact state), the bf16 path, and the check scripts' logic.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from conftest import REPO
from helpers import make_project

from wgan.config import TrainConfig, parse_section
from wgan.models.conditional import build_conditional_models
from wgan.models.networks import build_models
from wgan.training.cuda_graphs import EagerRecorder, GraphedStep, make_capturable, make_step, restore_state, save_state
from wgan.training.step import M_CRITIC, M_GENERATOR, WGANStep

BENCHMARKS = REPO / "benchmarks"
SMALL = {"g_hidden": [32, 64], "d_hidden": [64, 32], "latent_dim": 16, "batch_size": 32, "n_fixed": 8}


def _cfg(**overrides: Any) -> TrainConfig:
    return parse_section("train", {**SMALL, **overrides})


def _step(cfg: TrainConfig) -> WGANStep:
    generator, critic = build_models(cfg, torch.device("cpu"))
    return WGANStep(cfg, generator, critic, torch.Generator().manual_seed(0))


def _batches(n: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.rand(32, 1, 28, 28, generator=g) * 2 - 1 for _ in range(n)]


def _train(step: WGANStep, batches: list[torch.Tensor], first: int = 0) -> list[tuple[float, float]]:
    """Per-iteration (critic loss, generator loss or NaN) over ``batches``."""
    out = []
    for i, real in enumerate(batches, start=first):
        step(real, i)
        metrics = step.take_metrics()
        out.append((metrics[M_CRITIC], metrics.get(M_GENERATOR, math.nan)))
    return out


def _weights(step: WGANStep) -> list[torch.Tensor]:
    return [t.clone() for t in (*step.generator.state_dict().values(), *step.critic.state_dict().values())]


def _assert_equal(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    assert len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("optimizer", ["rmsprop", "adam"])  # Adam also keeps a step count per parameter
@pytest.mark.parametrize("resumed", [False, True], ids=["fresh", "with-optimizer-state"])
def test_undoing_the_warm_up_restores_the_exact_state(resumed: bool, optimizer: str) -> None:
    """What the CUDA-graph capture does before recording: warm up, then undo it (weights, optimizer, noise)."""
    cfg = _cfg(lr=1e-3, optimizer=optimizer)
    batches = _batches(8)
    reference, warmed = _step(cfg), _step(cfg)
    if resumed:  # optimizer state exists before the warm-up: it must be copied back, not zeroed
        _train(reference, batches[:2])
        _train(warmed, batches[:2])
    saved = save_state(warmed)
    _train(warmed, batches[2:5], first=2)  # the warm-up: weights, optimizer state, sums and noise all move
    assert not all(torch.equal(a, b) for a, b in zip(_weights(warmed), _weights(reference), strict=True))
    restore_state(warmed, saved)
    expected = _train(reference, batches[2:], first=2)
    assert _train(warmed, batches[2:], first=2) == expected
    _assert_equal(_weights(warmed), _weights(reference))


def test_cuda_graphs_are_refused_where_they_cannot_work() -> None:
    cfg = _cfg()
    generator, critic = build_models(cfg, torch.device("cpu"))
    assert type(make_step(cfg, generator, critic, torch.Generator())) is WGANStep  # auto: eager on the CPU
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA device"):
        make_step(cfg, generator, critic, torch.Generator(), graphs=True)


class CountingRecorder(EagerRecorder):
    """The eager recorder, counting what the step warms up and records."""

    def __init__(self) -> None:
        self.warm_ups, self.records = 0, 0

    def warm_up(self, body: Any) -> None:
        self.warm_ups += 1
        super().warm_up(body)

    def record(self, body: Any) -> Any:
        self.records += 1
        return super().record(body)


GRAPHED_CONFIGS = {  # the tutorial's clipping loop, a recipe-like WGAN-GP one, the conditional one
    "clipping-n_critic-3": {"n_critic": 3},
    "gp-adam-n_critic-1-ema": {"loss": "wgan-gp", "optimizer": "adam", "n_critic": 1, "ema_decay": 0.9},
    "conditional-gp-n_critic-2-ema": {
        "loss": "wgan-gp", "optimizer": "adam", "n_critic": 2, "ema_decay": 0.9, "conditional": True, "n_fixed": 10,
    },
}  # fmt: skip


@pytest.mark.parametrize("overrides", GRAPHED_CONFIGS.values(), ids=GRAPHED_CONFIGS.keys())
def test_graphed_bodies_compute_the_eager_iteration(overrides: dict[str, Any]) -> None:
    """What GraphedStep records (run here by the eager recorder, on the CPU) is the eager step, bit for bit:
    losses, weights, the averaged generator (moved in the graph by a weight on the device; ema_start at iteration
    3) and the digits of a conditional run (a static input), warm-ups and their undo included (the first capture,
    and a second after a resume at iteration 5)."""
    cfg = _cfg(lr=1e-3, **overrides)
    build = build_conditional_models if cfg.conditional else build_models
    g = torch.Generator().manual_seed(1)
    batches = [torch.rand(32, 1, 28, 28, generator=g) * 2 - 1 for _ in range(7)]
    labels = [torch.randint(10, (32,), generator=g) if cfg.conditional else None for _ in batches]

    def run(graphed: bool) -> tuple[list[tuple[float, float]], list[torch.Tensor]]:
        generator, critic = build(cfg, torch.device("cpu"))
        noise = torch.Generator().manual_seed(0)
        step = (
            GraphedStep(cfg, generator, critic, noise, ema_start_iteration=3, recorder=CountingRecorder())
            if graphed
            else WGANStep(cfg, generator, critic, noise, ema_start_iteration=3)
        )
        losses = []
        for i, (real, digits) in enumerate(zip(batches, labels, strict=True)):
            step(real, i, digits)
            metrics = step.take_metrics()
            losses.append((metrics[M_CRITIC], metrics.get(M_GENERATOR, math.nan)))
            if i == 4:  # a resume past ema_start: captured again, its warm-up moves the average and is undone
                step.load_state_dict(step.state_dict())
        average = list(step.ema.model.state_dict().values()) if step.ema is not None else []
        return losses, [*_weights(step), *average]

    (eager_losses, eager_weights), (graphed_losses, graphed_weights) = run(False), run(True)
    assert graphed_losses == eager_losses
    _assert_equal(graphed_weights, eager_weights)


HOST_SYNCS = {"_local_scalar_dense", "nonzero", "masked_select", "unique", "_unique2", "equal", "is_nonzero"}


class SyncFindingRecorder(EagerRecorder):
    """Runs each recorded body under a dispatch mode that notes every op which, on CUDA, waits for the device:
    ``.item()`` and any tensor read as a number (``_local_scalar_dense``), boolean masks and ``nonzero``, ..."""

    def __init__(self) -> None:
        self.syncs: list[str] = []

    def record(self, body: Any) -> Any:
        from torch.utils._python_dispatch import TorchDispatchMode

        syncs = self.syncs

        class Watch(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
                if func.__name__.split(".")[0] in HOST_SYNCS:
                    syncs.append(func.__name__)
                return func(*args, **(kwargs or {}))

        def watched() -> None:
            with Watch():
                body()

        return super().record(watched)


@pytest.mark.parametrize("overrides", GRAPHED_CONFIGS.values(), ids=GRAPHED_CONFIGS.keys())
def test_recorded_bodies_never_wait_for_the_device(overrides: dict[str, Any]) -> None:
    """A capture refuses a host sync, and a number read from a tensor during capture would be frozen into the
    graph: the bodies GraphedStep records (here on the CPU, every op watched) read no tensor on the host."""
    cfg = _cfg(lr=1e-3, **{"ema_decay": 0.9, **overrides})
    build = build_conditional_models if cfg.conditional else build_models
    recorder = SyncFindingRecorder()
    step = GraphedStep(cfg, *build(cfg, torch.device("cpu")), torch.Generator().manual_seed(0), recorder=recorder)
    g = torch.Generator().manual_seed(1)
    for i in range(4):
        digits = torch.randint(10, (32,), generator=g)
        step(torch.rand(32, 1, 28, 28, generator=g), i, digits if cfg.conditional else None)
    assert recorder.syncs == []


def test_one_graph_per_iteration_with_n_critic_1_else_two() -> None:
    """The recipes (n_critic 1) replay one graph an iteration; the tutorial's critic and generator updates two."""
    for n_critic, parts in ((1, 1), (5, 2)):
        cfg = _cfg(n_critic=n_critic)
        recorder = CountingRecorder()
        step = GraphedStep(cfg, *build_models(cfg, torch.device("cpu")), torch.Generator(), recorder=recorder)
        _train(step, _batches(3))
        assert (recorder.records, recorder.warm_ups) == (parts, 3 * parts)  # captured once, three warm-ups each
        step.load_state_dict(step.state_dict())
        _train(step, _batches(1), first=3)
        assert recorder.records == 2 * parts  # a loaded state is captured again


@pytest.mark.parametrize("optimizer", [torch.optim.Adam, torch.optim.RMSprop])
def test_make_capturable_moves_saved_step_counts_to_the_params_device(optimizer: Any) -> None:
    """A checkpoint of an eager run holds its step counts on the CPU; loaded for a graphed run they must move to
    the params' device (here 'meta', standing in for a GPU), or the first capturable step fails its device check."""
    cpu_params = [torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(3))]
    eager = optimizer(cpu_params, lr=1e-3, foreach=False)  # an eager, non-capturable run: counts on the CPU
    for _ in range(2):
        sum(p.square().sum() for p in cpu_params).backward()
        eager.step()
    saved = eager.state_dict()
    params = [torch.nn.Parameter(torch.empty_like(p, device="meta")) for p in cpu_params]
    resumed = optimizer(params, lr=1e-3)
    resumed.load_state_dict(saved)
    assert all(resumed.state[p]["step"].device.type == "cpu" for p in params)  # what torch leaves behind
    make_capturable(resumed)
    assert all(group["capturable"] for group in resumed.param_groups)
    for p in params:
        step = resumed.state[p]["step"]
        assert step.device == p.device and step.dtype == torch.float32 and step.shape == ()
    assert all(saved["state"][i]["step"].item() == 2 for i in range(2))  # the saved counts themselves are kept


def test_bf16_steps_are_finite_and_close_to_fp32() -> None:
    batches = _batches(6)
    fp32 = _train(_step(_cfg()), batches)
    bf16 = _train(_step(_cfg(precision="bf16")), batches)
    scale = max(abs(v) for row in fp32 for v in row if not math.isnan(v))
    for (c32, g32), (c16, g16) in zip(fp32, bf16, strict=True):
        assert math.isfinite(c16) and abs(c16 - c32) < 0.05 * scale
        assert math.isnan(g16) == math.isnan(g32)
        if not math.isnan(g32):
            assert abs(g16 - g32) < 0.05 * scale


# --- benchmarks/gpu_check.py and bench_train.py ------------------------------------------------------------------


def _import_benchmarks(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import gpu_check

    return gpu_check


def test_gpu_check_compare_flags_a_difference(monkeypatch: pytest.MonkeyPatch) -> None:
    gpu_check = _import_benchmarks(monkeypatch)
    a = torch.tensor([[1.0, 2.0], [-1.0, math.nan]], dtype=torch.float64)
    assert gpu_check.compare("same", a, a.clone(), tol=0.0)[0]
    assert gpu_check.compare("close", a, a + 0.01, tol=0.01)[0]  # 0.01 <= 0.01 x max |a| = 0.02
    far = gpu_check.compare("far", a, a + 0.1, tol=0.01)
    assert far == (False, "MISMATCH far: max |difference| 0.1 (limit 0.01 x 2)")
    shifted = a.clone()
    shifted[1, 1], shifted[0, 1] = 0.0, math.nan
    assert not gpu_check.compare("schedule", a, shifted, tol=1.0)[0]  # generator steps on other iterations


def test_bench_report_gives_speed_ups(monkeypatch: pytest.MonkeyPatch) -> None:
    _import_benchmarks(monkeypatch)
    import bench_train

    rows = bench_train.report({"reference": [20.0, 30.0, 22.0], "project fp32": [5.0, 6.0, 11.0]})
    assert rows[2] == "| reference | 20.00 | 22.00 | 1.00x | 1.00x |"
    assert rows[3] == "| project fp32 | 5.00 | 6.00 | 4.00x | 3.67x |"


SMALL_EVAL = {"n_samples": 200, "batch_size": 100, "kid_subsets": 2, "kid_subset_size": 50, "pr_k": 3, "seed": 0}


@pytest.mark.slow
@pytest.mark.long  # every configuration and stage of the GPU script, on the CPU: 20-40 s here
def test_gpu_check_runs_every_check_on_the_cpu(tmp_path: Path) -> None:
    """The whole GPU script, on the CPU with tiny counts: each configuration's agreement (the graphed bodies run
    eagerly there), the timing rows, the resume check and the real stages; exit 0 and one summary."""
    root = make_project(tmp_path, n_train=1024, epochs=2, n_fixed=10)  # 10: a conditional run draws every digit
    params = yaml.safe_load((root / "params.yaml").read_text())
    params |= {
        "classifier": {"epochs": 1, "batch_size": 128, "lr": 2e-3, "seed": 0},
        "judge": {**yaml.safe_load((REPO / "params.yaml").read_text())["judge"], "epochs": 1},  # make_project: none
        "quality": SMALL_EVAL,
        "evaluate": {"generator": "final", **SMALL_EVAL},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    env = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{REPO / 'src'}:{BENCHMARKS}"}
    cmd = [sys.executable, str(BENCHMARKS / "gpu_check.py"), "--device", "cpu", "--steps", "6", "--rounds", "1"]
    cmd += ["--iters", "2", "--resume-epochs", "2", "--stage-max-iterations", "12"]
    done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "data: data/prepared/train.pt" in out and "== summary: PASS" in out
    for config in ("tutorial", "recipe", "fast recipe", "conditional recipe"):
        assert f"{config}: match cpu vs cpu eager, 6 steps: max |difference| 0 " in out, config
        assert f"{config}: match cpu eager vs cpu graphs, 6 steps: max |difference| 0 " in out, config
        assert f"| {config} | graphs bf16 |" in out, config
    assert "| tutorial | reference |" in out
    assert "match recipe on cpu, stopped and resumed (graphs) at iteration 12 of 16: max |weight difference| 0 " in out
    assert "stopped eager, resumed with graphs at iteration 12 of 16" in out
    assert "the recipe's stages on cpu (fp32), 100 epochs:" in out
    for stage in ("train", "classifier", "judge", "quality", "evaluate"):
        assert f"| {stage} | " in out, stage
    assert "train: 12 iterations, training loop " in out


BEFORE_GRAPHS = "c8187d9"  # main before issue 34's graphed iteration: the CPU's numbers must not move
_CONFIG_RUNS = """
import os, sys, torch
from wgan.config import parse_section
from wgan.training.loop import train
out = {}
for name, overrides in CONFIGS.items():
    os.chdir(os.path.join(sys.argv[2], name))
    cfg = parse_section("train", {**SMALL, **overrides, "max_iterations": 300, "n_fixed": 10, "log_every": 50})
    result = train(cfg, device=torch.device("cpu"), log=lambda _: None)  # the sampler: the average where one is kept
    models = {"G": result.generator.state_dict(), "D": result.critic.state_dict()}
    out[name] = {f"{m}.{k}": v for m, state in models.items() for k, v in state.items()}
torch.save(out, sys.argv[1])
"""


@pytest.mark.long  # minutes: 6 runs of 300 iterations
def test_cpu_weights_of_every_configuration_are_bit_identical_to_before_graphs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """300 iterations of the tutorial's configuration, the recipe and the conditional recipe (their algorithm
    settings at small widths), trained by this code and by BEFORE_GRAPHS's (read from git): the same tensors."""
    import tarfile
    from io import BytesIO

    configs = {k: v for k, v in _import_benchmarks(monkeypatch).CONFIGURATIONS.items() if k != "fast recipe"}
    archive = subprocess.run(
        ["git", "archive", "--format=tar", BEFORE_GRAPHS, "src", "stages", "dvc.yaml"], cwd=REPO, capture_output=True
    )
    if archive.returncode != 0:
        pytest.skip(f"git history without {BEFORE_GRAPHS} (a shallow clone?)")
    with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
        tar.extractall(tmp_path / "before", filter="data")
    script = f"SMALL = {SMALL!r}\nCONFIGS = {configs!r}\n{_CONFIG_RUNS}"
    weights = {}
    for tree, src in (("before", tmp_path / "before/src"), ("now", REPO / "src")):
        for name in configs:
            make_project(tmp_path / tree / name, n_train=1024, n_fixed=10)
        env = {"PYTHONPATH": str(src), "WGAN_DEVICE": "cpu", "OMP_NUM_THREADS": "2", "PATH": ""}
        out = tmp_path / f"{tree}.pt"
        subprocess.run([sys.executable, "-c", script, str(out), str(tmp_path / tree)], env=env, check=True)
        weights[tree] = torch.load(out, weights_only=True)
    for name in configs:
        assert weights["before"][name].keys() == weights["now"][name].keys(), name
        for key, value in weights["before"][name].items():
            assert torch.equal(value, weights["now"][name][key]), (name, key)
    assert not torch.equal(weights["now"]["tutorial"]["G.model.0.weight"], weights["now"]["recipe"]["G.model.0.weight"])
