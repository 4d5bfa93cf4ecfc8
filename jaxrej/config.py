"""Config files at the command boundary: `get_config()` python files (ml_collections) and the
`--config.a.b=value` overrides of the command line. Commands turn the result into options;
library code below them receives plain values.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import json
import os
from collections.abc import Sequence


def load_config(path: str, overrides: Sequence[str] = ()):
    """`get_config()` of the python file `path`, with `apply_overrides(config, overrides)`."""
    if not os.path.isfile(path):
        raise ValueError(f"--config: no such config file {path!r}")
    spec = importlib.util.spec_from_file_location("_jaxrej_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"--config: {path!r} defines no get_config()")
    return apply_overrides(module.get_config(), overrides)


def flatten_config(config: dict, prefix: str = "") -> dict:
    """Nested dicts -> one dict keyed by dotted paths: {"a": {"b": 1}} -> {"a.b": 1}."""
    out = {}
    for k, v in config.items():
        if isinstance(v, dict):
            out.update(flatten_config(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def json_form(obj):
    """`obj` as its JSON round trip (tuples -> lists, keys -> strings): the form a run's stored
    config.json has, so that a stored config and a new one compare equal when they agree."""
    return json.loads(json.dumps(obj))


def config_diff(old: dict, new: dict) -> dict[str, tuple]:
    """Where two configs differ: {dotted key: (old value, new value)}, keys sorted.

    Both are compared in `json_form` (a tuple equals the list config.json stores) after
    `flatten_config`. A key absent from one config and None in the other is NOT a difference:
    every reader of a run's config reads a field with `.get`, so an absent field and a None one
    configure the same run (a field added later with a None default does not refuse the resume
    of an older run). Absent against any other value is a difference, shown as None.
    """
    a, b = flatten_config(json_form(old)), flatten_config(json_form(new))
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def format_diff(diff: dict[str, tuple], limit: int = 8) -> str:
    """`config_diff`'s result as 'a.b: 1 -> 2, c: None -> 'x'' (at most `limit` keys shown)."""
    shown = [f"{k}: {old!r} -> {new!r}" for k, (old, new) in list(diff.items())[:limit]]
    more = len(diff) - limit
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def apply_overrides(config, overrides: Sequence[str], *, sections: Sequence[str] | None = None):
    """Apply `--config.a.b=value` overrides to `config` (a ConfigDict or nested dicts) in place
    and return it; with `sections`, only fields under those top-level sections may be set.

    An override must name an existing field; its value is parsed as a Python literal (else
    taken as a bare string) and must keep the field's type (an int field accepts an int, a
    float field an int or a float, a tuple or list field a tuple or list, a None field
    anything). Raises ValueError naming the offending override.
    """
    for item in overrides:
        if not item.startswith("--config.") or "=" not in item:
            raise ValueError(
                f"unrecognised argument {item!r}; overrides look like --config.a.b=value"
            )
        key, raw = item[len("--config.") :].split("=", 1)
        *parents, leaf = key.split(".")
        if sections is not None and (not parents or parents[0] not in sections):
            allowed = " or ".join(f"--config.{s}.<field>=<value>" for s in sections)
            raise ValueError(f"{item!r}: only {allowed} overrides apply here")
        node = config
        for p in parents:
            if p not in node:
                raise ValueError(f"--config.{key}: config has no field {p!r}")
            node = node[p]
        if leaf not in node:
            raise ValueError(f"--config.{key}: config has no field {leaf!r}; have {sorted(node)}")
        old = node[leaf]
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw  # a bare string
        if isinstance(old, bool) or isinstance(value, bool):
            ok = isinstance(old, bool) and isinstance(value, bool)
        elif isinstance(old, float):
            ok = isinstance(value, (int, float))
            value = float(value) if ok else value
        elif old is None:
            ok = True
        elif isinstance(old, (tuple, list)):
            ok = isinstance(value, (tuple, list))
            value = type(old)(value) if ok else value
        else:
            ok = isinstance(value, type(old))
        if not ok:
            raise ValueError(
                f"--config.{key}={raw!r}: expected a {type(old).__name__} like {old!r}"
            )
        node[leaf] = value
    return config


def heads_settings(config):
    """A heads config (configs/digits_heads.py) as plain values: (`jaxrej.eval.heads.load_heads_data`
    keywords, `HeadsOptions`, seed); ValueError naming a missing or malformed field."""
    from jaxrej.eval.heads import HeadsOptions
    from jaxrej.heads.gmm import EMOptions

    c = config
    try:
        data = {
            "dataset": str(c.data.dataset),
            "ood": tuple(str(n) for n in c.ood.datasets),
            "val_fraction": float(c.data.val_fraction),
            "data_dir": str(c.data.get("data_dir", "")) or None,
        }
        em = {"covariance_type": str(c.gmm.covariance_type), "reg_covar": float(c.gmm.reg_covar),
              "tol": float(c.gmm.tol), "max_iter": int(c.gmm.max_iter),
              "n_init": int(c.gmm.n_init)}  # fmt: skip
        options = HeadsOptions(
            model=str(c.model.name),
            model_kwargs={
                k: (tuple(v) if isinstance(v, (list, tuple)) else v)
                for k, v in c.model.kwargs.items()
            },
            train=dict(c.train),
            sdim=dict(c.sdim),
            gmm=EMOptions(n_components=int(c.gmm.n_components), **em),
            gmm_cc=EMOptions(n_components=int(c.gmm.n_components_per_class), **em),
            percentiles=tuple(float(p) for p in c.reject.percentiles),
            tpr=float(c.reject.tpr),
        )
        seed = int(c.seed)
    except (AttributeError, KeyError, TypeError) as e:
        raise ValueError(f"--config: missing or malformed field ({e})") from e
    return data, options, seed


SCORERS = ("ode", "elbo")  # a score model's scorers: eval.scorer, `jaxrej score --scorer`


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunEval:
    """A score-model run's `eval` section as options (configs/digits_sbgc.py documents each
    field): the ODE scorer's solve (divergence, n_probes, rtol, atol, eps; `solve`), its pairs per
    vmapped solve (chunk_size, 0: all) and screens ("default" | "none"), the scored batch size and
    dequantization, the default scorer ("ode" | "elbo") and the ELBO scorer's draws per example,
    their time sampling, its evaluations per vmapped call (0: all) and the top of the label's
    window (elbo_label_max, 0: none; jaxrej.elbo's label_max). The defaults fill in fields
    that older configs lack. `from_dict` names an unknown or bad field."""

    batch_size: int
    divergence: str
    n_probes: int
    rtol: float
    atol: float
    eps: float
    dequantize: str = "uniform"
    chunk_size: int = 0
    screen: str = "default"
    scorer: str = "ode"
    elbo_n_times: int = 64
    elbo_time_sampling: str = "stratified"
    elbo_chunk_size: int = 4096
    elbo_label_max: float = 0.0

    def __post_init__(self):
        from jaxrej.checks import check_int
        from jaxrej.elbo import TIME_SAMPLINGS

        choices = {"divergence": ("exact", "rademacher", "gaussian"),
                   "dequantize": ("uniform", "center"), "screen": ("default", "none"),
                   "scorer": SCORERS, "elbo_time_sampling": TIME_SAMPLINGS}  # fmt: skip
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"eval.{name}: expected one of {'|'.join(allowed)}, got {getattr(self, name)!r}")  # fmt: skip
        for name, low in (("batch_size", 1), ("n_probes", 1), ("elbo_n_times", 1),
                          ("chunk_size", 0), ("elbo_chunk_size", 0)):  # fmt: skip
            check_int(
                f"eval.{name}", getattr(self, name), low, " (0: all at once)" if low == 0 else ""
            )
        for name in ("rtol", "atol", "eps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not (isinstance(v, (int, float)) and 0 < v < 1):
                raise ValueError(f"eval.{name}: expected a number in (0, 1), got {v!r}")
        v = self.elbo_label_max
        if isinstance(v, bool) or not (isinstance(v, (int, float)) and 0 <= v < 1):
            raise ValueError(
                f"eval.elbo_label_max: expected 0 (off) or a time in (0, 1), got {v!r}"
            )

    @classmethod
    def from_dict(cls, e: dict) -> RunEval:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(e) - known)
        if unknown:
            raise ValueError(f"eval: unknown field(s) {unknown}; known: {sorted(known)}")
        missing = sorted(f.name for f in dataclasses.fields(cls)
                         if f.default is dataclasses.MISSING and f.name not in e)  # fmt: skip
        if missing:
            raise ValueError(f"eval: missing field(s) {missing}")
        return cls(**e)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def solve(self):
        """The accurate solve of the ODE scorer (`jaxrej.flow.FlowSolve`)."""
        from jaxrej.flow import FlowSolve

        return FlowSolve(divergence=self.divergence, n_probes=self.n_probes, rtol=self.rtol,
                         atol=self.atol, eps=self.eps)  # fmt: skip


@dataclasses.dataclass(frozen=True, kw_only=True)
class ABSEval:
    """An ABS run's `eval` section as options (configs/digits_abs.py documents each field): the
    test-time latent search (`jaxrej.abs.LatentOptions`' steps, lr, n_starts, encoder_start,
    correction; `latent`), the latent bank's size and the scored batch size. Its `scorer` is
    "abs" (`jaxrej score` names its files by it). `from_dict` names an unknown or bad field."""

    steps: int = 50
    lr: float = 0.05
    n_starts: int = 1
    encoder_start: bool = True
    correction: bool = True
    bank_size: int = 1000
    batch_size: int = 100

    def __post_init__(self):
        from jaxrej.checks import check_int

        check_int("eval.bank_size", self.bank_size)
        check_int("eval.batch_size", self.batch_size)
        self.latent  # noqa: B018  (ValueError naming a bad search field)

    @property
    def latent(self):
        """The test-time latent search (`jaxrej.abs.LatentOptions`)."""
        from jaxrej.abs.latent import LatentOptions

        fields = ("steps", "lr", "n_starts", "encoder_start", "correction")
        try:
            return LatentOptions(**{k: getattr(self, k) for k in fields})
        except ValueError as err:
            raise ValueError(f"eval.{err}") from err

    @property
    def scorer(self) -> str:
        return "abs"

    @classmethod
    def from_dict(cls, e: dict) -> ABSEval:
        unknown = sorted(set(e) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"eval: unknown field(s) {unknown} for model.name='abs'")
        return cls(**e)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def run_eval_options(run: RunSpec, overrides: Sequence[str] = ()) -> tuple[RunEval | ABSEval, dict]:
    """(the eval options of a run (`RunSpec`, `load_run`) with --config.eval.* `overrides` applied:
    RunEval, or ABSEval for an ABS run; {field: value} of the fields an override set off the
    run's own, the tags of `jaxrej score`'s file names). ValueError naming a bad field."""
    own = run.eval.to_dict()  # with the defaults older configs lack
    ev = type(run.eval).from_dict(
        apply_overrides({"eval": dict(own)}, overrides, sections=("eval",))["eval"]
    )
    return ev, {k: v for k, v in ev.to_dict().items() if v != own[k]}


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunData:
    """A trained run's `data` section as options: the dataset strings ('' in a config: None),
    the training split, the eval rows' dataset (None: `dataset`) and split, the validation
    hold-out and the tfds data_dir; and what `jaxrej train` stored from the data: num_classes,
    n_levels, event_shape (None in a config not yet trained). `from_dict` names an unknown or
    missing field."""

    dataset: str
    num_classes: int | None = None
    n_levels: int | None = None
    event_shape: tuple[int, ...] | None = None
    train_split: str = "train"
    eval_dataset: str | None = None
    eval_split: str | None = None
    val_fraction: float | None = None
    data_dir: str | None = None

    @property
    def eval_spec(self) -> str:
        """The dataset string of the run's eval rows (eval_dataset, else dataset)."""
        return self.eval_dataset or self.dataset

    @classmethod
    def from_dict(cls, d: dict, *, trained: bool = True) -> RunData:
        """The data section `d` of a trained run's config (trained=False: of a config to train,
        whose num_classes, n_levels and event_shape come from the data)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"data: unknown field(s) {unknown}; known: {sorted(known)}")
        derived = ("num_classes", "n_levels", "event_shape")
        missing = sorted({"dataset", *(derived if trained else ())} - set(d))
        if missing:
            raise ValueError(f"data: missing field(s) {missing} (not a trained run's config)")
        d = {**d, **{k: d.get(k) or None for k in ("eval_dataset", "data_dir")}}
        if trained:
            d |= {"num_classes": int(d["num_classes"]), "n_levels": int(d["n_levels"]),
                  "event_shape": tuple(int(n) for n in d["event_shape"])}  # fmt: skip
        return cls(**d)


def abs_model(section: dict, *, num_classes: int, event_shape):
    """The `jaxrej.abs.ABSModel` of an ABS config's `model` section (ValueError naming an unknown
    or bad field); a field set to None (or absent) takes ABSModel's default."""
    from jaxrej.abs.model import ABSModel

    m = {k: v for k, v in dict(section).items() if v is not None}
    m.pop("name", None)
    known = {f for f in ABSModel.__dataclass_fields__ if f not in ("num_classes", "event_shape")}
    unknown = set(m) - known
    if unknown:
        raise ValueError(f"model: unknown field(s) {sorted(unknown)} for name='abs'")
    for k in ("hidden", "encoder_hidden", "channels"):
        if k in m:
            m[k] = tuple(int(v) for v in m[k])
    return ABSModel(num_classes=int(num_classes), event_shape=tuple(event_shape), **m)


def abs_training(section: dict):
    """The `jaxrej.abs.ABSTrainOptions` of an ABS config's `training` section (ValueError naming an
    unknown or bad field)."""
    from jaxrej.abs.training import ABSTrainOptions

    t = dict(section)
    unknown = set(t) - {f.name for f in dataclasses.fields(ABSTrainOptions)}
    if unknown:
        raise ValueError(f"training: unknown field(s) {sorted(unknown)} for model.name='abs'")
    return ABSTrainOptions(**t)


def run_kind(config: dict) -> str:
    """'abs' for a run whose config's model.name is 'abs' (analysis by synthesis), else 'score'
    (read without validating the rest: how `jaxrej.scorers.find_runs` sorts folders)."""
    return "abs" if (config.get("model") or {}).get("name") == "abs" else "score"


def run_scorer(config: dict) -> str:
    """A score-model run's default scorer, its eval.scorer ("ode" where absent; `run_kind`'s
    light read)."""
    return (config.get("eval") or {}).get("scorer", "ode")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunSpec:
    """A trained run's config.json as options, built once (`load_run`) and handed to the library:
    kind ('score' | 'abs', `run_kind`), seed, data (`RunData`) and eval (`RunEval`, or `ABSEval`
    for an ABS run); net: a score model's flax module (`training.workdir.build_net`), an ABS
    run's `ABSModel` (`abs_model`); training: `training.loop.TrainOptions` (num_classes from the
    data) or `ABSTrainOptions` (`abs_training`); sde: a score model's (VPSDE | SubVPSDE | VESDE).
    config: the stored JSON itself, for records (a results file's provenance)."""

    kind: str
    seed: int
    data: RunData
    eval: RunEval | ABSEval
    net: object = None
    sde: object = None
    training: object = None
    config: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)


def run_spec(config: dict) -> RunSpec:
    """The `RunSpec` of a run's stored config dict (config.json); ValueError naming a missing
    section or a bad field."""
    kind = run_kind(config)
    need = ("data", "model", "training", "eval") + (("sde",) if kind == "score" else ())
    for section in need:
        if section not in config:
            raise ValueError(f"config: missing section {section!r}")
    seed = _seed(config)
    data = RunData.from_dict(dict(config["data"]))
    if kind == "abs":
        return RunSpec(kind=kind, seed=seed, data=data, eval=ABSEval.from_dict(dict(config["eval"])),
                       net=abs_model(config["model"], num_classes=data.num_classes,
                                     event_shape=data.event_shape),
                       training=abs_training(config["training"]), config=config)  # fmt: skip
    from jaxrej.training.loop import TrainOptions
    from jaxrej.training.workdir import build_net, build_sde

    model, sde = dict(config["model"]), dict(config["sde"])
    return RunSpec(kind=kind, seed=seed, data=data, eval=RunEval.from_dict(dict(config["eval"])),
                   net=build_net(model.pop("name"), num_classes=data.num_classes, **model),
                   sde=build_sde(sde.pop("name"), **sde),
                   training=TrainOptions(**{**config["training"], "num_classes": data.num_classes}),
                   config=config)  # fmt: skip


def load_run(workdir: str) -> RunSpec:
    """The `RunSpec` of the trained run in `workdir` (its config.json); ValueError for a missing
    workdir or config, or a bad field (named)."""
    from jaxrej.training.workdir import read_config

    return run_spec(read_config(workdir))


@dataclasses.dataclass(frozen=True, kw_only=True)
class NewRun:
    """A config dict to train (`new_run`) as options, before its data is loaded: kind ('score' |
    'abs'), seed, config (its JSON form), data (`RunData` without the data's fields), eval
    (`RunEval` | `ABSEval`), its training section checked; a score model's sde. `spec` turns it
    into the trained run's `RunSpec` (net, training) once the data is known."""

    kind: str
    seed: int = 0
    config: dict = dataclasses.field(default_factory=dict)
    data: RunData | None = None
    sde: object = None
    eval: RunEval | ABSEval | None = None

    def spec(self, *, num_classes: int, n_levels: int, event_shape) -> RunSpec:
        """The `RunSpec` of this run trained on data of `num_classes` classes, `n_levels` pixel
        levels and `event_shape`; its config is what config.json stores (the data's fields
        added). ValueError naming a model field the architecture lacks."""
        data = {**self.config["data"], "num_classes": int(num_classes), "n_levels": int(n_levels),
                "event_shape": [int(n) for n in event_shape]}  # fmt: skip
        return run_spec(json_form({**self.config, "data": data}))


def _seed(cfg: dict) -> int:
    seed = cfg.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed: expected an int, got {seed!r}")
    return seed


def new_run(config: dict) -> NewRun:
    """A config dict to train (`ConfigDict.to_dict()`) as a `NewRun`; ValueError naming a missing
    section or a bad field before any data is loaded (the model's fields: `NewRun.spec`)."""
    import copy

    cfg = json_form(copy.deepcopy(dict(config)))
    if run_kind(cfg) == "abs":
        for section in ("data", "model", "training", "eval"):
            if section not in cfg:
                raise ValueError(f"config: missing section {section!r}")
        abs_training(cfg["training"])  # names a bad training.* value before any data is loaded
        return NewRun(kind="abs", seed=_seed(cfg), config=cfg, eval=ABSEval.from_dict(cfg["eval"]),
                      data=RunData.from_dict(cfg["data"], trained=False))  # fmt: skip
    from jaxrej.training.loop import TrainOptions
    from jaxrej.training.workdir import build_sde

    for section in ("data", "sde", "model", "training", "eval"):
        if section not in cfg:
            raise ValueError(f"config: missing section {section!r}")
    t = cfg["training"]
    unknown = set(t) - {f.name for f in dataclasses.fields(TrainOptions)}
    if unknown:
        raise ValueError(f"training: unknown field(s) {sorted(unknown)}")
    if "num_classes" in t:
        raise ValueError("training.num_classes: set from the data, not the config")
    TrainOptions(**{**t, "class_ce_weight": 0.0})  # names a bad value early
    ev = RunEval.from_dict(cfg["eval"])  # names a bad eval.* value before training
    sde = dict(cfg["sde"])
    sde = build_sde(sde.pop("name"), **sde)
    return NewRun(kind="score", seed=_seed(cfg), config=cfg, sde=sde, eval=ev,
                  data=RunData.from_dict(cfg["data"], trained=False))  # fmt: skip
