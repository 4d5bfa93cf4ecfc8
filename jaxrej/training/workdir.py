"""A training run on disk, and the objects built from its plain-value settings.

workdir/config.json        the run's config (plain JSON, written once, atomically)
workdir/checkpoints/<s>/   orbax TrainState checkpoints
workdir/corrupt_checkpoints/<s>/   unreadable checkpoints that a resumed `train` moved aside
workdir/metrics.jsonl      JSON lines: step, loss, grad_norm, eval_loss_ema, time_s
workdir/<command>.json     each command's summary (train.json, score_<set>[_limit<N>].json, heads*.json)

score_fn, params, sde, config = load_score_model("runs/digits")
score_fn(params, x, t, y)   # ONE example; params are the EMA params of the newest intact checkpoint
load_trained("runs/digits").step   # ... and which checkpoint that was
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import NamedTuple

import jax

from jaxrej.sde import VESDE, VPSDE, SubVPSDE

CONFIG_FILE = "config.json"
SDES = {"vpsde": VPSDE, "subvpsde": SubVPSDE, "vesde": VESDE}


def build_sde(name: str, **kwargs):
    """VPSDE / SubVPSDE / VESDE from a name and its own fields (others are ignored)."""
    if name not in SDES:
        raise ValueError(f"sde.name: expected one of {sorted(SDES)}, got {name!r}")
    cls = SDES[name]
    fields = {"vpsde": ("beta_min", "beta_max"), "subvpsde": ("beta_min", "beta_max"),
              "vesde": ("sigma_min", "sigma_max")}[name]  # fmt: skip
    try:
        return cls(**{k: float(kwargs[k]) for k in fields if k in kwargs})
    except ValueError as e:
        raise ValueError(f"sde: {e}") from e


ARCHITECTURES = ("mlp", "unet")


def _net_class(name: str):
    if name == "mlp":
        from jaxrej.models.mlp import ConditionalMLP as cls
    elif name == "unet":
        from jaxrej.models.unet import ConditionalUNet as cls
    else:
        raise ValueError(f"model.name: expected one of {list(ARCHITECTURES)}, got {name!r}")
    return cls


def net_fields(name: str, **kwargs) -> dict:
    """The keyword values of architecture `name` from a model section's fields.

    Two forms: flat (every field belongs to `name`: {"hidden": 512, ...}) or with one sub-section
    per architecture ({"mlp": {...}, "unet": {...}}), of which `name` picks its own; flat fields
    beside the sub-sections (e.g. "conditioning") apply to whichever architecture is picked and
    replace its section's value. So one config can switch with `--config.model.name=mlp`.
    """
    sections = {k: v for k, v in kwargs.items() if k in ARCHITECTURES}
    fields = {k: v for k, v in kwargs.items() if k not in ARCHITECTURES}
    for k, v in sections.items():
        if not isinstance(v, dict):
            raise ValueError(f"model.{k}: expected a section of {k!r} fields, got {v!r}")
    if name in sections:
        fields = {**sections[name], **fields}
    return fields


def build_net(name: str, *, num_classes: int, **kwargs):
    """The flax module for model `name` ("mlp" | "unet") with its fields as keyword values
    (flat, or in per-architecture sections: `net_fields`)."""
    cls = _net_class(name)
    kwargs = net_fields(name, **kwargs)
    known = set(cls.__dataclass_fields__) - {"parent", "name", "num_classes"}
    unknown = set(kwargs) - known
    if unknown:
        raise ValueError(
            f"model: {name!r} has no field(s) {sorted(unknown)}; known: {sorted(known)}"
        )
    kwargs = {k: _tuples(v) for k, v in kwargs.items()}
    return cls(num_classes=num_classes, **kwargs)


def _tuples(v):
    """JSON's (nested) lists as the (nested) tuples a module field holds."""
    return tuple(_tuples(u) for u in v) if isinstance(v, (list, tuple)) else v


def read_config(workdir: str) -> dict:
    """The run's config.json; ValueError if the workdir or the file is missing or unreadable."""
    if not os.path.isdir(workdir):
        raise ValueError(f"workdir: no such directory {workdir!r}")
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise ValueError(f"workdir: {workdir!r} has no {CONFIG_FILE} (not a training run)")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"workdir: cannot read {path!r}: {e}") from e


def model_from_config(config: dict):
    """(net, sde, event_shape, num_classes, n_levels) from a run's config dict."""
    d = config["data"]
    model = dict(config["model"])
    net = build_net(model.pop("name"), num_classes=int(d["num_classes"]), **model)
    sde_cfg = dict(config["sde"])
    sde = build_sde(sde_cfg.pop("name"), **sde_cfg)
    return net, sde, tuple(d["event_shape"]), int(d["num_classes"]), int(d["n_levels"])


class TrainedModel(NamedTuple):
    """A trained run: score_fn (ONE example), params, sde, config (dict), the checkpoint step and
    label_cutoff, the time below which its net ignores the label (0.0: it never does)."""

    score_fn: Callable
    params: object
    sde: object
    config: dict
    step: int
    label_cutoff: float


def load_trained(workdir: str, *, ema: bool = True, step: int | None = None) -> TrainedModel:
    """The EMA params (or raw, ema=False) of checkpoint `step` of a trained run, or of its newest
    intact checkpoint (an unreadable newer one is skipped with a warning; restore_checkpoint)."""
    from jaxrej.models.score import init_params, make_score_fn
    from jaxrej.training.checkpoint import CHECKPOINT_DIR, restore_checkpoint
    from jaxrej.training.loop import init_train_state, make_optimizer

    config = read_config(workdir)
    net, sde, event_shape, _, _ = model_from_config(config)
    t = config["training"]
    params = init_params(net, event_shape, key=jax.random.key(0))
    opt = make_optimizer(lr=t["lr"], warmup=t["warmup"], grad_clip=t["grad_clip"],
                         weight_decay=t.get("weight_decay", 0.0))  # fmt: skip
    target = init_train_state(params, opt)
    state, step = restore_checkpoint(os.path.join(workdir, CHECKPOINT_DIR), target, step=step)
    params = state.ema_params if ema else state.params
    cutoff = float(getattr(net, "label_cutoff", 0.0))
    return TrainedModel(make_score_fn(net, sde), params, sde, config, int(step), cutoff)


def load_score_model(workdir: str, *, ema: bool = True, step: int | None = None):
    """(score_fn, params, sde, config) of a trained run: `load_trained` without the step."""
    return load_trained(workdir, ema=ema, step=step)[:4]
