"""Orbax checkpoints of a TrainState, written atomically (orbax writes to a temporary
directory and renames it when complete).

Layout under a run's workdir:  checkpoints/<step>/...   (orbax CheckpointManager);
checkpoints that could not be read when training resumed are moved to corrupt_checkpoints/<step>.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import serialization

CHECKPOINT_DIR = "checkpoints"
CORRUPT_DIR = "corrupt_checkpoints"


def checkpoint_manager(ckpt_dir: str, *, max_to_keep: int = 3, create: bool = True):
    """A synchronous orbax CheckpointManager for `ckpt_dir` (an absolute path is used)."""
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=create, enable_async_checkpointing=False
    )
    return ocp.CheckpointManager(os.path.abspath(ckpt_dir), options=options)


def latest_step(ckpt_dir: str) -> int | None:
    """The newest complete checkpoint step under `ckpt_dir`, or None if there is none."""
    if not os.path.isdir(ckpt_dir):
        return None
    with checkpoint_manager(ckpt_dir, create=False) as mngr:
        return mngr.latest_step()


def save_checkpoint(mngr, step: int, state) -> None:
    """Save `state` (any flax-serialisable pytree) at `step`; blocks until it is complete."""
    tree = serialization.to_state_dict(jax.device_get(state))
    mngr.save(int(step), args=ocp.args.StandardSave(tree), force=True)
    mngr.wait_until_finished()


def restore_checkpoint(ckpt_dir: str, target, *, step: int | None = None):
    """(state, step): a checkpoint restored into the structure of `target`.

    `step` None restores the newest intact checkpoint: an unreadable newer one is skipped with a
    warning on stderr that names it. Raises ValueError naming the folder when there is no
    checkpoint, no such `step`, or none (or `step`) can be read into `target`'s structure
    (corrupt, or from a different model).
    """
    if not os.path.isdir(ckpt_dir):
        raise ValueError(f"checkpoint: no checkpoint folder {ckpt_dir!r}")
    _quiet_read_leftovers()
    template = serialization.to_state_dict(jax.device_get(target))
    errors = []
    with checkpoint_manager(ckpt_dir, create=False) as mngr:
        steps = sorted(mngr.all_steps(), reverse=True)
        if not steps:
            raise ValueError(f"checkpoint: no checkpoint in {ckpt_dir!r}")
        if step is not None and step not in steps:
            raise ValueError(f"checkpoint: no step {step} in {ckpt_dir!r} (have {sorted(steps)})")
        for s in steps if step is None else [step]:
            try:
                state = _restore_step(mngr, s, target, template, ckpt_dir)
            except ValueError as e:
                errors.append((s, e))
                continue
            if errors:
                skipped = "; ".join(str(e) for _, e in errors)
                print(f"jaxrej: warning: {skipped}; using step {s} instead, the newest intact "
                      "checkpoint", file=sys.stderr)  # fmt: skip
            return state, s
    older = sorted(s for s, _ in errors[1:])
    tail = f"; the older checkpoint(s) {older} cannot be restored either" if older else ""
    raise ValueError(f"{errors[0][1]}{tail}") from errors[0][1]


def _restore_step(mngr, step: int, target, template, ckpt_dir: str):
    """`target`'s structure filled from checkpoint `step`; ValueError if it cannot be."""
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, template)
    try:
        tree = mngr.restore(step, args=ocp.args.StandardRestore(abstract))
        state = serialization.from_state_dict(target, tree)
    except Exception as e:  # orbax/tensorstore raise many types for unreadable data
        raise ValueError(
            f"checkpoint: cannot restore step {step} from {ckpt_dir!r} "
            f"(corrupt or from a different model): {type(e).__name__}: {_short(e)}"
        ) from e
    bad = [
        p
        for p, a, b in zip(
            jax.tree_util.tree_leaves_with_path(template),
            jax.tree_util.tree_leaves(template),
            jax.tree_util.tree_leaves(serialization.to_state_dict(state)),
            strict=True,
        )
        if np.shape(a) != np.shape(b)
    ]
    if bad:
        raise ValueError(
            f"checkpoint: step {step} in {ckpt_dir!r} has mismatched shapes at {bad[:3]}"
        )
    return state


def set_aside(ckpt_dir: str, steps) -> list[str]:
    """Move checkpoints `steps` out of `ckpt_dir` (where orbax would trip over them) into the
    sibling folder corrupt_checkpoints/<step>, kept for inspection; returns their new paths."""
    parent = os.path.join(os.path.dirname(os.path.abspath(ckpt_dir)), CORRUPT_DIR)
    moved = []
    for s in steps:
        dest, n = os.path.join(parent, str(s)), 1
        while os.path.exists(dest):
            dest, n = os.path.join(parent, f"{s}.{n}"), n + 1
        os.makedirs(parent, exist_ok=True)
        shutil.move(os.path.join(ckpt_dir, str(s)), dest)
        moved.append(dest)
    return moved


def _short(e: Exception, limit: int = 300) -> str:
    """An orbax/tensorstore message without its tensorstore spec, at most `limit` characters."""
    msg = str(e).split(" [tensorstore_spec=")[0]
    return msg if len(msg) <= limit else msg[: limit - 3] + "..."


def _is_closed_loop(exc) -> bool:
    return isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed"


def _is_read_leftover(exc) -> bool:
    """A concurrent read's failure that the failed restore already reports: the closed loop, or
    a tensorstore read error (its message carries the tensorstore spec)."""
    return _is_closed_loop(exc) or "[tensorstore_spec=" in str(exc)


class _ReadLeftoverFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and _is_read_leftover(record.exc_info[1]))


_QUIETED = False


def _quiet_read_leftovers() -> None:
    """Drop the duplicate reports a failed restore leaves behind, nothing else.

    Orbax reads a checkpoint's arrays concurrently in an event loop that it closes as soon as
    one read fails; the reads still in flight then finish on tensorstore's threads and report
    RuntimeError("Event loop is closed") through sys.unraisablehook, and asyncio logs
    "Task/Future exception was never retrieved" for that error or for the other reads' own
    tensorstore errors (which of them appear depends on timing). The failure itself is
    reported once, by `restore_checkpoint`'s ValueError. Installed once per process.
    """
    global _QUIETED
    if _QUIETED:
        return
    previous = sys.unraisablehook

    def hook(unraisable):
        if not _is_read_leftover(unraisable.exc_value):
            previous(unraisable)

    sys.unraisablehook = hook
    logging.getLogger(asyncio.__name__).addFilter(_ReadLeftoverFilter())
    _QUIETED = True
