"""`jaxrej evaluate`'s plumbing between the scorer layer and the protocols: the scorers a
workdir holds (`jaxrej.scorers.find_runs` / `load`), the rows they are judged on, and the
adversarial tables (`jaxrej.eval.adversarial`) of every scorer.

    found = scorers.find_runs("runs/demo")            # {scorer name: run folder}
    data, sources, notes = eval_data(found, test=None, ood=None)
    adv = adversarial(judges, data, clean_test=..., options=AttackRunOptions(...), out_dir=...)
    summary = evaluate_workdir("runs/demo", options=EvalOptions(...), attack=AttackRunOptions(...))
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence

import jax
import numpy as np

from jaxrej.corruptions import CORRUPTIONS
from jaxrej.eval.protocol import EvalOptions
from jaxrej.scorers.heads import HEAD_SCORERS


def _kinds(found: dict[str, str]) -> dict[str, list[str]]:
    """{'heads' | 'sbgc' | 'abs': [run folder]} of find_runs' {scorer: folder}."""
    heads = [d for k, d in found.items() if k in HEAD_SCORERS][:1]
    score = [found[k] for k in ("sbgc", "elbo") if k in found][:1]
    return {"heads": heads, "sbgc": score, "abs": [found["abs"]] if "abs" in found else []}


def _run_data(found: dict[str, list[str]]) -> tuple[dict, list[str]]:
    """The runs' data settings {'dataset', 'val_fraction', 'seed', 'ood'} (heads run first),
    and notes; ValueError when the runs disagree on the dataset."""
    from jaxrej.config import load_run

    notes: list[str] = []
    cands = []
    for d in found["heads"][:1]:
        with open(os.path.join(d, "heads.json")) as f:  # the data options `jaxrej heads` used
            h = json.load(f)
        cands.append(("heads", d, {"dataset": h["data"]["dataset"],
                                   "val_fraction": h["data"]["val_fraction"], "seed": h["seed"],
                                   "ood": tuple(h["data"]["ood"] or ())}))  # fmt: skip
    for kind in ("sbgc", "abs"):  # a trained run: on its eval_dataset where it has one (held
        for d in found.get(kind, [])[:1]:  # out of training), else its val_fraction hold-out
            run = load_run(d)
            vf = None if run.data.eval_dataset else run.data.val_fraction
            cands.append((kind, d, {"dataset": run.data.eval_spec, "val_fraction": vf,
                                    "seed": run.seed, "ood": ()}))  # fmt: skip
    first = cands[0][2]
    for kind, d, s in cands[1:]:
        if s["dataset"] != first["dataset"]:
            raise ValueError(f"--workdir: the runs use different datasets: {first['dataset']!r} "
                             f"and {s['dataset']!r} ({d!r})")  # fmt: skip
        if (s["val_fraction"], s["seed"]) != (first["val_fraction"], first["seed"]):
            from jaxrej.data.registry import is_local

            if not is_local(s["dataset"]):
                what = "the score model" if kind == "sbgc" else "the ABS run"
                notes.append(
                    f"{what} ({d!r}) was not trained with the {cands[0][0]} run's validation "
                    f"hold-out (its data.val_fraction={s['val_fraction']}, seed={s['seed']}): it "
                    "may have seen the validation rows its thresholds come from"
                )
    if first["val_fraction"] is None:
        from jaxrej.data.registry import is_local

        first = {**first, "val_fraction": 0.15}  # unused by a local set: its fixed split
        if not is_local(first["dataset"]):
            notes.append(
                "no run names data.val_fraction: validation = 15% of each training "
                "class, rows the runs trained on (thresholds fit on them reject too much)"
            )
    return first, notes


def eval_data(found: dict[str, str], *, test: str | None, ood: list[str] | None, limit: int = 0):
    """(EvalData, sources, notes) of the runs' dataset: validation rows of the heads' rule
    (`eval.heads.load_heads_data`), the test split (or `test`), and OOD sets from `ood`, else the
    runs' configured sets, else `data.ood.synthetic_ood_sets` of the test images (seed 1000)."""
    from jaxrej.data import ood as ood_sets
    from jaxrej.eval.heads import load_heads_data
    from jaxrej.eval.protocol import EvalData

    s, notes = _run_data(_kinds(found))
    named = tuple(ood) if ood else s["ood"]
    hd = load_heads_data(s["dataset"], ood=named, val_fraction=s["val_fraction"], seed=s["seed"],
                         test=test)  # fmt: skip
    xt, yt = hd.test
    if limit:
        xt, yt = xt[:limit], yt[:limit]
    sources = dict(hd.sources)
    if named:
        sets = dict(hd.ood)
    else:
        sets = ood_sets.synthetic_ood_sets(xt, seed=1000)
        sources = {k: v for k, v in sources.items() if not k.startswith("ood/")}
        sources |= {f"ood/{k}": "jaxrej.data.ood.synthetic_ood_sets(test, seed=1000)" for k in sets}
        notes.append("no OOD dataset named (--ood [name=]SPEC): the OOD sets are synthetic "
                     f"({', '.join(sets)})")  # fmt: skip
    sources.pop("fit", None)
    return EvalData(val=hd.val, test=(xt, yt), ood=sets), sources, notes


@dataclasses.dataclass(frozen=True, kw_only=True)
class AttackRunOptions:
    """Sizes of `jaxrej evaluate`'s adversarial tables. n_heads: test rows attacked per head (0:
    all); n_model: rows of the score model / ABS (spread over the test split; 0 skips them);
    linf_eps, l2_eps: radii per norm (an empty tuple skips the norm); steps / model_steps:
    gradient steps per attack; model_norms: the norms the score model / ABS is attacked in;
    model_attacks: their suite's kinds (`eval.adversarial.SUITE_KINDS`; None: all but PGD);
    square_queries / model_square_queries: Square's queries;
    n_targets: targeted APGD's classes; reject_restarts: the reject-aware attack's restarts;
    model_unbounded: run the unbounded masking check on the score model / ABS too (one more
    compilation and 20 gradient steps per row; the heads always run it); model_fresh: the score
    model's (ODE or ELBO) attack view draws fresh probes / times at every attack step (else the
    judge's fixed ones), and the eot masking check runs (`eval.adversarial._eot_check`);
    rules: threshold rules judged (None: every fitted rule); batch sizes per attack call; seed:
    the attacks' keys; scorers: the scorers attacked (None: every one; the clean, corruption
    and OOD tables always hold them all)."""

    n_heads: int = 0
    n_model: int = 100
    linf_eps: tuple[float, ...] = (0.1, 0.2, 0.3)
    l2_eps: tuple[float, ...] = (0.5, 1.0, 2.0)
    model_norms: tuple[str, ...] = ("linf", "l2")
    model_attacks: tuple[str, ...] | None = None
    steps: int = 20
    model_steps: int = 10
    square_queries: int = 200
    model_square_queries: int = 50
    n_targets: int = 3
    model_n_targets: int = 1
    reject_restarts: int = 2
    model_unbounded: bool = False
    model_fresh: bool = False
    rules: tuple[str, ...] | None = ("p1",)
    heads_batch: int = 120
    model_batch: int = 16
    seed: int = 0
    scorers: tuple[str, ...] | None = None

    def __post_init__(self):
        if self.n_heads < 0 or self.n_model < 0:
            raise ValueError("attack sizes: expected >= 0 rows")
        if min(self.square_queries, self.model_square_queries) < 1:
            raise ValueError("square_queries, model_square_queries: expected >= 1 query")
        if self.scorers is not None and not self.scorers:
            raise ValueError("scorers: expected at least one scorer name, or None for all")


def adversarial(judges, data, *, clean_test: dict[str, np.ndarray], options: AttackRunOptions,
                out_dir: str, log=print) -> dict:  # fmt: skip
    """The L-inf and L2 adversarial tables (`eval.adversarial`) of every scorer in `judges`
    ({name: Scorer with its clean-table thresholds}): heads on options.n_heads test rows (all by
    default), the score model and ABS on options.n_model rows, each spread evenly over the test
    split (equal n: the same rows).
    clean_test: {name: the clean table's test scores (N, C)}. Each scorer's result is cached in
    out_dir/adversarial/<norm>_<name>.json (reused when its settings match), its per-eps worst
    inputs in <norm>_<name>_worst.npz, and its rows are printed (`log`) as it finishes. Then the
    transfer check (`adversarial.transfer_checks`): each model scorer re-judges the worst inputs
    of the surrogate head (TRANSFER_SURROGATES, the first present) on the rows both attacked.
    Returns {'report': {norm: {name: result}}, 'markdown'}."""
    from jaxrej.eval import adversarial as adv
    from jaxrej.io import atomic_save_npz, atomic_write_json

    o = options
    folder = os.path.join(out_dir, "adversarial")
    os.makedirs(folder, exist_ok=True)
    xt, yt = data.test
    report, md = {}, []
    for norm, eps in (("linf", o.linf_eps), ("l2", o.l2_eps)):
        if not eps:
            continue
        title = {"linf": "L-inf", "l2": "L2"}[norm]
        log(f"adversarial ({title}): " + adv.HEADER)
        report[norm] = {}
        worst, paths, rows_of, attacked = {}, {}, {}, set()
        unknown = set(o.scorers or ()) - set(judges)
        if unknown:
            raise ValueError(f"--attack-scorers: {sorted(unknown)} not among {list(judges)}")
        for name, sc in judges.items():
            if o.scorers is not None and name not in o.scorers:
                continue
            model = name not in HEAD_SCORERS
            n = o.n_model if model else (o.n_heads or len(yt))
            if not n or (model and norm not in o.model_norms):
                continue
            n = min(n, len(yt))
            # spread over the test split; the heads and a model attacked on n rows share them
            rows = np.linspace(0, len(yt) - 1, n).round().astype(int)
            suite = adv.default_suite(
                num_classes=sc.num_classes, steps=o.model_steps if model else o.steps,
                reject_restarts=o.reject_restarts,
                n_targets=o.model_n_targets if model else o.n_targets,
                square_queries=o.model_square_queries if model else o.square_queries,
                pgd=not model, only=o.model_attacks if model else None,
                loop="python" if model else None,  # one compiled gradient step for the suite
            )  # fmt: skip
            # heads: every input re-judged (a judgement costs less than an attack step) and the
            # unbounded check; the score model / ABS: one judgement per example and eps, of the
            # view's worst input; the unbounded check where asked (one more compilation)
            opts = adv.AdversarialOptions(eps=tuple(eps), norm=norm, rules=o.rules,
                                          batch_size=min(o.model_batch if model else o.heads_batch, n),
                                          judge="best" if model else "every",
                                          unbounded=o.model_unbounded if model else True)  # fmt: skip
            settings = {"scorer": sc.settings, "thresholds": {k: np.asarray(v).tolist() for k, v in
                                                              sc.thresholds.items()},
                        "rows": rows.tolist(), "options": repr(opts), "seed": o.seed,
                        "suite": [(a.name, repr(a.kwargs)) for a in suite]}  # fmt: skip
            if model and o.model_fresh:
                settings["view"] = "fresh"
            path = os.path.join(folder, f"{norm}_{name}.json")
            worst_path = os.path.join(folder, f"{norm}_{name}_worst.npz")
            result = None
            try:
                with open(path) as f:
                    old = json.load(f)
                if old.get("settings") == json.loads(json.dumps(settings)):
                    result = old["result"]
                    with np.load(worst_path) as z:
                        worst[name] = z["x"]
            except (OSError, ValueError, KeyError):
                pass
            if result is None:
                r = adv.evaluate_scorer(sc, xt[rows], yt[rows], clean_scores=clean_test[name][rows],
                                        suite=suite, options=opts,
                                        key=jax.random.key(o.seed), log=log)  # fmt: skip
                result = adv.json_ready(r) | {"rows": rows.tolist()}
                worst[name] = r["_worst_x"]
                attacked.add(name)
                atomic_save_npz(worst_path, x=worst[name])
                atomic_write_json(path, {"settings": settings, "result": result})
            report[norm][name] = result
            paths[name], rows_of[name] = (path, settings), rows
            if model:  # printed after the transfer check
                continue
            for line in adv.markdown_rows(name, result):
                log(line)
        surrogate = next((h for h in TRANSFER_SURROGATES if h in worst), None)
        for name, result in report[norm].items():
            if name in HEAD_SCORERS:
                continue
            checks = [c for c in result["checks"] if not c["name"].startswith("transfer(")]
            done = [c for c in result["checks"] if c["name"].startswith(f"transfer({surrogate})@")]
            if done and not attacked & {name, surrogate}:  # both from the cache: checked before
                checks += done
                surrogate_rows = ()
            else:
                surrogate_rows = rows_of.get(surrogate, ())
            # the model's rows among the surrogate's (the heads attack every row by default)
            pos = {int(r): i for i, r in enumerate(surrogate_rows)}
            idx = [pos.get(int(r)) for r in rows_of[name]]
            if surrogate is not None and None not in idx and "levels" in result:
                found = adv.transfer_checks(judges[name], result, worst[surrogate][:, idx],
                                            yt[rows_of[name]], surrogate=surrogate)  # fmt: skip
                checks += [c.to_json() for c in found]
            if checks != result["checks"]:
                result["checks"] = checks
                path, settings = paths[name]
                atomic_write_json(path, {"settings": settings, "result": result})
            for line in adv.markdown_rows(name, result):
                log(line)
        md.append(adv.markdown(report[norm], title=title))
    return {"report": report, "markdown": "\n".join(md)}


# the heads whose worst inputs the model scorers re-judge (the transfer check), first present
TRANSFER_SURROGATES = ("msp", "msp_temperature", "sdim_logit", "mahalanobis", "gmm", "gmm_cc")

# the `jaxrej evaluate` flags' defaults: a folder is tagged by each option off these (evaluate_stem)
EVALUATE_DEFAULTS = EvalOptions(corruptions=CORRUPTIONS)
ATTACK_DEFAULTS = AttackRunOptions(
    model_attacks=("apgd-ce", "apgd-dlr", "apgd-t", "apgd-reject", "square")
)


def evaluate_stem(*, test: str | None = None, ood: Sequence[str] | None = None, limit: int = 0,
                  options: EvalOptions = EVALUATE_DEFAULTS,
                  attack: AttackRunOptions | None = ATTACK_DEFAULTS) -> str:  # fmt: skip
    """The name of `evaluate_workdir`'s output folder: 'evaluate', with '_<test name>',
    '_ood_<a>_<b>', '_limit<N>' for other sets and a tag for every sizing option off the
    command's defaults (EVALUATE_DEFAULTS, ATTACK_DEFAULTS; attack None: '_noattack'), e.g.
    'evaluate_nc12_nood60_scale1': a run with other settings never overwrites another's."""
    from jaxrej.data.registry import parse_named

    def text(v):
        if isinstance(v, bool):  # a switch off its default: the tag alone
            return ""
        if isinstance(v, tuple):
            return "-".join(text(u) for u in v)
        return f"{v:g}" if isinstance(v, float) else str(v)

    stem = "evaluate"
    if test:
        stem += f"_{parse_named(test)[0]}"
    if ood:
        stem += "_ood_" + "_".join(parse_named(o)[0] for o in ood)
    if limit:
        stem += f"_limit{limit}"
    o, d = options, EVALUATE_DEFAULTS
    if o.corruptions != d.corruptions:
        stem += "_corrupt-" + (text(o.corruptions) or "none")
    if o.severities != d.severities:
        stem += "_sev" + "".join(str(s) for s in o.severities)
    for field, tag in (("n_corrupt", "nc"), ("n_ood", "nood"), ("corruption_scale", "scale")):
        if getattr(o, field) != getattr(d, field):
            stem += f"_{tag}{text(getattr(o, field))}"
    if attack is None:
        return stem + "_noattack"
    tags = (("n_heads", "atk"), ("n_model", "atksbgc"), ("model_steps", "atksteps"),
            ("model_norms", "atknorms"), ("model_attacks", "atksuite"),
            ("model_square_queries", "atkq"), ("linf_eps", "linf"),
            ("l2_eps", "l2"), ("model_unbounded", "atkunb"), ("model_fresh", "atkfresh"),
            ("scorers", "atkonly-"))  # fmt: skip
    for field, tag in tags:
        v = getattr(attack, field)
        if v != getattr(ATTACK_DEFAULTS, field):
            stem += f"_no{tag}" if v == () else f"_{tag}{text(v)}"  # a skipped norm: '_nol2'
    return stem


def load_scorers(found: dict[str, str], *, sbgc_batch: int, fresh: bool = False) -> dict:
    """{name: Scorer} of every run `jaxrej.scorers.find_runs` found (heads loaded once); fresh:
    the score model's attack views draw fresh probes / times at every step."""
    from jaxrej import scorers
    from jaxrej.scorers import heads
    from jaxrej.scorers.sbgc import ViewOptions

    out = {}
    head_dirs = {d for k, d in found.items() if k in heads.HEAD_SCORERS}
    fitted = {d: heads.load_heads(d) for d in head_dirs}
    for name, d in found.items():
        if name in heads.HEAD_SCORERS:
            out[name] = heads.heads_scorer(d, name, heads=fitted[d])
        else:
            score_model = name in ("sbgc", "elbo")
            kw = {"view": ViewOptions(fresh=True)} if score_model and fresh else {}
            out[name] = scorers.load(d, name, batch_size=sbgc_batch if score_model else None, **kw)
    return out


def evaluate_workdir(workdir: str, *, options: EvalOptions = EVALUATE_DEFAULTS,
                     attack: AttackRunOptions | None = ATTACK_DEFAULTS, test: str | None = None,
                     ood: Sequence[str] | None = None, limit: int = 0, sbgc_batch: int = 36,
                     progress: bool = True) -> dict:  # fmt: skip
    """`jaxrej evaluate`: the reject protocol (`eval.protocol.evaluate`) of every scorer
    `scorers.find_runs(workdir)` finds, judged on `eval_data(test, ood, limit)`, then with
    `attack` the adversarial tables (`adversarial`) of every scorer. Writes workdir/<stem>/
    (`evaluate_stem`): evaluate.json, evaluate.md, the figures and the caches that make a killed
    run resume; prints each table as it finishes; returns a summary. sbgc_batch: images per
    score-model solve batch."""
    from jaxrej import scorers
    from jaxrej.eval import protocol, tables
    from jaxrej.io import atomic_write_json, atomic_write_text

    if limit < 0:
        raise ValueError(f"--limit: expected >= 0, got {limit}")
    found = scorers.find_runs(workdir)
    data, sources, notes = eval_data(found, test=test, ood=ood, limit=limit)
    judges = load_scorers(found, sbgc_batch=sbgc_batch,
                          fresh=attack is not None and attack.model_fresh)  # fmt: skip
    for kind, dirs in scorers.registry.run_kinds(workdir).items():
        if len(dirs) > 1:
            notes.append(f"several {kind} runs found; evaluated {dirs[0]!r} only")
    out_dir = os.path.join(
        workdir, evaluate_stem(test=test, ood=ood, limit=limit, options=options, attack=attack)
    )
    os.makedirs(out_dir, exist_ok=True)
    t0 = time.time()
    report = protocol.evaluate(judges, data, options=options, out_dir=out_dir, progress=progress)
    rules = next(iter(report["scorers"].values()))["thresholds"].keys()
    md = tables.markdown(report, rules=list(rules))
    print(md, file=sys.stderr, flush=True)  # the clean, corruption and OOD tables, now
    if attack is not None:
        clean = protocol.test_scores(judges, data, out_dir=out_dir)
        log = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731
        adv = adversarial(protocol.fitted_scorers(judges, report), data, clean_test=clean,
                          options=attack, out_dir=out_dir, log=log)  # fmt: skip
        # per-example levels stay in adversarial/<norm>_<name>.json only
        report["adversarial"] = {norm: {name: {k: v for k, v in r.items() if k != "levels"}
                                        for name, r in by_name.items()}
                                 for norm, by_name in adv["report"].items()}  # fmt: skip
        md += "\n" + adv["markdown"]
        print(adv["markdown"], file=sys.stderr, flush=True)
    report.update({"runs": found, "sets": sources, "notes": notes, "seconds": time.time() - t0})
    atomic_write_json(os.path.join(out_dir, "evaluate.json"), report)
    atomic_write_text(os.path.join(out_dir, "evaluate.md"), md)
    for n in notes:
        print(f"jaxrej evaluate: note: {n}", file=sys.stderr)
    return {
        "out_dir": out_dir,
        "scorers": list(judges),
        "clean": {k: r["clean"] for k, r in report["scorers"].items()},
        "ood_auroc": {
            k: {s: o["auroc"] for s, o in r["ood"].items()} for k, r in report["scorers"].items()
        },  # fmt: skip
        "figures": report["figures"],
        "notes": notes,
        "seconds": round(report["seconds"], 1),
    }
