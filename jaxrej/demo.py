"""The demo's sequence (`jaxrej demo`), on plain values: 1. the score-based generative
classifier (`training.run.train_run`) into WORKDIR/sbgc, 2. the base classifier and reject heads
(`eval.heads.run_heads`) into WORKDIR/heads, unless a finished heads run is there, 3. every
scorer's clean, corruption, OOD and adversarial tables (`eval.runs.evaluate_workdir`) into
WORKDIR/evaluate*/. Re-running reuses what is already trained and scored.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping
from typing import Any


def run_demo(workdir: str, *, sbgc, heads: Mapping[str, Any], evaluate: Mapping[str, Any],
             progress: bool = True) -> dict:  # fmt: skip
    """Run the three steps (module doc) in `workdir`: sbgc, the score model's run to train
    (`jaxrej.config.NewRun`, `train_run`); heads, `run_heads` keywords (data, options, seed, config); evaluate,
    `evaluate_workdir` keywords. Returns the evaluation's summary with the seconds per step."""
    import dataclasses

    from jaxrej.eval.heads import run_heads
    from jaxrej.eval.runs import evaluate_workdir
    from jaxrej.scorers.heads import HEADS_FILE
    from jaxrej.training.run import train_run

    os.makedirs(workdir, exist_ok=True)
    t0 = time.time()
    times = {}
    print("jaxrej demo: 1/3 score-based classifier (jaxrej train)", file=sys.stderr)
    train_run(sbgc, os.path.join(workdir, "sbgc"), progress=progress)
    times["train_s"] = time.time() - t0
    hdir = os.path.join(workdir, "heads")
    if os.path.isfile(os.path.join(hdir, HEADS_FILE)) and os.path.isfile(
        os.path.join(hdir, "heads.json")
    ):
        print(f"jaxrej demo: 2/3 heads already in {hdir!r}, reused", file=sys.stderr)
    else:
        print("jaxrej demo: 2/3 base classifier and reject heads (jaxrej heads)", file=sys.stderr)
        kw = dict(heads)
        kw["options"] = dataclasses.replace(kw["options"], progress=progress)
        run_heads(hdir, **kw)
    times["heads_s"] = time.time() - t0 - times["train_s"]
    print("jaxrej demo: 3/3 evaluation (jaxrej evaluate)", file=sys.stderr)
    summary = evaluate_workdir(workdir, **evaluate, progress=progress)
    times["evaluate_s"] = time.time() - t0 - times["train_s"] - times["heads_s"]
    return {**summary, "seconds": {k: round(v, 1) for k, v in times.items()},
            "total_s": round(time.time() - t0, 1)}  # fmt: skip
