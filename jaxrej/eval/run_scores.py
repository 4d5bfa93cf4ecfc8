"""A trained score model's class log-likelihoods of a set, and their summary: `jaxrej score`'s
library (the command parses flags, calls `score_run` and writes its files). An ABS run is scored
by `jaxrej.abs.run.score_run` (same options, same report) with the shared parts here: the sets
(`load_sets`), the batched loop (`result_batches`), the summary of any class scores
(`summarize_scores`, `warnings_for`) and the OOD entries (`ood_summary`).

    rep = score_run("runs/digits", options=ScoreOptions(run_eval=RunEval(...), limit=100))
    rep.summary["accuracy"], rep.arrays["class_logp"]          # (N, C)

The scorer is the run's judge (`jaxrej.scorers.sbgc.run_judge`), the one `jaxrej evaluate`'s
clean table calls, with the same inputs (pixels k / (L - 1), `to_unit_interval`), so the two
commands give a row the same scores: "ode" (log p(x | y) by the probability-flow ODE,
`jaxrej.class_log_likelihood_result`: with eval.screen = "default" the library's TopK screens
pick each image's best class for the accurate solve, "none" solves every class accurately) or
"elbo" (the denoising bound, `jaxrej.class_elbos`). Its input map (eval.dequantize) and keys
(from each row's pixels: a row's score does not depend on its batch) are explained in
`jaxrej.scorers.sbgc`. Rows are scored in padded batches of eval.batch_size (one compiled
program serves them all: `compilations`). A row with a failed solve (NaN) gets pred = -1 and
ok = False: counted as failed, never as correct.

Summary (`summarize`, `warnings_for`): accuracy (failed rows wrong) and accuracy_solved, n_failed,
bits/dim of log p(x) (uniform class prior) and of log p(x | label), the uniform density's
bits/dim (log2 n_levels), `baseline_bits_per_dim` (an independent per-pixel histogram of the
run's training rows, the trivial density a model must beat), `label_dependence`
(`jaxrej.metrics.label_dependence`) and warnings: rows whose screens misjudged a class by more
than their margin (`consistent_fraction` < 1), bits/dim worse than the uniform density, and
class-conditional scores that barely depend on the label (a ratio below LABEL_DEPENDENCE_MIN,
not raised where the labels show an accuracy of at least twice chance). OOD sets: their class
log-likelihoods and the AUROC of log p(x) (positive = the scored, in-distribution set).
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxrej.config import SCORERS
from jaxrej.metrics import label_dependence

__all__ = ["LABEL_DEPENDENCE_MIN", "SCORERS", "ScoreOptions", "ScoreReport", "score_run",
           "score_images", "result_batches", "load_sets", "ood_summary", "summarize_scores",
           "summarize", "warnings_for", "baseline_bits_per_dim"]  # fmt: skip

LABEL_DEPENDENCE_MIN = 0.05


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScoreOptions:
    """What `score_run` scores. run_eval: the run's eval options (`jaxrej.config.RunEval`,
    overrides applied); scorer: "ode" | "elbo" (None: run_eval.scorer); split of the run's
    data.eval_dataset (else data.dataset), or of `test` ("[name=]SPEC", a dataset string);
    ood: "[name=]SPEC" sets (a local file whole, a registry name's test split); limit: the first
    N rows of every set (0: all); step: the checkpoint (None: the newest intact one); ema: the
    EMA params (False: raw); progress: progress bars."""

    run_eval: Any
    scorer: str | None = None
    split: str = "test"
    test: str | None = None
    ood: tuple[str, ...] = ()
    limit: int = 0
    step: int | None = None
    ema: bool = True
    progress: bool = True

    def __post_init__(self):
        from jaxrej.data.registry import parse_named

        if self.scorer is not None and self.scorer not in SCORERS:
            raise ValueError(f"--scorer: expected one of {SCORERS}, got {self.scorer!r}")
        if self.step is not None and self.step < 0:
            raise ValueError(f"--step: expected a checkpoint step >= 0, got {self.step}")
        if self.limit < 0:
            raise ValueError(f"--limit: expected >= 0, got {self.limit}")
        if getattr(self.run_eval, "scorer", None) == "abs":  # jaxrej.config.ABSEval
            if self.scorer is not None:
                raise ValueError("--scorer: an ABS run has one scorer (its bound); drop --scorer")
            if not self.ema:
                raise ValueError("--raw-params: an ABS run has no EMA params; drop --raw-params")
        names = [parse_named(o)[0] for o in self.ood]  # ValueError for a malformed string
        if len(set(names)) != len(names):
            raise ValueError(f"--ood: two sets share a name in {names}; name them with name=SPEC")

    @property
    def kind(self) -> str:
        return self.scorer or self.run_eval.scorer


class ScoreReport(NamedTuple):
    """summary: the JSON summary (module doc); arrays: the scored set's (class_logp (N, C),
    pred, ok, nfe, refined, covered, consistent, labels where known); ood: {name: arrays of
    that set (class_logp, log_px, ok, nfe, refined, covered, consistent)}; set_name: the scored
    set's name (the split, or the --test name plus "_<split>" unless it is test)."""

    summary: dict
    arrays: dict
    ood: dict
    set_name: str


def summarize_scores(class_logp: np.ndarray, labels) -> dict:
    """What any class scores (N, C) say, whatever they bound: n, n_failed (a row with a
    non-finite score), accuracy (failed rows count as wrong; None without labels) and
    accuracy_solved, label_dependence, num_classes; also pred (-1 where failed), ok, log_px
    (the class-marginal score logsumexp_c s_c - log C) and cond (the label's score, or None)."""
    import jax.numpy as jnp

    from jaxrej.likelihood import marginal_log_likelihood

    class_logp = np.asarray(class_logp, np.float64)
    n = int(class_logp.shape[0])
    ok = np.all(np.isfinite(class_logp), axis=1)
    pred = np.where(ok, np.argmax(np.where(ok[:, None], class_logp, 0.0), axis=1), -1)
    marg = np.asarray(marginal_log_likelihood(jnp.asarray(class_logp)))
    out = {"n": n, "n_failed": int(n - ok.sum()), "accuracy": None, "accuracy_solved": None}
    cond = None
    if labels is not None:
        correct = (pred == labels) & ok
        cond = class_logp[np.arange(n), labels]
        out |= {"accuracy": float(correct.sum() / n),
                "accuracy_solved": float(correct.sum() / max(ok.sum(), 1))}  # fmt: skip
    out["label_dependence"] = label_dependence(class_logp)
    out["num_classes"] = int(class_logp.shape[1])
    return out | {"pred": pred, "ok": ok, "log_px": marg, "cond": cond}


def mean_ok(a, ok) -> float:
    """The mean of a (N,) over the rows ok (N,) (NaN where none is)."""
    return float(np.mean(np.asarray(a)[ok])) if ok.any() else math.nan


def summarize(class_logp: np.ndarray, labels, *, event_shape, n_levels: int) -> dict:
    """`summarize_scores` of a score model's class log-likelihoods (N, C) with their bits/dim:
    of log p(x) (uniform class prior), of log p(x | label) and of the uniform density."""
    import jax.numpy as jnp

    from jaxrej.likelihood import bits_per_dim

    out = summarize_scores(class_logp, labels)
    ok, cond = out["ok"], out.pop("cond")
    bpd = lambda a: np.asarray(bits_per_dim(jnp.asarray(a), tuple(event_shape), n_levels=n_levels))  # noqa: E731
    out["bits_per_dim"] = mean_ok(bpd(out["log_px"]), ok)
    out["bits_per_dim_conditional"] = None if cond is None else mean_ok(bpd(cond), ok)
    out["uniform_bits_per_dim"] = math.log2(n_levels)
    return out


def warnings_for(summary: dict) -> list[str]:
    """The user-facing warnings of a summary (module doc)."""
    out = []
    bpd, uni = summary.get("bits_per_dim"), summary.get("uniform_bits_per_dim")
    if bpd is not None and math.isfinite(bpd) and bpd > uni:
        out.append(
            f"bits/dim {bpd:.3f} is worse than a uniform density over the pixel levels "
            f"({uni:.3f} = log2 n_levels): the model has not learnt the data density"
        )
    cf = summary.get("consistent_fraction")
    if cf is not None and cf < 1.0:
        out.append(
            f"the screens misjudged {100 * (1 - cf):.1f}% of the rows by more than their margin "
            "(a later pass moved a class further than the earlier pass allows: "
            "jaxrej.scoring.ClassLikelihoods.consistent), so those rows' predictions and "
            "unrefined classes are not to be trusted: re-score with --config.eval.screen=none"
        )
    r = summary["label_dependence"]["ratio"]
    acc, c = summary.get("accuracy"), summary.get("num_classes")
    beats_chance = acc is not None and c and acc >= 2.0 / c  # the labels say the ranking works
    if r is not None and r < LABEL_DEPENDENCE_MIN and not beats_chance:
        ld = summary["label_dependence"]
        out.append(
            f"the class-conditional scores barely depend on the label: the spread of "
            f"log p(x|y) over classes ({ld['class_spread']:.3g} nats, median) is {r:.3g} of its "
            f"spread over examples ({ld['example_spread']:.3g} nats), below "
            f"{LABEL_DEPENDENCE_MIN}; predictions from it are close to guesses"
        )
    return out


def baseline_bits_per_dim(d, images) -> float:
    """Mean bits/dim of `images` under the independent per-pixel histogram of the run's training
    rows (d: its `jaxrej.config.RunData`; `jaxrej.likelihood.pixel_histogram_bits_per_dim`): the
    trivial density to beat."""
    from jaxrej.data.registry import load_dataset
    from jaxrej.likelihood import pixel_histogram_bits_per_dim

    train = load_dataset(d.dataset, d.train_split, data_dir=d.data_dir)
    bpd = pixel_histogram_bits_per_dim(train.images, images, n_levels=d.n_levels)
    return float(np.mean(bpd))


@jax.jit
def _result(judge, x):
    """judge.result(x), compiled once per judge setting and batch shape (`compilations`)."""
    return judge.result(x)


def result_batches(judge, x, *, names, batch_size: int, progress: bool = True,
                   desc: str = "score") -> tuple[dict, int]:  # fmt: skip
    """({name: numpy array of N rows} of the fields `names` of judge.result(x), batches) of
    pixels x (N, *event), in padded batches of batch_size (one compiled program per judge
    setting and batch shape), with a progress bar: the loop of every run's scoring (the score
    model's judge, `jaxrej.abs.ABSScorer`)."""
    from jaxrej.data.batching import num_batches, padded_batches

    nb = num_batches(len(x), batch_size)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=nb, desc=desc, dynamic_ncols=True)
    parts: dict[str, list] = {k: [] for k in names}
    for (xb,), mask in padded_batches(x, batch_size=batch_size):
        res = jax.device_get(_result(judge, xb))
        for k in names:
            parts[k].append(np.asarray(getattr(res, k))[mask])
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return {k: np.concatenate(v) for k, v in parts.items()}, nb


def score_images(judge, images, *, n_levels: int, batch_size: int, progress: bool = True,
                 desc: str = "score") -> tuple[dict, int]:  # fmt: skip
    """({logp, nfe, refined, covered, consistent}: numpy arrays of N rows, batches) of integer
    images (N, *event) by `judge` (`run_judge`) on the pixels k / (n_levels - 1), in padded
    batches of batch_size: the clean table's scores of `jaxrej evaluate` (module doc)."""
    from jaxrej.data.preprocessing import to_unit_interval

    x = to_unit_interval(np.asarray(images), n_levels)
    return result_batches(judge, x, names=("logp", "nfe", "refined", "covered", "consistent"),
                          batch_size=batch_size, progress=progress, desc=desc)  # fmt: skip


def load_sets(options: ScoreOptions, data):
    """(set_name, dataset string, images, labels or None, {name: (spec, split, images)}) of the
    scored set and the OOD sets of `options` (module doc), checked against a run's data options
    (`jaxrej.config.RunData`; `training.workdir.load_run_set`)."""
    from jaxrej.data.registry import is_local, parse_named
    from jaxrej.training.workdir import load_run_set

    o = options
    if o.test:
        test_name, spec = parse_named(o.test)
        set_name = test_name if o.split == "test" else f"{test_name}_{o.split}"
        images, labels = load_run_set("--test", spec, o.split, data, o.limit)
    else:
        spec, set_name = data.eval_spec, o.split
        images, labels = load_run_set("--split", spec, o.split, data, o.limit)
    oods = {}
    for name, ospec in (parse_named(s) for s in o.ood):
        split = "all" if is_local(ospec) else "test"
        oods[name] = (ospec, split, load_run_set(f"--ood {name}", ospec, split, data, o.limit)[0])
    return set_name, spec, images, labels, oods


def ood_summary(spec: str, split: str, log_px, log_px_ood) -> dict:
    """An OOD set's entry: spec, split, n, and the detection of log_px_ood (M,) against the
    scored set's log_px (N,) (`jaxrej.metrics.ood_detection`, positive = in-distribution)."""
    from jaxrej.metrics import ood_detection

    det = ood_detection(log_px, log_px_ood)
    return {"spec": spec, "split": split, "n": int(len(log_px_ood)), "auroc": det["auroc"],
            "fpr_at_95_tpr": det["fpr_at_95_tpr"], "aupr_in": det["aupr_in"]}  # fmt: skip


def score_ood_sets(oods: dict, score, describe, log_px) -> tuple[dict, dict]:
    """({name: summary}, {name: arrays}) of each OOD set {name: (spec, split, images)}:
    score(images, desc) -> (result, batches); describe(result) -> (log_px_ood (M,), arrays,
    extra summary fields); each summary is `ood_summary` against the scored set's log_px (N,),
    the extra fields and its time."""
    results, arrays = {}, {}
    for name, (spec, split, images) in oods.items():
        t1 = time.perf_counter()
        r, _ = score(images, f"ood {name}")
        lp, arrays[name], extra = describe(r)
        results[name] = {**ood_summary(spec, split, log_px, lp), **extra,
                         "time_s": round(time.perf_counter() - t1, 2)}  # fmt: skip
    return results, arrays


NO_OOD_NOTE = "no OOD set given (--ood [name=]SPEC): no OOD AUROC reported"


def score_run(workdir: str, *, options: ScoreOptions, run=None) -> ScoreReport:
    """`jaxrej score` of a trained run (module doc): its judge's class scores of the scored set
    and the OOD sets, with the summary; run: its `jaxrej.config.RunSpec` (None: `load_run`); an
    ABS run (options.run_eval a `jaxrej.config.ABSEval`) is scored by `jaxrej.abs.run.score_run`.
    ValueError for a missing run, set or checkpoint (named), or eval options of the other kind
    of run."""
    from jaxrej.config import ABSEval, load_run
    from jaxrej.scorers.sbgc import run_judge
    from jaxrej.training.workdir import load_trained

    o, ev = options, options.run_eval
    run = load_run(workdir) if run is None else run
    is_abs = run.kind == "abs"
    if is_abs != isinstance(ev, ABSEval):
        raise ValueError(f"options.run_eval: {type(ev).__name__} for "
                         f"{'an ABS' if is_abs else 'a score-model'} run {workdir!r}")  # fmt: skip
    if is_abs:
        from jaxrej.abs.run import score_run as score_abs

        return score_abs(workdir, options=o, run=run)
    scorer = o.kind
    tm = load_trained(workdir, ema=o.ema, step=o.step, run=run)
    d = run.data
    set_name, test_spec, images, labels, oods = load_sets(o, d)

    judge = run_judge(tm, ev, scorer)
    shape, levels = d.event_shape, d.n_levels

    def score(x, desc):
        return score_images(judge, x, n_levels=levels, batch_size=ev.batch_size,
                            progress=o.progress, desc=f"score {desc}")  # fmt: skip

    compiled0 = _result._cache_size()
    t0 = time.perf_counter()
    r, nb = score(images, set_name)
    elapsed = time.perf_counter() - t0
    s = summarize(r["logp"], labels, event_shape=shape, n_levels=levels)
    s["baseline_bits_per_dim"] = baseline_bits_per_dim(d, images)
    pred, ok, log_px = s.pop("pred"), s.pop("ok"), s.pop("log_px")
    arrays = {"class_logp": r["logp"], "pred": pred, "ok": ok, "nfe": r["nfe"],
              "refined": r["refined"], "covered": r["covered"], "consistent": r["consistent"]}  # fmt: skip
    if labels is not None:
        arrays["labels"] = labels

    def describe(ro):
        so = summarize(ro["logp"], None, event_shape=shape, n_levels=levels)
        arr = {"class_logp": ro["logp"], "log_px": so["log_px"], "ok": so["ok"], "nfe": ro["nfe"],
               "refined": ro["refined"], "covered": ro["covered"], "consistent": ro["consistent"]}  # fmt: skip
        return so["log_px"], arr, {"n_failed": so["n_failed"], "bits_per_dim": so["bits_per_dim"]}

    ood_results, ood_arrays = score_ood_sets(oods, score, describe, log_px)
    notes = [] if ood_results else [NO_OOD_NOTE]
    s["consistent_fraction"] = float(r["consistent"].mean())
    e = ev.to_dict()
    summary = {
        "set": set_name,
        "scorer": scorer,
        "dataset": test_spec,
        "split": o.split,
        "limit": o.limit or None,
        **s,
        "ood": ood_results,
        "ood_score": "log p(x) (uniform class prior); AUROC positive = in-distribution "
        "(the scored set), as jaxrej.metrics",
        "warnings": warnings_for(s),
        "notes": notes,
        "time_s": round(elapsed, 2),
        "nfe_mean_per_example": float(r["nfe"].sum(axis=1).mean()),
        "refined_fraction": float(r["refined"].mean()),
        "covered_fraction": float(r["covered"].mean()),
        "compilations": _result._cache_size() - compiled0,
        "batches": nb,
        "params": "ema" if o.ema else "raw",
        "checkpoint_step": tm.step,
        "eval": {**e, "elbo_label_cutoff": judge.label_cutoff} if scorer == "elbo" else e,
    }
    return ScoreReport(summary=summary, arrays=arrays, ood=ood_arrays, set_name=set_name)
