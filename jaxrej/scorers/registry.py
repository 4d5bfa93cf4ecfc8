"""One registry of scorers: names -> loaders, and the runs a workdir holds.

    runs = find_runs("runs/demo")     # {"sbgc": dir, "msp": dir, ..., "abs": dir}
    sc = load("runs/demo", "sbgc")    # a jaxrej.scorers.Scorer (judge + attack view)

Kinds of run (in the workdir itself or one level below it): a trained score model (config.json
and checkpoints/, `jaxrej train`) gives "sbgc" (log p(x | y) by the ODE) or "elbo" (the denoising
bound), the one its eval.scorer names ("ode" -> "sbgc"); either can be loaded by name from it.
An ABS run (the same files, model.name = 'abs') gives "abs". Saved reject heads
(`jaxrej heads`) give every name of HEAD_SCORERS.
"""

from __future__ import annotations

import json
import os

from jaxrej.config import run_kind, run_scorer
from jaxrej.scorers.heads import HEAD_SCORERS, HEADS_FILE

__all__ = ["NAMES", "BATCH_SIZES", "find_runs", "load"]

NAMES = ("sbgc", "elbo", "abs", *HEAD_SCORERS)
# rows per compiled call where a command names none
BATCH_SIZES = {"sbgc": 36, "elbo": 36, "abs": 100, **{k: 256 for k in HEAD_SCORERS}}


def _config(d: str):
    try:
        with open(os.path.join(d, "config.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _kind(d: str) -> str | None:
    """'score', 'abs', 'heads' or None for a folder."""
    if os.path.isfile(os.path.join(d, HEADS_FILE)):
        return "heads"
    cfg = _config(d)
    if cfg is None or not os.path.isdir(os.path.join(d, "checkpoints")):
        return None
    return run_kind(cfg)


def find_runs(workdir: str) -> dict[str, str]:
    """{scorer name: run folder} for the runs in `workdir` and its immediate sub-folders (module
    doc; the first run of a kind in sorted order wins, `several` in the notes of `run_notes`).
    ValueError when there is none."""
    if not os.path.isdir(workdir):
        raise ValueError(f"--workdir: no such directory {workdir!r}")
    dirs = [workdir] + sorted(
        os.path.join(workdir, d)
        for d in os.listdir(workdir)
        if os.path.isdir(os.path.join(workdir, d)) and not d.startswith(".")
    )
    out: dict[str, str] = {}
    for d in dirs:
        kind = _kind(d)
        if kind == "heads":
            for k in HEAD_SCORERS:
                out.setdefault(k, d)
        elif kind == "abs":
            out.setdefault("abs", d)
        elif kind == "score":
            out.setdefault("elbo" if run_scorer(_config(d)) == "elbo" else "sbgc", d)
    if not out:
        raise ValueError(
            f"--workdir: {workdir!r} holds no trained score model (config.json + checkpoints/, "
            f"`jaxrej train`) and no saved heads ({HEADS_FILE}, `jaxrej heads`), neither in it "
            "nor one level below"
        )
    return out


def run_kinds(workdir: str) -> dict[str, list[str]]:
    """{'score' | 'abs' | 'heads': [run folders]} of `workdir` and its sub-folders."""
    dirs = [workdir] + sorted(
        os.path.join(workdir, d)
        for d in os.listdir(workdir)
        if os.path.isdir(os.path.join(workdir, d)) and not d.startswith(".")
    )
    out: dict[str, list[str]] = {"score": [], "abs": [], "heads": []}
    for d in dirs:
        k = _kind(d)
        if k:
            out[k].append(d)
    return out


def load(workdir: str, name: str, *, batch_size: int | None = None, **options):
    """The Scorer `name` (NAMES) of the run in `workdir` (the run folder itself, or a folder
    holding it one level below). options: the loader's keywords (`view=ViewOptions(...)`)."""
    from jaxrej.scorers import heads, sbgc

    if name not in NAMES:
        raise ValueError(f"name: expected one of {NAMES}, got {name!r}")
    bs = batch_size or BATCH_SIZES[name]
    kind = _kind(workdir)
    if kind is None or (name in HEAD_SCORERS) != (kind == "heads"):
        runs = run_kinds(workdir)
        want = "heads" if name in HEAD_SCORERS else "abs" if name == "abs" else "score"
        if not runs[want]:
            raise ValueError(f"--workdir: {workdir!r} holds no run with a {name!r} scorer")
        workdir = runs[want][0]
    if name in HEAD_SCORERS:
        return heads.heads_scorer(workdir, name, batch_size=bs, **options)
    if name == "abs":
        return abs_scorer(workdir, batch_size=bs)
    if name == "elbo":
        return sbgc.elbo_scorer(workdir, batch_size=bs, **options)
    return sbgc.sbgc_scorer(workdir, batch_size=bs, **options)


def abs_scorer(run_dir: str, *, batch_size: int, name: str = "abs"):
    """The ABS run's class bounds (`jaxrej.abs.ABSScorer`, the run's eval settings) as a Scorer:
    label-blind and deterministic; its attack view is itself, for a binary model (`model.binarize`)
    with the threshold differentiated straight through (the same scores, a nonzero gradient)."""
    from jaxrej.abs.scorer import load_scorer
    from jaxrej.scorers.base import AttackView, Scorer

    sc, step = load_scorer(run_dir)
    settings = json.dumps({"run": os.path.abspath(run_dir), "step": step, "options": repr(sc.options),
                           "model": repr(sc.model), "batch_size": batch_size})  # fmt: skip
    view = None
    if sc.model.binarize is not None:
        view = lambda labels: AttackView(sc.replace(straight_through=True))  # noqa: E731
    return Scorer(name=name, fn=sc, num_classes=sc.model.num_classes, batch_size=batch_size,
                  settings=settings, view=view)  # fmt: skip
