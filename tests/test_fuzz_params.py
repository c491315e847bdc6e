"""Fuzzing params.yaml: random edits of the real file, validated by the `params` stage.

Each example edits the project's params.yaml (wrong types, out-of-range and huge values, unknown and
missing keys and sections, YAML 1.1 oddities such as `.nan`, `1e-4`, `yes`, `0x1F`, nested lists, tags)
and runs the stage's own entry point. It must either pass, and then every stage's loader agrees and the
values survive the YAML round trip DVC does on `-S`, or exit 2 with one line naming a key, section or the
file: never a traceback, never a half-written marker.
"""

from __future__ import annotations

import contextlib
import io
import os
import runpy
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO
from fuzzing import fuzz, time_limit
from hypothesis import event, given
from hypothesis import strategies as st

from wgan import paths
from wgan.config import SECTIONS, load_section, parse_section, to_dict
from wgan.stage import run_stage

BASE = yaml.safe_load((REPO / "params.yaml").read_text())
STAGE = runpy.run_path(str(REPO / "stages/params.py"), run_name="fuzzed")  # main() without running it
MARKER, MARKER_TEXT = paths.PARAMS_OK, STAGE["MARKER_TEXT"]


class Raw(str):
    """YAML text written into the file as is (what a user types), not a value to be dumped."""


ODDITIES = [  # how YAML 1.1 (PyYAML) reads these is the point: strings, bools, ints, floats, dates, tags
    "1e-4", "1.0e-4", "1E5", ".nan", ".NaN", ".inf", "-.inf", "1e400", "yes", "no", "on", "off", "y", "~",
    "null", "0x1F", "0o17", "017", "1_000", "+5", "-0", "5.", ".5", "12:30", "2024-01-01", "'5'", '"0.5"',
    "[1, [2, [3]]]", "[]", "{}", "{a: 1}", "!!binary aGk=", "!!float 3", "!!str 5", "!!set {a, b}", "&x 1",
    "[0.5]", "[0.5, 0.9, 0.99]", "[128, 0]", "[[1, 2]]", "99999999999999999999999", "-99999999999999999999",
    "!!python/object/apply:os.system ['true']", "'wgan'", "wgan-gp ", "[", "{a: [}", "'\\x00'",
]  # fmt: skip

KEYS = sorted({k for section in BASE.values() for k in section}) + ["n_crtic", "lR", "epoch", "", "1", "x.y"]

scalars = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, 2, 3, 10, 64, 2**31 - 1, 2**31, 2**32, 2**63]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(max_size=12),
    st.sampled_from(["wgan", "wgan-gp", "adam", "rmsprop", "fp32", "bf16", "auto", "pypi", "1e-4", "ten"]),
)
GOOD = [v for section in BASE.values() for v in section.values()] + [1, 5, 0.25, 1e-3, "2e-4", [64, 64], [0.0, 0.99]]
values = st.one_of(
    st.sampled_from(GOOD),  # plausible values, so that whole files pass too
    st.sampled_from(ODDITIES).map(Raw),
    st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner)),
)
section_names = st.sampled_from(sorted(SECTIONS)) | st.sampled_from(["trian", "Train", "extra", "0"])
mutations = st.one_of(
    st.tuples(st.just("set"), section_names, st.sampled_from(KEYS) | st.text(max_size=8), values),
    st.tuples(st.just("drop_key"), section_names, st.sampled_from(KEYS)),
    st.tuples(st.just("drop_section"), section_names),
    st.tuples(st.just("replace_section"), section_names, values),
)


def flow(value: Any) -> str:
    """One value as flow-style YAML on one line (Raw text as is)."""
    if isinstance(value, Raw):
        return str(value)
    return yaml.safe_dump([value], default_flow_style=True, width=1 << 30).strip()[1:-1]


def render(params: dict[Any, Any]) -> str:
    lines = []
    for section, body in params.items():
        if isinstance(body, dict):
            lines.append(f"{flow(section)}:")
            lines += [f"  {flow(key)}: {flow(value)}" for key, value in body.items()] or ["  {}"]
        else:
            lines.append(f"{flow(section)}: {flow(body)}")
    return "\n".join(lines) + "\n"


def apply(edits: list[tuple]) -> tuple[dict[Any, Any], set[str]]:
    """The edited params and the names a message about them may quote."""
    params: dict[Any, Any] = {s: dict(body) for s, body in BASE.items()}
    names = {"params.yaml"}
    for edit in edits:
        kind, section = edit[0], edit[1]
        names.add(f"'{section}'")
        if kind == "set":
            body = params.get(section)
            params[section] = {**(body if isinstance(body, dict) else {}), edit[2]: edit[3]}
            names.add(f"{section}.")
        elif kind == "drop_key" and isinstance(params.get(section), dict):
            params[section].pop(edit[2], None)
            names.add(f"{section}.")
        elif kind == "drop_section":
            params.pop(section, None)
        elif kind == "replace_section":
            params[section] = edit[2]
    return params, names


def run_params_stage(text: str, ws: Path) -> tuple[int, str]:
    """The `params` stage's own entry point on ``text``, in the empty folder ``ws``: (exit code, stderr)."""
    (ws / "params.yaml").write_text(text)
    err = io.StringIO()
    code = 0
    with contextlib.chdir(ws), contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            run_stage(STAGE["main"], keeps_outputs=True)
        except SystemExit as exc:
            code = exc.code
    return code, err.getvalue()


@pytest.mark.slow
@fuzz(300)
@given(st.lists(mutations, min_size=1, max_size=3))
def test_any_edit_of_params_passes_or_fails_in_one_line(edits: list[tuple]):
    params, names = apply(edits)
    with time_limit(20), tempfile.TemporaryDirectory(prefix="fuzz-params-") as folder:  # 300 a run: none left
        ws = Path(folder)
        code, err = run_params_stage(render(params), ws)
        _check_outcome(code, err, ws, names)


def _check_outcome(code: int, err: str, ws: Path, names: set[str]) -> None:
    marker = ws / MARKER
    assert not [p for p in ws.rglob("*.tmp")], "a temporary file was left behind"
    event("valid" if code == 0 else "rejected")
    if code == 0:
        assert err == "" and marker.read_bytes() == MARKER_TEXT
        for name in SECTIONS:  # every stage's own loader agrees, and DVC's YAML round trip keeps the values
            cfg = load_section(name, ws / "params.yaml")
            assert parse_section(name, yaml.safe_load(yaml.safe_dump(to_dict(cfg)))) == cfg
        return
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    assert any(name in lines[0] for name in names), (lines[0], names)
    assert not marker.exists()


@pytest.mark.slow
@fuzz(8)
@given(st.lists(mutations, min_size=1, max_size=2))
def test_the_stage_command_itself(edits: list[tuple]):
    """A few examples as DVC runs them: `python stages/params.py`, a real process with its own exit code."""
    params, _ = apply(edits)
    with tempfile.TemporaryDirectory() as ws:
        Path(ws, "params.yaml").write_text(render(params))
        env = {k: v for k, v in os.environ.items() if k != "WGAN_DEBUG"} | {"PYTHONPATH": str(REPO / "src")}
        proc = subprocess.run(
            [sys.executable, str(REPO / "stages/params.py")],
            cwd=ws,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode in (0, 2), proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.splitlines()) == (proc.returncode == 2), proc.stderr


def test_oddities_render_as_written():
    """The generator writes what a user types: `lr: 1e-4` is YAML's string, `.nan` its NaN."""
    text = render({"train": {"lr": Raw("1e-4"), "clip_value": Raw(".nan"), "n_critic": 5}})
    assert yaml.safe_load(text) == {"train": {"lr": "1e-4", "clip_value": yaml.safe_load(".nan"), "n_critic": 5}}
