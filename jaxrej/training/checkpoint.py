"""Orbax checkpoints of a TrainState, written atomically (orbax writes to a temporary
directory and renames it when complete), plus atomic small-file writes.

Layout under a run's workdir:  checkpoints/<step>/...   (orbax CheckpointManager).
"""

from __future__ import annotations

import json
import os
import tempfile

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import serialization

CHECKPOINT_DIR = "checkpoints"


def atomic_write_text(path: str, text: str) -> None:
    """Write `text` to `path` via a temporary file in the same folder and os.replace."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def atomic_save_npz(path: str, **arrays) -> None:
    """np.savez to a temporary file, then os.replace onto `path`."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".npz")
    os.close(fd)
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


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
    """Restore a checkpoint into the structure of `target` (latest step if `step` is None).

    Raises ValueError naming the folder if there is no checkpoint, or if it cannot be read
    or does not match the structure of `target` (a corrupt or foreign checkpoint).
    """
    if not os.path.isdir(ckpt_dir):
        raise ValueError(f"checkpoint: no checkpoint folder {ckpt_dir!r}")
    with checkpoint_manager(ckpt_dir, create=False) as mngr:
        if step is None:
            step = mngr.latest_step()
        if step is None:
            raise ValueError(f"checkpoint: no checkpoint in {ckpt_dir!r}")
        if step not in mngr.all_steps():
            raise ValueError(
                f"checkpoint: no step {step} in {ckpt_dir!r} (have {mngr.all_steps()})"
            )
        template = serialization.to_state_dict(jax.device_get(target))
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, template)
        try:
            tree = mngr.restore(step, args=ocp.args.StandardRestore(abstract))
            state = serialization.from_state_dict(target, tree)
        except Exception as e:  # orbax/tensorstore raise many types for unreadable data
            raise ValueError(
                f"checkpoint: cannot restore step {step} from {ckpt_dir!r} "
                f"(corrupt or from a different model): {type(e).__name__}: {e}"
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
    return state, step
