"""The whole pipeline with the real DVC CLI on real MNIST, quick settings: what each change reruns.

One temporary git repo for the module; the tests run in file order and each starts from the
state the previous one left (they assert on what DVC reports it ran, never on timing).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import dvc, edit_params, make_repo, ran_stages, run_cmd, wgan_command
from helpers import SMALL, kept_generators
from PIL import Image

from wgan.fileio import torch_load_safe, torch_save_atomic

pytestmark = pytest.mark.slow

ALL_STAGES = {
    "params", "download", "prepare", "train", "render", "gif", "latent_walk", "classifier", "judge", "quality",
    "pick_generator", "evaluate", "export",
}  # fmt: skip
SMALL_MODEL = {key: SMALL[key] for key in ("g_hidden", "d_hidden", "latent_dim")}
# The first images of each real split, prepared by the real stages: no property here needs 70,000 of them
N_TRAIN, N_TEST = 3840, 1000
QUICK = {  # small models, 60 iterations an epoch: 120 iterations, two kept generators for the quality stage
    "train": {**SMALL_MODEL, "batch_size": 64, "epochs": 2, "keep_every": 1, "sample_interval": 40, "log_every": 20},
    "gif": {"stride": 1},
    "latent_walk": {"n": 4, "steps": 8},
    "classifier": {"epochs": 1},
    "judge": {"epochs": 1},
    "quality": {"n_samples": 1000, "kid_subsets": 2, "kid_subset_size": 500},
    "evaluate": {"n_samples": 1000, "kid_subsets": 5, "kid_subset_size": 500},
}


def commit(repo: Path, message: str) -> None:
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", message], cwd=repo, check=True
    )


def keep_first(repo: Path, split: str, n: int) -> None:
    """Cut a prepared split to its first ``n`` images, in its own format."""
    path = repo / "data" / "prepared" / f"{split}.pt"
    payload = torch_load_safe(path, "prepared data", "")
    payload |= {"images": payload["images"][:n].clone(), "labels": payload["labels"][:n].clone()}
    torch_save_atomic(payload, path)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, set[str]]:
    """The repo after `dvc repro prepare` (real MNIST, verified), its splits cut to their first images and
    committed as prepare's outputs (`dvc commit`), and the stages that repro ran."""
    root = make_repo(tmp_path_factory.mktemp("pipeline"), QUICK)
    ran = ran_stages(dvc(root, "repro", "prepare").stdout)
    keep_first(root, "train", N_TRAIN)
    keep_first(root, "test", N_TEST)
    dvc(root, "commit", "--force", "prepare")
    return root, ran


@pytest.fixture(scope="module")
def repo(prepared: tuple[Path, set[str]]) -> Path:
    return prepared[0]


def test_repro_runs_every_stage_and_writes_every_output(repo, prepared):
    out = dvc(repo, "repro").stdout
    assert prepared[1] | ran_stages(out) == ALL_STAGES  # the fixture's `dvc repro prepare`, then the rest
    assert not prepared[1] & ran_stages(out)
    for path in (
        "models/generator.pt",
        "models/critic.pt",
        "models/samples.pt",
        "models/evaluated_generator.pt",
        "models/classifier.pt",
        "results/samples/final.png",
        "results/wgan.gif",
        "results/latent_walk.gif",
        "results/eval/metrics.json",
        "results/eval/class_hist.json",
        "models/export/model.safetensors",
        "results/classifier/metrics.json",
        "models/judge.pt",
        "models/judge_features.pt",
        "results/judge/metrics.json",
        "dvclive/metrics.json",
        "dvclive/plots/metrics/train/critic_loss.tsv",
    ):
        assert (repo / path).is_file(), path
    # snapshots at 0, 40, 80 and the end (120): four grids, four frames of the default 100 ms
    grids = sorted((repo / "results/samples").glob("grid_*.png"))
    assert len(grids) == 4
    with Image.open(repo / "results/wgan.gif") as gif:
        assert gif.n_frames == 4
        assert gif.info["duration"] == 100
        assert gif.info["loop"] == 0
    with Image.open(repo / "results/latent_walk.gif") as walk:
        assert walk.n_frames == 8
    # 5 x 5 grid of 28 px images, 2 px padding, upscaled 2x, 14 px caption strip per scale unit
    with Image.open(grids[0]) as grid:
        assert grid.size == (2 * (5 * 30 + 2), 2 * (5 * 30 + 2 + 14))
    metrics = json.loads((repo / "results/eval/metrics.json").read_text())
    assert metrics["fid_floor"] < metrics["fid"]
    assert metrics["judge_fid_floor"] < metrics["judge_fid"]  # the same samples in the judge's space
    commit(repo, "quick pipeline")


def test_quality_scores_every_kept_generator_and_picks_the_best(repo):
    kept = kept_generators(repo)
    assert sorted(kept) == [1, 2]  # every epoch (keep_every 1), the end among them
    curve = json.loads((repo / "results/quality/curve.json").read_text())
    assert [point["epoch"] for point in curve] == [1, 2]  # one point per kept generator
    best = min(curve, key=lambda point: point["fid"])
    metrics = json.loads((repo / "results/quality/metrics.json").read_text())
    assert metrics == {"best_epoch": best["epoch"], "best_fid": best["fid"]}
    assert (repo / "models/best_generator.pt").read_bytes() == kept[best["epoch"]].read_bytes()
    sample = run_cmd(repo, *wgan_command(), "sample", "--model", "models/best_generator.pt", "--n", "4")
    assert "wrote digits.png" in sample.stdout
    (repo / "digits.png").unlink()


def test_second_repro_does_nothing(repo):
    assert ran_stages(dvc(repo, "repro").stdout) == set()


def test_metrics_show_lists_training_and_quality_numbers(repo):
    shown = json.loads(dvc(repo, "metrics", "show", "--json").stdout)
    files = next(iter(shown.values()))["data"]
    assert set(files) >= {
        "dvclive/metrics.json", "results/eval/metrics.json", "results/classifier/metrics.json",
        "results/quality/metrics.json",
    }  # fmt: skip
    assert "fid" in files["results/eval/metrics.json"]["data"]
    assert "critic_loss" in files["dvclive/metrics.json"]["data"]["train"]
    quality = json.loads((repo / "results/quality/metrics.json").read_text())
    assert files["results/quality/metrics.json"]["data"] == quality


def test_exp_run_lr_reruns_train_and_downstream_only(repo):
    out = dvc(repo, "exp", "run", "-S", "train.lr=1e-4").stdout
    ran = ran_stages(out)
    assert ran == {"params", "train", "render", "gif", "latent_walk", "quality", "pick_generator", "evaluate", "export"}
    diff = dvc(repo, "params", "diff").stdout
    assert "train.lr" in diff and "5e-05" in diff and "0.0001" in diff
    exps = json.loads(dvc(repo, "exp", "show", "--json").stdout)
    runs = [e for commit in exps for e in (commit.get("experiments") or [])]
    assert runs, exps
    data = runs[0]["revs"][0]["data"]
    assert data["params"]["params.yaml"]["data"]["train"]["lr"] == pytest.approx(1e-4)
    eval_metrics = data["metrics"]["results/eval/metrics.json"]["data"]
    assert {"fid", "kid", "precision", "recall", "classifier_score"} <= set(eval_metrics)


def test_gif_param_reruns_only_gif(repo):
    edit_params(repo, gif={"duration_ms": 250})
    assert ran_stages(dvc(repo, "repro").stdout) == {"params", "gif"}  # `params` validates every change
    with Image.open(repo / "results/wgan.gif") as gif:
        assert gif.info["duration"] == 250


def test_render_param_reruns_render_and_gif_only(repo):
    edit_params(repo, render={"scale": 1, "caption": False, "nrow": 4, "n_images": 16})
    assert ran_stages(dvc(repo, "repro").stdout) == {"params", "render", "gif"}
    with Image.open(repo / "results/samples/final.png") as grid:
        assert grid.size == (4 * 30 + 2, 4 * 30 + 2)


@pytest.mark.long  # eight stages again; the lr experiment above already checks the exact set for a train param
def test_a_train_param_reruns_train_never_the_data_or_the_classifier(repo):
    dvc(repo, "repro")  # alone (`make test-long`) it starts from the prepared repo; after the tests above, a no-op
    edit_params(repo, train={"clip_value": 0.02})  # a wgan-only key: DVC tracks the whole section
    ran = ran_stages(dvc(repo, "repro").stdout)
    assert "train" in ran
    assert not ran & {"download", "prepare", "classifier"}


def test_evaluate_param_reruns_evaluate_and_export_only(repo):
    edit_params(repo, evaluate={"n_samples": 800, "generator": "best"})
    out = dvc(repo, "repro").stdout
    assert ran_stages(out) == {"params", "pick_generator", "evaluate", "export"}  # export: the generator evaluated
    assert "samples of models/best_generator.pt" in out


def test_classifier_param_reruns_the_scores_never_train(repo):
    edit_params(repo, classifier={"seed": 1})
    ran = ran_stages(dvc(repo, "repro").stdout)  # pick_generator too when the best generator's bytes changed
    assert ran - {"pick_generator"} == {"params", "classifier", "quality", "evaluate", "export"}  # never the judge


@pytest.mark.long  # 19 s over make test's budget; make test keeps test_judge's check of dvc.yaml's deps
def test_a_judge_param_reruns_judge_and_evaluate_never_quality(repo):
    """The judge is the test set: the best-epoch pick (quality) and everything before it never read it."""
    dvc(repo, "repro")  # alone (`make test-long`) it starts from the prepared repo; after the tests above, a no-op
    before = json.loads((repo / "results/eval/metrics.json").read_text())
    edit_params(repo, judge={"seed": 1})
    ran = ran_stages(dvc(repo, "repro").stdout)
    assert ran == {"params", "judge", "evaluate", "export"}  # export: the card quotes evaluate's metrics
    after = json.loads((repo / "results/eval/metrics.json").read_text())
    assert after["judge_fid"] != before["judge_fid"]
    assert {k: v for k, v in after.items() if not k.startswith("judge_")} == {
        k: v for k, v in before.items() if not k.startswith("judge_")
    }  # the classifier's numbers, bit for bit


def test_plots_show_renders_curves_and_images(repo, tmp_path):
    dvc(repo, "plots", "show", "-o", str(tmp_path / "plots"))
    html = (tmp_path / "plots" / "index.html").read_text()
    for fragment in (
        "Critic and generator loss",
        "Wasserstein estimate",
        "FID of each kept generator",
        "final.png",
        "wgan.gif",
        "latent_walk.gif",
        "digit",
    ):
        assert fragment in html, fragment


# ----------------------------------------------------------------------------- a rejected param costs nothing

KEPT = ("models", "dvclive", "results")
RESTORE = "git show HEAD:params.yaml > params.yaml"  # the recovery the params stage names


def snapshot(repo: Path) -> dict[str, bytes]:
    """Every file of a finished run that a failed run could delete or damage, with its bytes."""
    files = [p for top in KEPT for p in sorted((repo / top).rglob("*")) if p.is_file()]
    return {str(p.relative_to(repo)): p.read_bytes() for p in files}


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


@pytest.fixture(scope="module")
def finished(repo: Path) -> dict[str, bytes]:
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "commit", "--allow-empty", "-qm", "a finished run"], cwd=repo, check=True)
    assert "up to date" in dvc(repo, "status").stdout
    return snapshot(repo)


BAD = [  # (how, key, value, a fragment of the message)
    ("repro", "train.n_critic", 0, "train.n_critic = 0 is out of range"),
    ("repro", "train.n_crtic", 5, "did you mean 'n_critic'"),
    ("repro", "render.n_images", 100, "render.n_images = 100 is larger than train.n_fixed"),
    ("repro", "train.lr", float("nan"), "train.lr = nan is invalid: expected a finite number"),  # YAML's .nan
    ("exp", "train.lr", ".nan", "train.lr = '.nan' is invalid: expected a number"),  # DVC writes it quoted
    ("exp", "train.loss", "hinge", "train.loss = 'hinge' is invalid"),
    ("exp", "evaluate.pr_k", 0, "evaluate.pr_k = 0 is out of range"),
]


@pytest.mark.parametrize(("how", "key", "value", "expect"), BAD, ids=[f"{b[0]}-{b[1]}={b[2]}" for b in BAD])
def test_bad_param_fails_before_any_output_is_deleted(repo, finished, how, key, value, expect):
    section, name = key.split(".")
    if how == "repro":
        edit_params(repo, **{section: {name: value}})
        proc = dvc(repo, "repro", check=False)
    else:
        proc = dvc(repo, "exp", "run", "-S", f"{key}={value}", check=False)
    line = one_error_line(proc)
    assert expect in line and "no stage ran and no output was removed" in line, line
    assert f"`{RESTORE}`" in line, line
    assert ran_stages(proc.stdout) == {"params"}
    assert snapshot(repo) == finished
    subprocess.run(RESTORE, shell=True, cwd=repo, check=True)  # the recovery named
    assert "up to date" in dvc(repo, "status").stdout
    assert snapshot(repo) == finished


@pytest.mark.parametrize(("stage", "key", "value"), [("train", "n_critic", 0), ("evaluate", "pr_k", 0)])
def test_outputs_dvc_deleted_come_back_with_the_checkout_the_message_names(repo, finished, stage, key, value):
    """`dvc repro --single-item` skips the params stage: the stage itself refuses, after DVC deleted its outputs."""
    edit_params(repo, **{stage: {key: value}})
    line = one_error_line(dvc(repo, "repro", "--single-item", stage, check=False))
    assert f"{stage}.{key} = 0 is out of range" in line
    assert line.endswith(f"`dvc checkout {stage}` restores its last outputs"), line
    assert snapshot(repo) != finished  # DVC deleted them before running the stage
    subprocess.run(RESTORE, shell=True, cwd=repo, check=True)
    dvc(repo, "checkout", stage)
    assert snapshot(repo) == finished  # dvclive/ and the metrics too: every output is cached
    assert "up to date" in dvc(repo, "status").stdout
