"""The trained digits model every model benchmark uses: the README main job's run folder.

`ensure_trained(workdir)` trains `configs/digits_sbgc.py` there first when the folder holds no
checkpoint (about 10 minutes on 2 CPU cores), so each benchmark runs on a fresh clone.
"""

from __future__ import annotations

import os

WORKDIR = "runs/digits"
CONFIG = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", "digits_sbgc.py")


def ensure_trained(workdir: str = WORKDIR) -> str:
    """workdir, after training the default digits model into it if it has no checkpoint yet."""
    from jaxrej.cli import main
    from jaxrej.training.checkpoint import CHECKPOINT_DIR

    ckpt = os.path.join(workdir, CHECKPOINT_DIR)
    if not (os.path.isdir(ckpt) and os.listdir(ckpt)):
        print(f"no trained run at {workdir!r}: training {CONFIG} there first")
        if main(["train", "--config", CONFIG, "--workdir", workdir, "--no-progress"]) != 0:
            raise SystemExit(f"training into {workdir!r} failed")
    return workdir
