"""DVC stage `train`: params.yaml's train section + data/prepared/*.pt -> models/*.pt, models/kept/ and dvclive/.

The prepare section is read only to refuse prepared data made with another normalization.
Ctrl-C or SIGTERM saves a resumable checkpoint and exits 130 or 143; a NaN loss exits 2 (see wgan.training.loop).
The checkpoint lives in the run state (.dvc/tmp/wgan/train/, not a DVC output: wgan.paths), and the outputs are
written at the end, before the checkpoint is marked finished, so a kill while writing them loses no training.
With WGAN_NPROC=N (and WGAN_TORCHRUN for several machines) the stage relaunches itself as N torchrun workers
(wgan.launch); under torchrun each worker joins the process group (wgan.training.distributed) and only rank 0 writes.
WGAN_MAX_RESTARTS=N lets torchrun restart the group after a worker dies or hangs; each rank resumes from the checkpoint.
"""

from __future__ import annotations

import sys

from wgan import launch
from wgan.config import load_section
from wgan.data.model_file import save_model
from wgan.data.samples import save_samples
from wgan.device import choose_device
from wgan.fileio import remove_stale_temps
from wgan.paths import TrainPaths
from wgan.stage import run_stage
from wgan.training.distributed import process_group
from wgan.training.loop import TrainResult, train


def main() -> None:
    cfg = load_section("train")
    prepare = load_section("prepare")  # only to check that the prepared data is current
    paths = TrainPaths()
    device = choose_device()  # checked before any process starts, like the params
    if launch.wanted():
        sys.exit(launch.relaunch(__file__))

    def deliver(result: TrainResult) -> None:
        save_model(result.generator, paths.generator, result.norm)  # how `wgan sample` maps it back to pixels
        save_model(result.critic, paths.critic)
        save_samples(result.samples, paths.samples)
        print(f"wrote {paths.generator}, {paths.critic}, {paths.samples} after {result.iterations} iterations")

    with process_group(device) as world:
        if world.is_main and launch.restart_count():
            print(f"restart {launch.restart_count()} of the training processes (WGAN_MAX_RESTARTS, torchrun)")
        if world.is_main:
            # temp files of writes a SIGKILL cut short (DVC's lock on the outputs keeps other runs from writing them)
            for output in (paths.checkpoint, paths.generator, paths.critic, paths.samples, paths.kept, paths.live_dir):
                for stale in remove_stale_temps(output):
                    print(f"removed {stale}, left by an interrupted write")
        device = world.device(device)
        norm = (prepare.mean, prepare.std)
        train(cfg, paths, device, world, norm=norm, deliver=deliver)


if __name__ == "__main__":
    run_stage(main)
