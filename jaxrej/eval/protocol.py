"""The evaluation protocol of a classifier with a reject option, for any set of scorers.

    report = evaluate(scorers, data, options=EvalOptions(), out_dir="runs/demo/evaluate")

Every scorer is a `jaxrej.scorers.Scorer`: pixel images (B, H, W, C) in [0, 1] -> class scores
(B, C), rejecting through `jaxrej.reject` with the thresholds of `reject.fit_thresholds` fitted on
held-out validation rows (per class at each of `options.percentiles`, and "tpr99").
Populations: the clean test rows; the first `n_corrupt` test rows under each corruption and
severity (`jaxrej.corruptions`; a corruption's severities are scored, and cached, together);
each OOD set. Tables: `eval.tables`; figures: `eval.plots`.

Scores are cached per (scorer, population) under `out_dir/scores/` (`eval.cache`): a killed
evaluation continues where it stopped and a finished one is re-reported without rescoring.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from jaxrej import reject
from jaxrej.eval import plots, tables
from jaxrej.eval.cache import cached_scores
from jaxrej.scorers import Scorer


class EvalData(NamedTuple):
    """Pixel images float32 in [0, 1] (N, H, W, C), int32 labels (N,)."""

    val: tuple[np.ndarray, np.ndarray]  # thresholds (never used for training any scorer)
    test: tuple[np.ndarray, np.ndarray]
    ood: dict[str, np.ndarray]  # name -> images shaped like the test images


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvalOptions:
    """percentiles: per-class threshold percentiles in (0, 100); accept_correct: fractions of the
    correct validation rows one global threshold accepts ("tpr99"); corruptions: names (empty: none);
    severities: subset of 1..5; n_corrupt: test rows per corruption and severity; n_ood: rows
    per OOD set (None: all); corruption_scale:
    the corruptions' length scale (None: their size rule, sqrt(H W) / 32); seed: the corruption
    keys; interpolate: scorers whose log p(x) = logsumexp_c s_c - log C is traced along lines
    between `n_pairs` random test pairs at `n_points` points (`eval.interpolation`)."""

    percentiles: tuple[float, ...] = (1.0, 2.0)
    accept_correct: tuple[float, ...] = (0.99,)
    corruptions: tuple[str, ...] = ()
    severities: tuple[int, ...] = (1, 2, 3, 4, 5)
    n_corrupt: int = 100
    n_ood: int | None = None
    corruption_scale: float | None = None
    interpolate: tuple[str, ...] = ("sbgc",)
    n_pairs: int = 16
    n_points: int = 11
    seed: int = 0

    def __post_init__(self):
        if not self.percentiles or not all(0 < p < 100 for p in self.percentiles):
            raise ValueError(f"percentiles: expected values in (0, 100), got {self.percentiles}")
        if not set(self.severities) <= {1, 2, 3, 4, 5} or not self.severities:
            raise ValueError(
                f"severities: expected a non-empty subset of 1..5, got {self.severities}"
            )
        if self.n_corrupt < 1:
            raise ValueError(f"n_corrupt: expected >= 1, got {self.n_corrupt}")


def corrupted_sets(
    images: np.ndarray, *, names, severities, seed: int, scale: float | None = None
) -> dict[tuple[str, int], np.ndarray]:
    """{(name, severity): corrupted copy of `images`}, each deterministic given (seed, name,
    severity); `scale`: `corruptions.corrupt`'s length scale."""
    import jax

    from jaxrej import corruptions

    unknown = [n for n in names if n not in corruptions.CORRUPTIONS]
    if unknown:
        raise ValueError(
            f"corruptions: unknown {unknown}; expected names from {corruptions.CORRUPTIONS}"
        )
    out = {}
    for i, name in enumerate(names):
        for sev in severities:
            key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), i), sev)
            out[(name, sev)] = np.asarray(
                corruptions.corrupt(name, images, sev, key=key, scale=scale)
            )
    return out


def population_scores(
    scorers: Mapping[str, Scorer],
    populations: Mapping[str, np.ndarray],
    *,
    out_dir: str,
    progress: bool = True,
) -> dict[str, dict[str, np.ndarray]]:
    """{scorer: {population: class scores (N, C)}}, cached under out_dir/scores/<scorer>/."""
    out: dict[str, dict[str, np.ndarray]] = {}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(scorers) * len(populations), desc="evaluate", unit="set",
                   dynamic_ncols=True)  # fmt: skip
    for name, sc in scorers.items():
        folder = os.path.join(out_dir, "scores", name)
        os.makedirs(folder, exist_ok=True)
        out[name] = {}
        for pop, images in populations.items():
            if bar is not None:
                bar.set_postfix_str(f"{name}: {pop}")
            path = os.path.join(folder, pop.replace("/", "__") + ".npz")
            out[name][pop] = cached_scores(path, images, sc.score_batch,
                                           batch_size=sc.batch_size, settings=sc.settings,
                                           desc=f"{name} {pop}", progress=progress)  # fmt: skip
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return out


def evaluate(
    scorers: Mapping[str, Scorer],
    data: EvalData,
    *,
    options: EvalOptions,
    out_dir: str,
    progress: bool = True,
) -> dict:
    """Score every population with every scorer, fit thresholds on data.val, and return the
    report {'options', 'scorers': {name: {'clean', 'corruptions'?, 'ood'}}, 'figures'}; PNG
    figures are written to out_dir (module doc)."""
    (xv, yv), (xt, yt) = data.val, data.test
    for name, (x, _) in (
        ("test", data.test),
        *((f"ood/{k}", (v, None)) for k, v in data.ood.items()),
    ):
        if x.shape[1:] != xv.shape[1:]:
            raise ValueError(
                f"data.{name}: images {x.shape[1:]} differ from validation {xv.shape[1:]}"
            )
    n_c = min(options.n_corrupt, len(xt))
    corrupted = corrupted_sets(xt[:n_c], names=options.corruptions,
                               severities=options.severities, seed=options.seed,
                               scale=options.corruption_scale)  # fmt: skip
    data = data._replace(ood={k: v[: options.n_ood] for k, v in data.ood.items()})
    names = list(dict.fromkeys(n for n, _ in corrupted))
    # a corruption's severities are scored as one population: few padded rows per scorer batch
    pops = {"val": xv, "test": xt, **{f"ood/{k}": v for k, v in data.ood.items()},
            **{f"corrupt/{n}": np.concatenate([corrupted[(n, sev)] for sev in options.severities])
               for n in names}}  # fmt: skip
    scores = population_scores(scorers, pops, out_dir=out_dir, progress=progress)
    for s in scores.values():
        for n in names:
            parts = np.split(s.pop(f"corrupt/{n}"), len(options.severities))
            s.update(
                {f"corrupt/{n}/{sev}": p for sev, p in zip(options.severities, parts, strict=True)}
            )

    report: dict = {"options": dataclasses.asdict(options), "n_val": len(yv), "n_test": len(yt),
                    "scorers": {}}  # fmt: skip
    th = {}
    for name, s in scores.items():
        th[name] = reject.fit_thresholds(s["val"], yv, percentiles=options.percentiles,
                                         accept_correct=options.accept_correct)  # fmt: skip
        r = {"clean": tables.clean_row(s["test"], yt, th[name])}
        missing = reject.missing_classes(s["val"], yv)
        if missing:
            r["threshold_fallback_classes"] = missing
        if corrupted:
            r["corruptions"] = tables.corruption_rows(
                {(n, sev): s[f"corrupt/{n}/{sev}"] for (n, sev) in corrupted}, yt[:n_c], th[name]
            )
        r["ood"] = {k: tables.ood_row(s["test"], s[f"ood/{k}"], th[name]) for k in data.ood}
        r["thresholds"] = {k: v.tolist() for k, v in th[name].items()}
        report["scorers"][name] = r
    for name in options.interpolate:
        if name in scorers:
            report["scorers"][name]["interpolation"], fig = interpolation(
                scorers[name], xt, options=options, out_dir=out_dir, progress=progress
            )
            report.setdefault("interpolation_figures", []).append(fig)
    report["figures"] = report.pop("interpolation_figures", []) + figures(
        scores,
        th,
        data,
        corrupted,
        report,
        out_dir=out_dir,
        threshold=reject.threshold_key(options.percentiles[0]),
    )
    return report


def test_scores(scorers: Mapping[str, Scorer], data: EvalData, *, out_dir: str) -> dict:
    """{name: the clean table's test scores (N, C)}, read back from `evaluate`'s cache (scored
    again only where the cache is gone)."""
    got = population_scores(scorers, {"test": data.test[0]}, out_dir=out_dir, progress=False)
    return {n: s["test"] for n, s in got.items()}


def fitted_scorers(scorers: Mapping[str, Scorer], report: dict) -> dict[str, Scorer]:
    """The scorers with the thresholds `evaluate` fitted on the validation rows (its report): the
    judges of the adversarial protocol."""
    return {n: dataclasses.replace(sc, thresholds={k: np.asarray(v) for k, v in
                                                   report["scorers"][n]["thresholds"].items()})
            for n, sc in scorers.items()}  # fmt: skip


def interpolation(sc: Scorer, images, *, options: EvalOptions, out_dir: str, progress: bool):
    """(summary dict, PNG path) of log p(x) along lines between random test pairs, scored through
    the cache."""
    import jax.numpy as jnp
    from jax.scipy.special import logsumexp

    from jaxrej.eval import interpolation as interp

    i0, i1 = interp.random_pairs(len(images), options.n_pairs, seed=options.seed)
    path = os.path.join(out_dir, "scores", sc.name, "interpolation.npz")

    def log_px(points):
        s = cached_scores(path, np.asarray(points), sc.score_batch, batch_size=sc.batch_size,
                          settings=sc.settings, desc=f"{sc.name} interpolation", progress=progress)  # fmt: skip
        return np.asarray(logsumexp(jnp.asarray(s), axis=1)) - np.log(s.shape[1])

    curves = interp.interpolation_curves(log_px, images[i0], images[i1], n_points=options.n_points)
    fig = interp.plot(curves, os.path.join(out_dir, f"interpolation_{sc.name}.png"),
                      title=f"{sc.name}: log p(x) between {options.n_pairs} pairs of test images")  # fmt: skip
    return curves.to_dict(), fig


def figures(
    scores, th, data: EvalData, corrupted, report, *, out_dir: str, threshold: str
) -> list[str]:
    """The PNGs: risk-coverage, one score histogram per scorer, severity curves, decisions."""
    xt, yt = data.test
    paths = []
    curves = {}
    for name, s in scores.items():
        pred, _ = tables.decide(s["test"], th[name][threshold])
        curves[name] = (tables.confidence(s["test"]), pred != yt)
    paths.append(plots.risk_coverage(curves, os.path.join(out_dir, "risk_coverage.png")))
    for name, s in scores.items():
        pops = {"clean test": tables.confidence(s["test"])}
        for sev in sorted({sev for (_, sev) in corrupted}):
            pops[f"corrupted, severity {sev}"] = np.concatenate(
                [tables.confidence(s[f"corrupt/{n}/{sv}"]) for (n, sv) in corrupted if sv == sev]
            )
        for k in data.ood:
            pops[f"OOD: {k}"] = tables.confidence(s[f"ood/{k}"])
        t = th[name][threshold]
        paths.append(plots.score_histograms(
            pops, os.path.join(out_dir, f"scores_{name}.png"),
            title=f"{name}: confidence by population (dashed: median {threshold} threshold)",
            threshold=float(np.median(t)),
        ))  # fmt: skip
    if corrupted:
        paths.append(plots.severity_curves(
            {n: r["corruptions"] for n, r in report["scorers"].items()},
            os.path.join(out_dir, "severity.png"), threshold=threshold,
        ))  # fmt: skip
    # decisions on 6 clean test images, 3 at the worst severity, 1 per OOD set (up to 4)
    cols, imgs, labels = [], [], []
    picks = [("test", i, f"test y={yt[i]}") for i in range(min(6, len(yt)))]
    if corrupted:
        worst = max(sev for (_, sev) in corrupted)
        names = [n for (n, sv) in corrupted if sv == worst][:3]
        picks += [(f"corrupt/{n}/{worst}", 0, f"{n[:10]} s{worst}") for n in names]
    picks += [(f"ood/{k}", 0, f"OOD {k[:10]}") for k in list(data.ood)[:4]]
    rows = {name: ([], []) for name in scores}
    for pop, i, title in picks:
        if pop == "test":
            img, lab = xt[i], yt[i]
        elif pop.startswith("corrupt/"):
            _, n, sev = pop.split("/")
            img, lab = corrupted[(n, int(sev))][i], yt[i]
        else:
            img, lab = data.ood[pop[4:]][i], -1
        imgs.append(img)
        labels.append(lab)
        cols.append(title)
        for name, s in scores.items():
            pred, rej = tables.decide(s[pop][i : i + 1], th[name][threshold])
            rows[name][0].append(pred[0])
            rows[name][1].append(rej[0])
    paths.append(plots.decision_grid(
        np.stack(imgs), {n: (np.array(p), np.array(r)) for n, (p, r) in rows.items()},
        os.path.join(out_dir, "decisions.png"), column_titles=cols, labels=np.array(labels),
    ))  # fmt: skip
    return paths
