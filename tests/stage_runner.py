"""Stage scripts run in forked children of one process that has imported torch and the library once.

A stage script started in a fresh interpreter spends seconds importing torch before it reads a byte, and the
tests start about a hundred of them (the bad-input cases alone, fifty). This module is both ends of a smaller
cost: run as a script it is the *zygote*, which imports the stages' modules once and then, for each request on
its standard input, forks a child that becomes ``python stages/<name>.py`` (its own working folder, environment,
argv, standard streams and exit code, the script run as ``__main__``, the interpreter's own exit: atexit
handlers, non-daemon threads, flushed streams). Imported, ``Zygote`` is the client ``conftest.run_stage_script``
uses. A run that needs a fresh interpreter (an environment with its own PYTHONPATH: the fault-injection
``sitecustomize`` loads at interpreter start) is not for the zygote; the caller starts a real one instead.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

# What the stage scripts import: the zygote imports them before it forks, so no child pays for them again.
PRELOAD = (
    "torch",
    "torchvision",
    "dvclive",
    "PIL.Image",
    "wgan.stage",
    "wgan.config",
    "wgan.launch",
    "wgan.training.loop",
    "wgan.training.distributed",
    "wgan.evaluation.evaluate",
    "wgan.quality.quality",
    "wgan.classifier.classifier",
    "wgan.judge.judge",
    "wgan.images.render",
    "wgan.images.generate",
    "wgan.images.gif",
    "wgan.download.mnist",
    "wgan.data.prepare",
)


class Zygote:
    """The client: one zygote process, started on first use, serving one run at a time."""

    def __init__(self, pythonpath: str) -> None:
        self.pythonpath = pythonpath
        self.proc: subprocess.Popen[str] | None = None

    def run(
        self, script: Path, cwd: Path, env: dict[str, str], timeout: float, args: tuple[str, ...] = ()
    ) -> subprocess.CompletedProcess[str]:
        if self.proc is None or self.proc.poll() is not None:
            zygote_env = {**os.environ, "PYTHONPATH": self.pythonpath, "OMP_NUM_THREADS": "1"}
            self.proc = subprocess.Popen(
                [sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=zygote_env
            )
        with tempfile.TemporaryDirectory(prefix="stage-run-") as tmp:
            out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
            request = {"script": str(script), "args": list(args), "cwd": str(cwd), "env": env, "timeout": timeout}
            assert self.proc.stdin is not None and self.proc.stdout is not None
            self.proc.stdin.write(json.dumps(request | {"stdout": str(out), "stderr": str(err)}) + "\n")
            self.proc.stdin.flush()
            reply = json.loads(self.proc.stdout.readline() or '{"error": "the zygote died"}')
            if "error" in reply:
                raise RuntimeError(reply["error"])
            command = [sys.executable, str(script), *args]
            if reply["timed_out"]:
                raise subprocess.TimeoutExpired(command, timeout, out.read_text(), err.read_text())
            return subprocess.CompletedProcess(command, reply["returncode"], out.read_text(), err.read_text())

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait(timeout=30)


def _become(request: dict[str, Any]) -> None:
    """In the forked child: take the cwd, environment, argv and standard streams of the run asked for."""
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 (the interpreter's own streams, closed at its exit)
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", closefd=False, errors="backslashreplace", buffering=1)  # noqa: SIM115
    sys.argv = [request["script"], *request["args"]]
    sys.path[0] = os.path.dirname(request["script"])  # as `python script.py` sets it
    import torch

    torch.set_num_threads(int(request["env"].get("OMP_NUM_THREADS") or os.cpu_count() or 1))


def _wait(pid: int, timeout: float) -> tuple[int, bool]:
    """The child's exit code (negative: the signal that ended it), and whether it was killed for the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status), False
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), True
        time.sleep(0.005)


def _exit(exc: BaseException | None) -> None:
    """End the child as the interpreter ends a script: the uncaught exception reported, non-daemon threads joined,
    atexit handlers run, streams flushed, the exit code of ``SystemExit``. Without the interpreter's teardown of
    every module (a second and a half with torch loaded), which changes no output."""
    code = 0
    if isinstance(exc, SystemExit):
        if isinstance(exc.code, int) or exc.code is None:
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    elif exc is not None:
        sys.excepthook(type(exc), exc, exc.__traceback__)
        code = 1
    threading._shutdown()  # what Py_FinalizeEx does first
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    if isinstance(exc, KeyboardInterrupt):  # the interpreter exits by SIGINT then
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(code & 0xFF)


def serve() -> None:
    """The zygote: import once, then one forked child per request line, one reply line each."""
    import importlib
    import runpy

    for name in PRELOAD:
        importlib.import_module(name)
    reply = sys.stdout
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:  # the child never returns to this loop
            _become(request)
            try:
                runpy.run_path(request["script"], run_name="__main__")
            except BaseException as exc:  # handled as the interpreter would, below
                _exit(exc)
            _exit(None)
        code, timed_out = _wait(pid, request["timeout"])
        reply.write(json.dumps({"returncode": code, "timed_out": timed_out}) + "\n")
        reply.flush()


if __name__ == "__main__":
    serve()
