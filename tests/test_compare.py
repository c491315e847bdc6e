"""`wgan compare`: seed-replicated DVC experiments -> groups, counts, mean ± 95% CI and Welch's test.

The end-to-end test runs real queued experiments in a temporary git + DVC repo whose one stage writes a
metrics file from train.seed and train.lr in a fraction of a second, so the numbers the command prints can be
recomputed here and checked against scipy.stats.
"""

from __future__ import annotations

import math
import statistics
import subprocess
import warnings
from pathlib import Path

import pytest
from conftest import REPO, dvc, run_cmd, stage_env, wgan_command
from scipy import stats

from wgan.commands.compare import (
    collect_runs,
    compare,
    compare_experiments,
    default_metrics,
    format_estimate,
    report,
)
from wgan.commands.main import main
from wgan.commands.stats import Estimate, mean_ci, welch_p
from wgan.errors import UserError

METRICS_SCRIPT = '''"""A stand-in for training and evaluation: metrics from params, deterministic."""
import json

import yaml


def metrics_of(seed: int, lr: float) -> dict:
    noise = [0.0, 6.0, -4.0][seed]
    return {
        "fid": 40 + 1e5 * lr + noise,  # lr moves it less than the seeds do: within noise
        "precision": 0.5 + 0.01 * seed + 1000 * lr,  # lr moves it far more than the seeds: a real difference
        "recall": 0.2 + 0.03 * (seed % 2),  # lr does not move it at all
        "steps_done": 50,
    }


if __name__ == "__main__":
    train = yaml.safe_load(open("params.yaml"))["train"]
    with open("metrics.json", "w") as fh:
        json.dump(metrics_of(int(train["seed"]), float(train["lr"])), fh)
'''
DVC_YAML = """stages:
  fake_train:
    cmd: python fake_train.py
    deps: [fake_train.py]
    params: [train]
    metrics:
      - metrics.json:
          cache: false
"""
PARAMS = "train:\n  seed: 0\n  lr: 5.0e-05\n  max_iterations: 50\n"
SEEDS = (0, 1, 2)
LRS = (5e-5, 1e-4)


def wgan(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The real `wgan` command in ``repo``, importing this checkout's code."""
    return run_cmd(repo, *wgan_command(), *args, check=check, env=stage_env(REPO))


def _commit(repo: Path, message: str) -> None:
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "commit", "-qm", message], cwd=repo, check=True)


def _project(repo: Path) -> Path:
    """A git + DVC repo with the stand-in stage, committed."""
    (repo / "fake_train.py").write_text(METRICS_SCRIPT)
    (repo / "dvc.yaml").write_text(DVC_YAML)
    (repo / "params.yaml").write_text(PARAMS)
    for cmd in (["init", "-q", "-b", "main"], ["config", "user.name", "test"], ["config", "user.email", "t@e.x"]):
        subprocess.run(["git", *cmd], cwd=repo, check=True)
    dvc(repo, "init", "-q")
    _commit(repo, "baseline")
    return repo


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """A repo with a seed-replicated lr sweep and a one-seed lr (queued, then run), and what `wgan compare` said
    before there was any experiment. (Reruns and failed experiments: the row tests below, which cost no DVC run.)"""
    repo = _project(tmp_path_factory.mktemp("sweep"))
    nothing_yet = wgan(repo, "compare", check=False)

    dvc(repo, "exp", "run", "--queue", "-S", "train.seed=0,1,2", "-S", "train.lr=5e-5,1e-4")
    dvc(repo, "exp", "run", "--queue", "-S", "train.lr=2e-4")  # one seed only
    dvc(repo, "exp", "run", "--run-all", "-j", "2")
    return repo, nothing_yet


@pytest.fixture(scope="module")
def sweep(sweep_run: tuple[Path, subprocess.CompletedProcess[str]]) -> Path:
    return sweep_run[0]


def expected(seeds: tuple[int, ...], lr: float) -> dict[str, list[float]]:
    """The metrics the stage wrote for these seeds at ``lr``, each metric a list over the seeds."""
    namespace: dict = {}
    exec(compile(METRICS_SCRIPT, "fake_train.py", "exec"), namespace)  # the stage's own formula
    rows = [namespace["metrics_of"](seed, lr) for seed in seeds]
    return {m: [row[m] for row in rows] for m in ("fid", "precision", "recall")}


def scipy_ci(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    low, high = stats.t.interval(0.95, len(values) - 1, loc=mean, scale=stats.sem(values))
    return mean, (high - low) / 2


@pytest.mark.slow
@pytest.mark.long  # the sweep: seven DVC experiments
def test_groups_counts_means_ci_and_welch_match_scipy(sweep: Path) -> None:
    result = compare_experiments(str(sweep))
    assert result.differing == ["train.lr"]  # train.max_iterations is the same everywhere
    assert [(g.label, g.config["train.lr"], len(g.runs)) for g in result.groups] == [
        ("A", 5e-5, 3),
        ("B", 1e-4, 3),
        ("C", 2e-4, 1),
    ]
    assert (result.skipped, result.duplicates) == (0, 0)
    want = {"A": expected(SEEDS, 5e-5), "B": expected(SEEDS, 1e-4), "C": expected((0,), 2e-4)}
    for group in result.groups:
        for metric, est in group.estimates.items():
            values = want[group.label][metric]
            assert sorted(group.values(metric)) == pytest.approx(sorted(values), rel=1e-12)
            if len(values) > 1:
                mean, half = scipy_ci(values)
                assert (est.mean, est.half_width) == pytest.approx((mean, half), rel=1e-9)
            else:
                assert est.mean == pytest.approx(values[0]) and math.isnan(est.half_width)
    for metric in ("fid", "precision", "recall"):
        p = stats.ttest_ind(want["A"][metric], want["B"][metric], equal_var=False).pvalue
        assert result.pvalues[("A", "B")][metric] == pytest.approx(p, rel=1e-9)
        assert math.isnan(result.pvalues[("A", "C")][metric])  # one seed: no test
    # fid: the lr effect is smaller than the seed noise; precision: far larger; recall: none
    assert result.noise_peers("A", "fid") == ["B"]
    assert result.noise_peers("A", "precision") == []
    assert result.noise_peers("B", "recall") == ["A"]


@pytest.mark.slow
@pytest.mark.long  # the sweep: seven DVC experiments
def test_the_command_prints_the_table(sweep: Path) -> None:
    out = wgan(sweep, "compare", "--metric", "fid", "--metric", "precision").stdout
    rows = {line.split()[0]: line for line in out.split("\n\n")[0].splitlines()[2:]}  # the table: header, rule, rows
    for label, lr in (("A", 5e-5), ("B", 1e-4)):
        values = expected(SEEDS, lr)
        fid = format_estimate(Estimate(*scipy_ci(values["fid"]), 3))
        precision = format_estimate(Estimate(*scipy_ci(values["precision"]), 3))
        assert rows[label].split()[1:3] == [repr(lr), "3"]
        assert f"{fid} ≈{'B' if label == 'A' else 'A'}" in rows[label], out
        assert rows[label].rstrip().endswith(f" {precision}"), out  # no noise mark: a real difference
    p = stats.ttest_ind(expected(SEEDS, 5e-5)["fid"], expected(SEEDS, 1e-4)["fid"], equal_var=False).pvalue
    assert f"A vs B: fid {p:.3g}, precision " in out
    assert " vs C" not in out and "One seed, so no interval and no test: C; run more seeds." in out  # untestable
    assert rows["C"].split()[1:] == ["0.0002", "1", "60", "0.7"]  # one seed: no interval

    md = wgan(sweep, "compare", "--md").stdout.splitlines()
    assert [c.strip() for c in md[0].split("|")[1:-1]] == ["group", "train.lr", "seeds", "fid", "precision", "recall"]
    assert set(md[1]) <= {"|", "-", ":"}


@pytest.mark.slow
@pytest.mark.long  # the sweep: seven DVC experiments
def test_no_experiments_is_one_line_and_exit_2(sweep_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    err = sweep_run[1].stderr
    assert sweep_run[1].returncode == 2
    assert err.count("\n") == 1
    assert err.startswith("error: no finished experiments with fid, precision, recall in .; queue a seed-replicated")


@pytest.mark.slow
@pytest.mark.long  # the sweep: seven DVC experiments
def test_unknown_metric_and_no_project_are_one_line(sweep: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    for repo, args, expect in (
        (sweep, ["--metric", "fdi"], "metric 'fdi' is not in the experiments; pass --metric with one of: fid, "),
        (tmp_path, [], f"{tmp_path} is not in a DVC project"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(["compare", "--repo", str(repo), *args])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and err.count("\n") == 1 and expect in err, err


@pytest.mark.slow
@pytest.mark.long  # experiments of three commits
def test_num_takes_in_the_experiments_of_earlier_commits(tmp_path: Path) -> None:
    """A new commit (new code, say) starts a new baseline: its experiments alone by default, both with --num 2."""
    repo = _project(tmp_path)
    dvc(repo, "exp", "run", "-S", "train.seed=0")
    (repo / "NOTES.md").write_text("a later commit\n")
    _commit(repo, "later")
    dvc(repo, "exp", "run", "-S", "train.seed=1")

    def seeds(*args: str) -> list[str]:
        out = wgan(repo, "compare", "--metric", "fid", *args).stdout
        return [line.split()[1] for line in out.splitlines()[2:] if line.startswith("A ")]

    assert seeds() == ["1"]  # one group, one seed: this commit's experiment only
    assert seeds("--num", "2") == seeds("--num", "-1") == ["2"]
    fid = format_estimate(Estimate(*scipy_ci(expected((0, 1), 5e-5)["fid"]), 2))
    assert fid in wgan(repo, "compare", "--metric", "fid", "--num", "2").stdout
    bad = wgan(repo, "compare", "--num", "0", check=False)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert "expected a count of commits >= 1, or -1 for all, got '0'" in bad.stderr


def row(name: str, seed: float, lr: float, fid: float | str | None, **extra: object) -> dict:
    """A row as dvc.api.exp_show returns it (numbers as floats, '!' or None where a metric is missing)."""
    return (
        {"Experiment": name, "rev": name, "typ": "branch_commit", "State": "Success", "fid": fid}
        | {
            "params.yaml:train.seed": seed,
            "train.lr": lr,
            "train.g_hidden": "[32, 64]",
            "src/wgan/training/loop.py": "0123abcd",  # a dep: its hash, never a param or a metric
        }
        | extra
    )


def test_grouping_from_rows_with_prefixed_columns_and_missing_metrics() -> None:
    rows = [
        {"Experiment": None, "rev": "workspace", "typ": "baseline", "fid": 1.0, "train.lr": 1e-4},
        row("a", 0.0, 1e-4, 10.0),
        row("b", 1.0, 1e-4, 12.0),
        row("c", 0.0, 1e-4, 99.0),  # the same seed again
        row("d", 0.0, 5e-5, 20.0),
        row("e", 1.0, 5e-5, "!"),  # failed
        row("f", 2.0, 5e-5, None, State="Queued"),
        # what exp_show gives for a `dvc exp run` still running: the workspace's metrics, from the run before
        row("g", 2.0, 1e-4, 10.0, rev="workspace", State="Running", Executor="Workspace"),
        row("h", 2.0, 5e-5, 30.0, State=None),  # a finished experiment committed to its ref has no State
    ]
    runs, skipped, columns = collect_runs(rows, {"train.seed", "train.lr", "train.g_hidden"}, ["fid"])
    assert columns == ["fid"] and skipped == 3
    result = compare(runs, ["fid"], skipped)
    assert [(g.config, [r.name for r in g.runs]) for g in result.groups] == [
        ({"train.lr": 5e-5}, ["d", "h"]),
        ({"train.lr": 1e-4}, ["a", "b"]),
    ]
    assert result.duplicates == 1
    assert result.groups[1].estimates["fid"].mean == 11.0


def test_seeds_are_never_pooled_across_devices_or_precision_modes() -> None:
    """run.device and run.precision (text in dvclive/metrics.json) split groups like a param; a run without them
    (from before they were recorded) is its own group; the report says why in one line."""
    cpu = {"dvclive/metrics.json:run.device": "cpu", "run.precision": "fp32"}
    gpu = {"dvclive/metrics.json:run.device": "cuda (NVIDIA H200)", "run.precision": "tf32"}
    rows = [
        row("a", 0.0, 1e-4, 10.0, **cpu),
        row("b", 1.0, 1e-4, 12.0, **cpu),
        row("c", 0.0, 1e-4, 30.0, **gpu),  # seed 0 again, on the GPU: not a rerun of a, another group
        row("d", 1.0, 1e-4, 32.0, **gpu),
        row("e", 2.0, 1e-4, 50.0),  # before the record: neither a CPU nor a GPU replicate
    ]
    runs, skipped, _ = collect_runs(rows, {"train.seed", "train.lr", "train.g_hidden"}, ["fid"])
    result = compare(runs, ["fid"], skipped)
    assert result.differing == ["run.device", "run.precision"] and result.duplicates == 0
    assert [([r.name for r in g.runs], g.config["run.device"]) for g in result.groups] == [
        (["a", "b"], "cpu"),
        (["c", "d"], "cuda (NVIDIA H200)"),
        (["e"], "unrecorded"),
    ]
    assert [g.estimates["fid"].mean for g in result.groups] == [11.0, 31.0, 50.0]
    assert "Runs on another device or precision mode are other groups" in report(result)
    same = compare(collect_runs(rows[:2], {"train.seed", "train.lr", "train.g_hidden"}, ["fid"])[0], ["fid"])
    assert same.differing == [] and "another device" not in report(same)


def test_an_unknown_seed_param_is_a_user_error() -> None:
    with pytest.raises(UserError, match="param 'train.sed' is not in the experiments; pass --seed-param"):
        collect_runs([row("a", 0.0, 1e-4, 1.0)], {"train.seed", "train.lr"}, ["fid"], "train.sed")


@pytest.mark.parametrize("n", [2, 3, 7])
def test_mean_ci_and_welch_match_scipy(n: int) -> None:
    a = [math.sin(7 * i) * 3 + 10 for i in range(n)]
    b = [math.cos(5 * i) + 12 for i in range(n + 2)]
    est = mean_ci(a)
    low, high = stats.t.interval(0.95, n - 1, loc=statistics.fmean(a), scale=stats.sem(a))
    assert (est.mean, est.half_width, est.n) == pytest.approx((statistics.fmean(a), (high - low) / 2, n), rel=1e-12)
    assert welch_p(a, b) == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue, rel=1e-12)


def test_welch_limits_without_spread() -> None:
    assert welch_p([10, 10, 10], [10, 10]) == 1.0  # e.g. classes_covered 10 for every seed
    assert welch_p([10, 10], [9, 9]) == 0.0
    assert math.isnan(welch_p([1.0], [2.0, 3.0]))


def test_welch_with_one_side_without_spread_is_exact_and_quiet() -> None:
    """One group covers 9 digits on every seed: Welch's t then has the other side's n - 1 degrees of freedom,
    and scipy's precision-loss warning (printed in the middle of `wgan compare`'s table) is not shown."""
    a, b = [4.0, 6.0, 6.0], [9.0, 9.0, 9.0]
    t = (statistics.fmean(a) - 9.0) / math.sqrt(statistics.variance(a) / len(a))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert welch_p(a, b) == pytest.approx(2 * stats.t.sf(abs(t), len(a) - 1), rel=1e-9)
    assert format_estimate(mean_ci([5.0])) == "5" and format_estimate(mean_ci([412.3, 398.1, 430.0])) == "413 ± 40"


def test_the_default_metrics_add_the_judges_fid_where_an_experiment_reports_it() -> None:
    """judge_fid (docs/quality.md#the-judge) is a default column; experiments from before the judge lack it, so a
    sweep of those compares on the other defaults instead of failing."""
    old = [row("a", 0.0, 1e-4, 10.0), row("b", 1.0, 1e-4, 12.0)]
    assert default_metrics(old) == ["fid", "precision", "recall"]
    new = [*old, row("c", 0.0, 5e-5, 20.0, **{"results/eval/metrics.json:judge_fid": 3.0})]
    assert default_metrics(new) == ["fid", "precision", "recall", "judge_fid"]
    runs, skipped, columns = collect_runs(new, {"train.seed", "train.lr", "train.g_hidden"}, ["fid", "judge_fid"])
    assert [r.name for r in runs] == ["c"] and skipped == 2  # chosen: judge_fid, so the old runs are left out
    assert columns == ["fid", "results/eval/metrics.json:judge_fid"]
