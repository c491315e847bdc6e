"""The judge: its network, its seeded half and shifts, its stage, linear CKA, its scores in evaluate, and that
nothing but evaluate reads it."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO, run_stage_script
from test_classifier import CFG, toy_digits, write_toy_splits
from test_evaluate import SMALL, tiny_classifier, tiny_generator
from test_stage_code import import_closure

from wgan import paths
from wgan.classifier.classifier import load_real_features, real_features
from wgan.config import JudgeConfig, parse_section
from wgan.data.model_file import load_model, save_model
from wgan.data.prepared import load_prepared
from wgan.errors import UserError
from wgan.evaluation.evaluate import JUDGE_METRICS, evaluate
from wgan.evaluation.metrics import fid
from wgan.judge.cka import linear_cka
from wgan.judge.judge import Judge, RandomShift, halves, split_for, train_judge

TINY_JUDGE = {"channels": [4, 8, 8], "width": 16}
JUDGE_CFG = JudgeConfig(epochs=4, batch_size=16, lr=2e-2, seed=0, split_seed=0, half=0, shift=1)


def test_the_judge_is_another_network_than_the_classifier() -> None:
    """3x3 convolutions only, no BatchNorm, SiLU, 64 features where the classifier has 128; batch-independent."""
    judge = Judge().eval()
    convs = [m for m in judge.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(m.kernel_size == (3, 3) for m in convs)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in judge.modules())
    images, _ = toy_digits(12, seed=0)
    feats = judge.features(images)
    assert feats.shape == (12, 64) != tiny_classifier().features(images).shape
    assert torch.allclose(judge.features(images[:5]), feats[:5], atol=1e-6)
    assert torch.equal(judge.train().features(images), feats)  # no normalization layer: the same in both modes


def test_halves_are_disjoint_seeded_and_cover_the_split() -> None:
    a, b = halves(11, split_seed=3)
    assert len(a) == 6 and len(b) == 5
    assert sorted(torch.cat([a, b]).tolist()) == list(range(11))
    assert all(torch.equal(x, y) for x, y in zip((a, b), halves(11, split_seed=3), strict=True))
    assert not torch.equal(a, halves(11, split_seed=4)[0])
    images, labels = toy_digits(20, seed=0)
    train = load_toy_split(images, labels)
    learn, held_out = split_for(train, JUDGE_CFG)
    learn1, held_out1 = split_for(train, dataclasses.replace(JUDGE_CFG, half=1))
    assert torch.equal(learn.images, held_out1.images) and torch.equal(held_out.images, learn1.images)


def load_toy_split(images: torch.Tensor, labels: torch.Tensor):  # noqa: ANN201
    from wgan.data.prepared import Split

    return Split(images=images, labels=labels, mean=0.5, std=0.5)


def test_random_shift_moves_each_image_whole_by_at_most_its_range_from_its_own_stream() -> None:
    images, _ = toy_digits(16, seed=1)
    assert torch.equal(RandomShift(0, seed=0)(images), images)
    before = torch.random.get_rng_state()
    shifted = RandomShift(2, seed=0)(images)
    assert torch.equal(torch.random.get_rng_state(), before)  # the global stream (weights, noise) is untouched
    assert torch.equal(shifted, RandomShift(2, seed=0)(images)) and not torch.equal(shifted, images)
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2), mode="replicate")
    for i in range(16):  # each output is one window of the edge-replicated image, offset by -2..2 each way
        windows = [padded[i, :, y : y + 28, x : x + 28] for y in range(5) for x in range(5)]
        assert any(torch.equal(shifted[i], w) for w in windows), i
    assert len({tuple(RandomShift(2, seed=s)(images[:1])[0, 0, 10].tolist()) for s in range(10)}) > 1


def test_train_judge_learns_from_its_half_only_and_is_deterministic() -> None:
    images, labels = toy_digits(200, seed=0)
    train = load_toy_split(images, labels)
    a, held_out = train_judge(train, JUDGE_CFG, **TINY_JUDGE)
    b, _ = train_judge(train, JUDGE_CFG, **TINY_JUDGE)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert len(held_out) == 100 and not a.training
    test_images, test_labels = toy_digits(100, seed=1)
    assert (a(test_images).argmax(1) == test_labels).float().mean() >= 0.9
    c, _ = train_judge(train, dataclasses.replace(JUDGE_CFG, shift=0), **TINY_JUDGE)
    assert not torch.equal(a.head.weight, c.head.weight)  # the shifts are applied


def test_judge_files_load_weights_only(tmp_path: Path) -> None:
    torch.manual_seed(0)
    judge = Judge(**TINY_JUDGE)
    save_model(judge, tmp_path / "judge.pt")
    raw = torch.load(tmp_path / "judge.pt", weights_only=True)
    assert raw["kind"] == "judge" and raw["kwargs"] == TINY_JUDGE
    images, _ = toy_digits(4, seed=2)
    assert torch.equal(load_model(tmp_path / "judge.pt", Judge)(images), judge.eval()(images))
    with pytest.raises(UserError, match="missing; rerun `dvc repro judge`"):
        load_model(tmp_path / "absent.pt", Judge)


# Linear CKA


def test_cka_is_one_for_a_rotated_and_scaled_copy_and_near_zero_for_independent_features() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 12, generator=g, dtype=torch.float64)
    assert linear_cka(x, x) == pytest.approx(1.0)
    rotation, _ = torch.linalg.qr(torch.randn(12, 12, generator=g, dtype=torch.float64))
    assert linear_cka(x, 3.5 * x @ rotation + 7) == pytest.approx(1.0)
    assert linear_cka(x, x[:, :6]) < 1  # part of a space is not the space
    independent = linear_cka(x, torch.randn(500, 20, generator=g, dtype=torch.float64))
    assert independent < 0.1
    assert linear_cka(x, x @ torch.randn(12, 30, generator=g, dtype=torch.float64)) > independent + 0.5
    with pytest.raises(ValueError, match="same N"):
        linear_cka(x, x[:10])


# The judge in evaluate, and nobody else


def toy_judge_features(tmp_path: Path):  # noqa: ANN201
    """A tiny trained judge and its real features (train: the half it never saw) on toy splits."""
    write_toy_splits(tmp_path, n_train=120, n_test=100)
    train, test = (load_prepared(tmp_path / "data" / "prepared" / f"{s}.pt") for s in ("train", "test"))
    judge, held_out = train_judge(train, dataclasses.replace(JUDGE_CFG, epochs=1), **TINY_JUDGE)
    return train, test, judge, real_features(judge, held_out, test)


def test_evaluate_adds_the_judge_scores_with_floors_and_leaves_the_classifier_scores_alone(tmp_path: Path) -> None:
    train, test, judge, judge_real = toy_judge_features(tmp_path)
    real = real_features(tiny_classifier(), train, test)
    alone, hist, _ = evaluate(tiny_generator(), tiny_classifier(), real, SMALL)
    both, hist_both, _ = evaluate(tiny_generator(), tiny_classifier(), real, SMALL, judge=(judge, judge_real))
    judge_keys = [f"judge_{k}{s}" for k in JUDGE_METRICS for s in ("", "_floor")]
    assert list(both) == [*alone, *judge_keys]  # the classifier's keys first, in their order
    assert {k: both[k] for k in alone} == alone and hist_both == hist  # bit-identical
    assert all(math.isfinite(both[k]) for k in judge_keys)
    assert both["judge_fid"] != both["fid"] and both["judge_fid_floor"] < both["judge_fid"]
    # the floor: SMALL.n_samples of the images the judge never learned from, drawn as the classifier's floor draws
    pick = torch.randperm(60, generator=torch.Generator().manual_seed(SMALL.seed))[: SMALL.n_samples]
    assert both["judge_fid_floor"] == pytest.approx(fid(judge_real.train.features[pick], judge_real.test.features))
    small = dataclasses.replace(SMALL, n_samples=70, kid_subset_size=61)  # the judge's unseen half holds 60
    with pytest.raises(UserError, match="kid_subset_size = 61 is larger than the smallest set scored \\(60"):
        evaluate(tiny_generator(), tiny_classifier(), real, small, judge=(judge, judge_real))


def test_quality_never_reads_the_judge() -> None:
    """Best-epoch picking must not see the test set: no judge output among quality's deps, no judge module among
    the modules its stage can import; and the judge reads no classifier output, so a classifier change never
    reruns it."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    quality_deps = {dep if isinstance(dep, str) else next(iter(dep)) for dep in stages["quality"]["deps"]}
    judge_outs = {p.as_posix() for p in paths.STAGES["judge"][1]}
    assert not quality_deps & (judge_outs | {"src/wgan/judge"})
    assert "judge" not in stages["quality"].get("params", [])
    for stage in ("quality", "train", "classifier"):
        closure = {m.relative_to(REPO / "src").as_posix() for m in import_closure(REPO / "stages" / f"{stage}.py")}
        assert not {m for m in closure if m.startswith("wgan/judge/")}, stage
    judge_deps = {dep if isinstance(dep, str) else next(iter(dep)) for dep in stages["judge"]["deps"]}
    assert not judge_deps & {p.as_posix() for p in paths.STAGES["classifier"][1]}
    evaluate_deps = {dep if isinstance(dep, str) else next(iter(dep)) for dep in stages["evaluate"]["deps"]}
    assert {paths.JUDGE.as_posix(), paths.JUDGE_FEATURES.as_posix()} <= evaluate_deps


@pytest.mark.slow
def test_judge_stage_end_to_end_and_its_refusals(tmp_path: Path) -> None:
    write_toy_splits(tmp_path, n_train=300, n_test=100)
    params = {"judge": {**dataclasses.asdict(JUDGE_CFG), "epochs": 1, "batch_size": 32}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = run_stage_script("judge", tmp_path)
    assert proc.returncode == 0, proc.stderr
    scores = json.loads((tmp_path / paths.JUDGE_METRICS).read_text())
    assert set(scores) == {"accuracy", "test_loss", "held_out_accuracy"}
    assert 0 <= scores["accuracy"] <= 1 and scores["test_loss"] > 0 and 0 <= scores["held_out_accuracy"] <= 1
    assert load_model(tmp_path / paths.JUDGE, Judge).width == 64
    real = load_real_features(tmp_path / paths.JUDGE_FEATURES)
    assert real.train.features.shape == (150, 64) and real.test.features.shape == (100, 64)
    train = load_prepared(tmp_path / paths.TRAIN_DATA)
    unseen = halves(300, JUDGE_CFG.split_seed)[1]
    assert torch.equal(real.train.labels, train.labels[unseen])  # the features of the half it never saw

    params["judge"]["half"] = 2
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = run_stage_script("judge", tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: judge.half = 2 is out of range: allowed (>= 0 and <= 1)"
    params["judge"]["half"] = 0
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / paths.TEST_DATA).write_bytes(b"not a torch file")
    proc = run_stage_script("judge", tmp_path)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("error: ") and "test.pt" in proc.stderr and "Traceback" not in proc.stderr


def test_judge_section_defaults_match_params_yaml() -> None:
    section = yaml.safe_load((REPO / "params.yaml").read_text())["judge"]
    assert parse_section("judge", section) == JudgeConfig()
    assert CFG.seed == JudgeConfig().seed  # the same default seed, different streams: see wgan.judge.judge


@pytest.mark.slow
def test_the_independence_benchmark_prints_every_pair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """benchmarks/judge_independence.py on toy splits, one epoch each: accuracies and both CKA columns, in range."""
    import runpy

    write_toy_splits(tmp_path, n_train=200, n_test=100)
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["judge_independence.py", "--epochs", "1"])
    runpy.run_path(str(REPO / "benchmarks/judge_independence.py"), run_name="__main__")
    accuracy_part, cka_part = capsys.readouterr().out.split("linear CKA")

    def rows(text: str) -> list[list[str]]:
        lines = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line][1:]
        return [[cell.strip() for cell in line.split("|")[1:-1]] for line in lines]  # the header left out

    assert [(r[0], r[1]) for r in rows(accuracy_part)] == [("classifier", "0"), ("classifier", "1"), ("judge", "0"),
                                                          ("judge", "1")]  # fmt: skip
    assert all(0 <= float(r[2]) <= 1 for r in rows(accuracy_part))
    ckas = {(r[0], r[1]): (float(r[2]), float(r[3])) for r in rows(cka_part)}
    assert len(ckas) == 6 and ("classifier", "judge") in ckas and ("pixels", "judge") in ckas
    assert all(0 <= v <= 1 + 1e-9 for pair in ckas.values() for v in pair)
