"""``wgan compare``: DVC experiments that differ only in the seed -> one row per configuration, with noise marks.

The experiments come from ``dvc.api.exp_show`` (the experiments of the current commit, as ``dvc exp show``
lists them; ``num`` commits back along the first parents, as ``dvc exp show --num``). Experiments whose params
are equal except ``train.seed`` form a group: the seeds are replicates of one configuration. Each group gets,
per metric, the mean and its 95% confidence interval; each pair of groups gets Welch's t-test, and a
difference with p > 0.05 is marked as within seed noise.

The device and precision mode a run trained on (``run.device``, ``run.precision`` in ``dvclive/metrics.json``,
``wgan.training.live``) count as params here: a CUDA run draws other random numbers and multiplies in TF32, so
seeds are never pooled across them, and a run from before they were recorded is its own group ("unrecorded").
"""

from __future__ import annotations

import math
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

from wgan.commands.stats import ALPHA, CONFIDENCE, Estimate, mean_ci, welch_p, within_noise
from wgan.errors import UserError, one_line
from wgan.training.live import RUN_RECORD

# The evaluate stage's quality and diversity, read together, and FID in the judge's space (docs/quality.md#the-judge)
HEADLINE_METRICS = ("fid", "precision", "recall", "judge_fid")
NEWER_METRICS = frozenset({"judge_fid"})  # defaults that older experiments lack: left out when none reports them
SEED_PARAM = "train.seed"
FINISHED_STATES = (None, "Success")  # dvc exp show's State: empty for a committed experiment, else Queued, Running...
META_COLUMNS = frozenset({"Experiment", "rev", "typ", "Created", "parent", "State", "Executor"})
PARAM_FILE_SUFFIXES = (".yaml", ".yml", ".toml", ".py")  # a "file:key" column from one of these is a param
RECORD_COLUMNS = tuple(name.replace("/", ".") for name in RUN_RECORD)  # as dvc exp show names nested keys
UNRECORDED = "unrecorded"  # a run from before the device was recorded
SWEEP_HINT = (
    "queue a seed-replicated sweep, e.g. `dvc exp run --queue -S 'train.seed=0,1,2' -S 'train.lr=5e-5,1e-4'` "
    "and `dvc queue start` (see docs/experiments.md)"
)


@dataclass(frozen=True)
class Experiment:
    """One finished experiment: its name, seed, other params and the chosen metrics."""

    name: str
    seed: Any
    config: tuple[tuple[str, Any], ...]  # every param but the seed, sorted by name
    metrics: Mapping[str, float]


@dataclass(frozen=True)
class Group:
    """The runs of one configuration (one per seed) and the estimate of each metric."""

    label: str
    config: Mapping[str, Any]  # the params that differ between groups
    runs: Sequence[Experiment]
    estimates: Mapping[str, Estimate]

    def values(self, metric: str) -> list[float]:
        return [run.metrics[metric] for run in self.runs]


@dataclass(frozen=True)
class Comparison:
    """Groups in a stable order, and the Welch p-value of every pair of groups for every metric."""

    groups: Sequence[Group]
    differing: Sequence[str]
    metrics: Sequence[str]
    pvalues: Mapping[tuple[str, str], Mapping[str, float]]  # (label, label) -> metric -> p
    skipped: int  # experiments without every chosen metric: queued, running or failed
    duplicates: int  # runs of a configuration and seed already counted

    def noise_peers(self, label: str, metric: str) -> list[str]:
        """The groups whose difference from group ``label`` in ``metric`` is within seed noise."""
        return [
            other
            for (a, b), ps in self.pvalues.items()
            if label in (a, b) and within_noise(ps[metric])
            for other in (a, b)
            if other != label
        ]


def read_experiments(repo: str = ".", num: int = 1) -> tuple[list[dict[str, Any]], set[str]]:
    """The rows of ``dvc.api.exp_show(repo, num=num)`` and the names of the project's params (dotted)."""
    import dvc.api
    from dvc.exceptions import DvcException, NotDvcRepoError
    from dvc.repo import Repo

    try:
        root = Repo.find_root(repo)  # else a plain folder reads as a git URL to clone: "SCM error"
        rows = dvc.api.exp_show(repo=root, num=num)
        params = dvc.api.params_show(repo=root)
    except NotDvcRepoError as exc:
        raise UserError(f"{repo} is not in a DVC project; run `wgan compare` in the project or pass --repo") from exc
    except DvcException as exc:
        raise UserError(f"DVC cannot list the experiments in {repo} ({one_line(exc)}); fix that first") from exc
    return rows, set(_flatten(params))


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        flat |= _flatten(value, f"{name}.") if isinstance(value, Mapping) else {name: value}
    return flat


def is_param_column(column: str, params: set[str]) -> bool:
    """``train.lr``, or ``params.yaml:train.lr`` where DVC prefixes a name that is ambiguous."""
    path, _, name = column.rpartition(":")
    return column in params or (name in params and path.endswith(PARAM_FILE_SUFFIXES))


def resolve_column(name: str, columns: Sequence[str], what: str, flag: str) -> str:
    """The column for ``name``: itself, or the only ``<file>:name`` DVC made of it; else a one-line error."""
    if name in columns:
        return name
    matches = [c for c in columns if c.endswith(f":{name}")]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise UserError(f"{what} '{name}' is in several files ({', '.join(matches)}); pass {flag} with one of them")
    shown = ", ".join(columns[:30]) + (", ..." if len(columns) > 30 else "")
    raise UserError(f"{what} '{name}' is not in the experiments; pass {flag} with one of: {shown or 'none'}")


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def collect_runs(
    rows: Sequence[Mapping[str, Any]], params: set[str], metrics: Sequence[str], seed_param: str = SEED_PARAM
) -> tuple[list[Experiment], int, list[str]]:
    """The experiment rows with every chosen metric as runs, the count of the others, and the metric columns."""
    experiments = [row for row in rows if row.get("typ") != "baseline"]  # not the workspace or the commit
    columns = list(dict.fromkeys(c for row in experiments for c in row if c not in META_COLUMNS))
    param_cols = [c for c in columns if is_param_column(c, params)]
    metric_cols = [c for c in columns if c not in param_cols and any(_number(r.get(c)) is not None for r in rows)]
    if not metric_cols:  # no experiment has finished yet
        return [], len(experiments), []
    chosen = [resolve_column(m, metric_cols, "metric", "--metric") for m in metrics]
    seed_col = resolve_column(seed_param, param_cols, "param", "--seed-param")
    record_cols = {name: col for name in RECORD_COLUMNS for col in columns if col == name or col.endswith(f":{name}")}
    runs, skipped = [], 0
    for row in experiments:
        values = {col: _number(row.get(col)) for col in chosen}
        # A running `dvc exp run` shows the workspace's metrics, which are still the previous run's: not its own.
        unfinished = row.get("State") not in FINISHED_STATES
        if unfinished or any(v is None or math.isnan(v) for v in values.values()):
            skipped += 1
            continue
        record = [(name, _text(row.get(col))) for name, col in record_cols.items()]
        config = tuple(sorted([*((c, row.get(c)) for c in param_cols if c != seed_col), *record]))
        name = str(row.get("Experiment") or row.get("rev"))
        runs.append(Experiment(name, row.get(seed_col), config, dict(zip(metrics, values.values(), strict=True))))
    return runs, skipped, chosen


def _text(value: Any) -> str:
    """A recorded device or precision; a run without one (missing, or DVC's '!') is unrecorded."""
    return value if isinstance(value, str) and value not in ("", "!") else UNRECORDED


def group_label(index: int) -> str:
    """A, B, ..., Z, then G27, G28, ..."""
    return string.ascii_uppercase[index] if index < 26 else f"G{index + 1}"


def _sort_key(value: Any) -> tuple[int, float, str]:
    number = _number(value)
    return (0, number, "") if number is not None else (1, 0.0, str(value))


def compare(
    runs: Sequence[Experiment], metrics: Sequence[str], skipped: int = 0, confidence: float = CONFIDENCE
) -> Comparison:
    """Group ``runs`` by their params (one run per seed kept), estimate each metric, test each pair of groups."""
    by_config: dict[tuple[tuple[str, Any], ...], dict[Any, Experiment]] = {}
    duplicates = 0
    for run in runs:
        seeds = by_config.setdefault(run.config, {})
        if run.seed in seeds:
            duplicates += 1  # the same configuration and seed again: a rerun, not a replicate
        else:
            seeds[run.seed] = run
    configs = list(by_config)
    names = sorted({name for config in configs for name, _ in config})
    differing = [n for n in names if len({repr(dict(c).get(n)) for c in configs}) > 1]
    configs.sort(key=lambda c: [_sort_key(dict(c).get(n)) for n in differing])
    groups = []
    for i, config in enumerate(configs):
        members = sorted(by_config[config].values(), key=lambda r: _sort_key(r.seed))
        estimates = {m: mean_ci([r.metrics[m] for r in members], confidence) for m in metrics}
        groups.append(Group(group_label(i), {n: dict(config).get(n) for n in differing}, members, estimates))
    pvalues = {
        (a.label, b.label): {m: welch_p(a.values(m), b.values(m)) for m in metrics} for a, b in combinations(groups, 2)
    }
    return Comparison(groups, differing, list(metrics), pvalues, skipped, duplicates)


def default_metrics(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """``HEADLINE_METRICS``, less those of ``NEWER_METRICS`` that no row reports (experiments from before the judge)."""

    def reported(metric: str) -> bool:
        return any(
            _number(value) is not None
            for row in rows
            for column, value in row.items()
            if column == metric or column.endswith(f":{metric}")
        )

    return [m for m in HEADLINE_METRICS if m not in NEWER_METRICS or reported(m)]


def compare_experiments(
    repo: str = ".", metrics: Sequence[str] | None = None, seed_param: str = SEED_PARAM, num: int = 1
) -> Comparison:
    """Read the experiments of ``repo`` (of its last ``num`` commits, -1: all) and compare their seed groups on
    ``metrics`` (default: ``default_metrics``)."""
    rows, params = read_experiments(repo, num)
    metrics = default_metrics(rows) if metrics is None else metrics
    runs, skipped, _ = collect_runs(rows, params, metrics, seed_param)
    if not runs:
        why = f" ({skipped} without every metric: queued, running or failed)" if skipped else ""
        raise UserError(f"no finished experiments with {', '.join(metrics)} in {repo}{why}; {SWEEP_HINT}")
    return compare(runs, metrics, skipped)


def format_param(value: Any) -> str:
    number = _number(value)
    if number is None:
        return str(value)
    return str(int(number)) if number.is_integer() else repr(number)


def format_estimate(est: Estimate) -> str:
    """``mean ± half-width``, both to the second significant digit of the half-width."""
    if math.isnan(est.half_width):
        return f"{est.mean:.4g}"
    if est.half_width == 0:
        return f"{est.mean:.4g} ± 0"
    decimals = min(6, max(0, 1 - math.floor(math.log10(est.half_width))))
    return f"{est.mean:.{decimals}f} ± {est.half_width:.{decimals}f}"


def table(result: Comparison, markdown: bool = False) -> str:
    """One row per group: the differing params, the seed count, ``mean ± CI`` per metric with noise marks."""
    from tabulate import tabulate  # DVC's own table printer

    headers = ["group", *result.differing, "seeds", *result.metrics]
    rows = []
    for group in result.groups:
        cells = []
        for metric in result.metrics:
            peers = result.noise_peers(group.label, metric)
            cells.append(format_estimate(group.estimates[metric]) + (f" ≈{','.join(peers)}" if peers else ""))
        row = [group.label, *(format_param(group.config[n]) for n in result.differing), str(len(group.runs))]
        rows.append(row + cells)
    return tabulate(rows, headers, tablefmt="github" if markdown else "simple", disable_numparse=True)


def report(result: Comparison, markdown: bool = False) -> str:
    """The table, what its marks mean, the pairwise p-values and what was left out."""
    lines = [table(result, markdown), ""]
    lines.append(
        f"± : {CONFIDENCE:.0%} confidence interval of the mean (Student's t); ≈X: the difference from group X is "
        f"within seed noise (Welch's t-test, p > {ALPHA:g})."
    )
    if not result.differing:
        lines.append("All experiments have the same params but the seed: one group.")
    if set(RECORD_COLUMNS) & set(result.differing):
        lines.append(
            "Runs on another device or precision mode are other groups (run.device, run.precision): a CUDA run draws "
            "other random numbers and multiplies in TF32, so its seeds are not replicates of a CPU run's."
        )
    # A pair with a one-seed group has no test: listing it would print only n/a, and a sweep of many one-seed
    # variants would bury the few real tests under them.
    single = [g.label for g in result.groups if len(g.runs) < 2]
    tested = {pair: ps for pair, ps in result.pvalues.items() if not set(pair) & set(single)}
    if tested:
        lines.append("Welch p-values:")
        for (a, b), ps in tested.items():
            shown = ", ".join(f"{m} {_format_p(p)}" for m, p in ps.items())
            lines.append(f"  {a} vs {b}: {shown}")
    if single:
        lines.append(f"One seed, so no interval and no test: {', '.join(single)}; run more seeds.")
    if result.skipped:
        lines.append(f"Left out {result.skipped} experiments without every metric (queued, running or failed).")
    if result.duplicates:
        lines.append(f"Left out {result.duplicates} reruns of a configuration and seed already counted.")
    return "\n".join(lines)


def _format_p(p: float) -> str:
    return "n/a" if math.isnan(p) else f"{p:.3g}"
