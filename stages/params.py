"""DVC stage `params`: validate every section of params.yaml before any other stage runs.

DVC deletes a stage's outputs just before it runs the stage's command, so a bad value caught by the stage
itself would already have cost the last run's models and curves. Every other stage depends on this one,
whose output never changes: a bad value fails here, before anything is deleted, and a good change reruns
only the stages that track its section.
"""

from pathlib import Path

from wgan.cli import run_stage
from wgan.config import check_params
from wgan.errors import UserError
from wgan.fileio import atomic_write_bytes

MARKER = Path("data/params.ok")
MARKER_TEXT = b"params.yaml passed validation (stages/params.py)\n"  # fixed bytes: downstream deps never change
RECOVERY = (
    "no stage ran and no output was removed: fix params.yaml "
    "(`git checkout params.yaml` goes back to the committed values) and run again"
)


def main() -> None:
    try:
        check_params()
    except UserError as exc:
        raise UserError(f"{exc}; {RECOVERY}") from exc
    atomic_write_bytes(MARKER, MARKER_TEXT)
    print(f"params.yaml is valid; wrote {MARKER}")


if __name__ == "__main__":
    run_stage(main, keeps_outputs=True)
