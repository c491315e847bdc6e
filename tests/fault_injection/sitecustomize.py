"""Loaded by every Python process of a test that puts this folder on PYTHONPATH: injects one fault.

WGAN_FAULT=enospc: every os.fsync fails with ENOSPC, as a write on a full disk does once its data reaches the
device. The project's atomic writers must then leave no truncated output.

The chaos faults (tests/test_chaos.py) fire once per test, the first time their point is reached: the process
creates WGAN_FAULT_ONCE (a path), SIGKILLs the process group WGAN_FAULT_PGID when set (torchrun's workers
have their own sessions: they outlive it, as after a `kill -9 -PGID`), then sends itself WGAN_FAULT_SIGNAL
(default KILL; STOP hangs it):
  WGAN_FAULT=iteration  a training process of rank WGAN_FAULT_RANK (default 0) at iteration WGAN_FAULT_AT;
  WGAN_FAULT=checkpoint the process writing checkpoint number WGAN_FAULT_AT, once half the file is on disk;
  WGAN_FAULT=deliver    the process that starts writing the output WGAN_FAULT_FILE (e.g. critic.pt);
  WGAN_FAULT=lock       `dvc` as it is about to write the train stage's entry in dvc.lock (the stage has ended).
Iterations are counted as progress-bar updates of the train stage (one per iteration, on every rank).
"""

import errno
import os
import signal
import sys

MODE = os.environ.get("WGAN_FAULT")

if MODE == "enospc":

    def _full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    os.fsync = _full_disk


def _fire() -> None:
    """The fault, unless it already fired in this test (a rerun or a restart must run clean)."""
    once = os.environ["WGAN_FAULT_ONCE"]
    try:
        os.close(os.open(once, os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return
    if os.environ.get("WGAN_FAULT_PGID"):  # the whole stage: `dvc`, the stage, torchrun's agent (a power cut)
        os.killpg(int(os.environ["WGAN_FAULT_PGID"]), signal.SIGKILL)
    os.kill(os.getpid(), signal.Signals["SIG" + os.environ.get("WGAN_FAULT_SIGNAL", "KILL")])


AT = int(os.environ.get("WGAN_FAULT_AT", "0"))

if MODE == "iteration" and os.environ.get("RANK", "0") == os.environ.get("WGAN_FAULT_RANK", "0"):
    import tqdm

    _update = tqdm.tqdm.update
    _done = [0]

    def _counting_update(self, n=1):
        if sys.argv[0].endswith("train.py"):
            _done[0] += n
            if _done[0] == AT:
                _fire()
        return _update(self, n)

    tqdm.tqdm.update = _counting_update

elif MODE in ("checkpoint", "deliver"):
    import io

    import torch

    _save = torch.save
    _writes = [0]

    def _faulty_save(obj, f, *args, **kwargs):
        name = os.path.basename(getattr(f, "name", ""))  # atomic writes go to ".NAME.<random>.tmp" beside NAME
        if MODE == "deliver" and name.startswith("." + os.environ["WGAN_FAULT_FILE"] + "."):
            _fire()
        if MODE == "checkpoint" and isinstance(obj, dict) and obj.get("format") == "wgan-checkpoint-v1":
            _writes[0] += 1
            if _writes[0] == AT:
                buf = io.BytesIO()
                _save(obj, buf, *args, **kwargs)
                f.write(buf.getvalue()[: buf.tell() // 2])
                f.flush()
                _fire()
        return _save(obj, f, *args, **kwargs)

    torch.save = _faulty_save

elif MODE == "lock" and os.path.basename(sys.argv[0]) == "dvc":
    import dvc.dvcfile

    _dump_stages = dvc.dvcfile.Lockfile.dump_stages

    def _faulty_dump_stages(self, stages, **kwargs):
        if any(stage.name == "train" for stage in stages):
            _fire()
        return _dump_stages(self, stages, **kwargs)

    dvc.dvcfile.Lockfile.dump_stages = _faulty_dump_stages
