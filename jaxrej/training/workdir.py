"""A training run on disk, and the objects built from its plain-value settings.

workdir/config.json        the run's config (plain JSON, written once, atomically)
workdir/checkpoints/<s>/   orbax TrainState checkpoints
workdir/corrupt_checkpoints/<s>/   unreadable checkpoints that a resumed `train` moved aside
workdir/metrics.jsonl      JSON lines: step, loss, grad_norm, eval_loss_ema, time_s
workdir/init_from.json     where a run started by `jaxrej train --init-from` took its first checkpoint
workdir/<command>.json     each command's summary (train.json, score_<set>[_limit<N>].json, heads*.json)

tm = load_trained("runs/digits")   # run: jaxrej.config.load_run("runs/digits"), the config as options
tm.score_fn(tm.params, x, t, y)    # ONE example; the EMA params of the newest intact checkpoint
tm.step, tm.run.data.num_classes   # which checkpoint that was; the run's settings
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import NamedTuple

import jax

from jaxrej.config import config_diff, format_diff
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


TRAIN_FILE = "train.json"
# the fields a resumed run may change without invalidating its checkpoints (None: a whole section)
RESUMABLE_FIELDS = {
    "training": {"n_iters", "log_every", "eval_every", "checkpoint_every", "max_to_keep",
                 "data_parallel", "label_gap_rows"},
    "eval": None,  # the scoring settings
}  # fmt: skip


def fixed_settings(cfg: dict, resumable: dict = RESUMABLE_FIELDS) -> dict:
    """The part of a run's config that a resumed run must share with it: `cfg` less the fields
    (a set per section, or None for a whole section) of `resumable`."""
    out = {}
    for section, value in cfg.items():
        keep = resumable.get(section, set())
        if keep is None:
            continue
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if k not in keep}
        out[section] = value
    return out


def check_run_workdir(workdir: str, cfg: dict, resumable: dict = RESUMABLE_FIELDS) -> bool:
    """Whether `workdir` may take the training run of config `cfg` (JSON form): True when it
    holds this run already (a resume: `config_diff` of their `fixed_settings` is empty), False
    when it holds no run. ValueError, nothing touched, when it is a file, holds a run whose fixed
    settings differ (naming each key with its stored and new value), or holds checkpoints
    without a config.json."""
    from jaxrej.config import config_diff, format_diff
    from jaxrej.training.checkpoint import CHECKPOINT_DIR

    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ValueError(f"workdir: {workdir!r} exists and is not a directory")
    if os.path.isfile(os.path.join(workdir, CONFIG_FILE)):
        diff = config_diff(fixed_settings(read_config(workdir), resumable),
                           fixed_settings(cfg, resumable))  # fmt: skip
        if diff:
            raise ValueError(
                f"workdir: {workdir!r} holds a run with a different config (differs in "
                f"{format_diff(diff)}); use a new --workdir (nothing was changed)"
            )
        return True
    if os.path.isdir(os.path.join(workdir, CHECKPOINT_DIR)):
        raise ValueError(
            f"workdir: {workdir!r} has checkpoints but no {CONFIG_FILE}; refusing to touch it"
        )
    return False


def read_summary(path: str) -> dict | None:
    """The JSON object at `path` (a command's summary, e.g. train.json), or None when there is
    none or it cannot be read."""
    try:
        with open(path) as f:
            out = json.load(f)
    except (OSError, ValueError):
        return None
    return out if isinstance(out, dict) else None


def score_stem(set_name: str, limit: int, scorer: str = "ode", step: int | None = None,
               changed: dict | None = None) -> str:  # fmt: skip
    """'score_<set>[_elbo][_limit<N>][_step<S>][_<field><value>...]': the name of `jaxrej score`'s
    files for a set (jaxrej/commands/score.py); changed: the eval fields a --config.eval
    override set off the run's own."""
    elbo = "_elbo" if scorer == "elbo" else ""
    tags = "".join(f"_{k}{v:g}" if isinstance(v, float) else f"_{k}{v}"
                   for k, v in sorted((changed or {}).items()))  # fmt: skip
    return (f"score_{set_name}{elbo}" + (f"_limit{limit}" if limit else "")
            + ("" if step is None else f"_step{step}") + tags)  # fmt: skip


def load_run_set(field: str, spec: str, split: str, data, limit: int = 0):
    """(images, labels or None) of split `split` of dataset string `spec`, checked against a
    run's data options `data` (`jaxrej.config.RunData`: event_shape, n_levels, num_classes): its
    first `limit` rows (0: all). ValueError naming `field` (the flag that gave the set) for a set
    the run cannot score."""
    from jaxrej.data.registry import load_dataset

    try:
        ds = load_dataset(spec, split, data_dir=data.data_dir)
    except ValueError as e:
        raise ValueError(f"{field}: {e}") from e
    if tuple(ds.images.shape[1:]) != data.event_shape:
        raise ValueError(
            f"{field}: {spec!r} images {ds.images.shape[1:]} differ from the run's "
            f"{data.event_shape}"
        )
    images, labels = ds.images, ds.labels
    if images.size and images.max() >= data.n_levels:
        raise ValueError(
            f"{field}: {spec!r} has pixel levels up to {images.max()}, the run's data has "
            f"{data.n_levels} levels"
        )
    if limit:
        images, labels = images[:limit], None if labels is None else labels[:limit]
    if labels is not None and labels.size and labels.max() >= data.num_classes:
        raise ValueError(f"{field}: labels up to {labels.max()}, expected < {data.num_classes}")
    return images, labels


class TrainedModel(NamedTuple):
    """A trained run: score_fn (ONE example), params, sde, run (its `jaxrej.config.RunSpec`), the
    checkpoint step and label_cutoff, the time below which its net ignores the label (0.0: it
    never does)."""

    score_fn: Callable
    params: object
    sde: object
    run: object
    step: int
    label_cutoff: float


def load_trained(workdir: str, *, ema: bool = True, step: int | None = None,
                 run=None) -> TrainedModel:  # fmt: skip
    """The EMA params (or raw, ema=False) of checkpoint `step` of a trained run, or of its newest
    intact checkpoint (an unreadable newer one is skipped with a warning; restore_checkpoint).
    run: the run's `jaxrej.config.RunSpec` (None: `jaxrej.config.load_run(workdir)`)."""
    from jaxrej.config import load_run
    from jaxrej.models.score import init_params, make_score_fn
    from jaxrej.training.checkpoint import CHECKPOINT_DIR, restore_checkpoint
    from jaxrej.training.loop import init_train_state, make_optimizer

    run = load_run(workdir) if run is None else run
    if run.kind != "score":
        raise ValueError(f"workdir: {workdir!r} is an ABS run, not a score model "
                         "(jaxrej.abs.scorer.load_scorer loads it)")  # fmt: skip
    net, t = run.net, run.training
    params = init_params(net, run.data.event_shape, key=jax.random.key(0))
    opt = make_optimizer(lr=t.lr, warmup=t.warmup, grad_clip=t.grad_clip,
                         weight_decay=t.weight_decay)  # fmt: skip
    target = init_train_state(params, opt)
    state, step = restore_checkpoint(os.path.join(workdir, CHECKPOINT_DIR), target, step=step)
    params = state.ema_params if ema else state.params
    cutoff = float(getattr(net, "label_cutoff", 0.0))
    return TrainedModel(make_score_fn(net, run.sde), params, run.sde, run, int(step), cutoff)


def load_score_model(workdir: str, *, ema: bool = True, step: int | None = None):
    """(score_fn, params, sde, run) of a trained run: `load_trained` without the step; run is its
    `jaxrej.config.RunSpec` (run.data.num_classes, run.eval, ...; run.config for records)."""
    tm = load_trained(workdir, ema=ema, step=step)
    return tm.score_fn, tm.params, tm.sde, tm.run


INIT_FILE = "init_from.json"
# the config sections a run started from another run's checkpoint must share with it
SHARED_SECTIONS = ("data", "sde", "model")


def parse_init_from(spec: str) -> tuple[str, int | None]:
    """ "RUN" or "RUN@STEP" -> (RUN, STEP or None); ValueError naming --init-from otherwise."""
    run, _, step = spec.rpartition("@") if "@" in spec else (spec, "", "")
    if not run or (step and not step.isdigit()):
        raise ValueError(f"--init-from: expected RUN or RUN@STEP (STEP an int), got {spec!r}")
    return run, int(step) if step else None


def check_init_from(cfg: dict, source: str, step: int | None = None) -> tuple[str, int]:
    """(source, step) of a run to start from, validated against the new run's config `cfg` (JSON
    form): source must be a trained run with checkpoint `step` (default: its newest) and the
    same data / sde / model sections. ValueError naming --init-from otherwise."""
    from jaxrej.training.checkpoint import CHECKPOINT_DIR, checkpoint_manager, latest_step

    src_ckpt = os.path.join(source, CHECKPOINT_DIR)
    if not os.path.isfile(os.path.join(source, CONFIG_FILE)) or latest_step(src_ckpt) is None:
        raise ValueError(f"--init-from: {source!r} is not a trained run (no config, no checkpoint)")
    with checkpoint_manager(src_ckpt, create=False) as m:
        steps = sorted(m.all_steps())
    step = steps[-1] if step is None else step
    if step not in steps:
        raise ValueError(f"--init-from: {source!r} has no checkpoint {step} (it has {steps})")
    diff = config_diff({s: read_config(source).get(s, {}) for s in SHARED_SECTIONS},
                       {s: cfg.get(s, {}) for s in SHARED_SECTIONS})  # fmt: skip
    if diff:
        raise ValueError(
            f"--init-from: {source!r} is a different model or data (differs in {format_diff(diff)})"
        )
    return source, step


def seed_from_run(workdir: str, source: str, step: int) -> None:
    """Seed the run `workdir` with checkpoint `step` of the run `source` (`check_init_from`): the
    checkpoint (params, EMA, optimizer state, step) and the metrics rows up to it are copied and
    workdir/init_from.json records where they came from; training then resumes from it under the
    new run's training settings (a fine-tune). A workdir already seeded from the same checkpoint
    is left as it is (its training resumes); one with other checkpoints is a ValueError."""
    import shutil

    from jaxrej.io import atomic_write_json, atomic_write_text
    from jaxrej.training.checkpoint import CHECKPOINT_DIR

    record = {"run": os.path.abspath(source), "step": step}
    ckpt_dir = os.path.join(workdir, CHECKPOINT_DIR)
    seeded = os.path.join(workdir, INIT_FILE)
    if os.path.isdir(ckpt_dir) and os.listdir(ckpt_dir):
        old = None
        if os.path.isfile(seeded):
            with open(seeded) as f:
                old = json.load(f)
        if old != record:
            raise ValueError(f"--init-from: {workdir!r} already holds checkpoints of another start; "
                             "use a new --workdir")  # fmt: skip
        return
    atomic_write_json(seeded, record)
    metrics = os.path.join(source, "metrics.jsonl")
    if os.path.isfile(metrics):
        with open(metrics) as f:
            rows = [ln for ln in f if ln.strip() and json.loads(ln).get("step", 0) <= step]
        atomic_write_text(os.path.join(workdir, "metrics.jsonl"), "".join(rows))
    tmp = os.path.join(workdir, f".init_from_{step}")  # copied whole, then renamed into place
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(os.path.join(source, CHECKPOINT_DIR, str(step)), tmp)
    os.makedirs(ckpt_dir, exist_ok=True)
    os.rename(tmp, os.path.join(ckpt_dir, str(step)))
