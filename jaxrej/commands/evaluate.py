"""`jaxrej evaluate --workdir DIR [--test SPEC] [--ood [name=]SPEC ...] [--corruptions all|none|a,b]
[--severities 1,2,3,4,5] [--n-corrupt N] [--attack/--no-attack]`: the reject protocol
(`jaxrej.eval.protocol`) for every scorer found in DIR or one level below (`jaxrej.eval.runs`:
a score model trained by `jaxrej train`, heads saved by `jaxrej heads`).

Data: the runs' dataset string with its validation rows (never trained on) for the per-class
thresholds and its test split (or `--test`); OOD sets from `--ood`, else the runs' configured
ones, else for 8x8/28x28 grey images the synthetic sets of `jaxrej.data.ood`. Corruptions: the
first `--n-corrupt` test rows under every corruption and severity.

Writes DIR/<stem>/evaluate.json, evaluate.md, the PNG figures and scores/ (the cache that makes
a killed run resume), where <stem> is "evaluate", with "_<test name>", "_ood_<names>",
"_limit<N>" and a tag per sizing option off its default appended (`result_stem`): a run on other
sets or sizes never overwrites another's results.
"""

from __future__ import annotations

import os
import sys
import time


def add_arguments(parser) -> None:
    parser.add_argument("--workdir", required=True, help="folder holding the trained runs")
    parser.add_argument("--test", default=None, metavar="[name=]SPEC",
                        help="evaluate on this dataset's test split instead of the runs'")  # fmt: skip
    parser.add_argument("--ood", action="append", default=None, metavar="[name=]SPEC",
                        help="an OOD set (repeatable); replaces the default sets")  # fmt: skip
    parser.add_argument("--corruptions", default="all",
                        help="'all' (the 15 common corruptions), 'none', or a comma list")  # fmt: skip
    parser.add_argument("--severities", default="1,2,3,4,5", help="comma list of 1..5")
    parser.add_argument("--n-corrupt", type=int, default=100,
                        help="test rows per corruption and severity (default 100)")  # fmt: skip
    parser.add_argument("--n-ood", type=int, default=0, help="rows per OOD set (0: all)")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N test rows")
    parser.add_argument("--attack", action=argparse_bool(), default=True,
                        help="the adversarial table (default on; --no-attack skips it)")  # fmt: skip
    parser.add_argument("--attack-n", type=int, default=100,
                        help="test rows attacked per head (default 100)")  # fmt: skip
    parser.add_argument("--attack-sbgc-n", type=int, default=8,
                        help="test rows attacked for the score model (default 8; 0 skips it)")  # fmt: skip
    parser.add_argument("--corruption-scale", type=float, default=None,
                        help="corruption length scale (default: the size rule sqrt(H W) / 32)")  # fmt: skip
    parser.add_argument("--sbgc-batch", type=int, default=36, help="images per SBGC solve batch")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def argparse_bool():
    import argparse

    return argparse.BooleanOptionalAction


# options that change the numbers, and their tags in the result folder's name
SIZE_TAGS = (("corruptions", "corrupt-"), ("severities", "sev"), ("n_corrupt", "nc"),
             ("n_ood", "nood"), ("corruption_scale", "scale"), ("attack_n", "atk"),
             ("attack_sbgc_n", "atksbgc"))  # fmt: skip


def result_stem(args) -> str:
    """'evaluate', with '_<test>', '_ood_<a>_<b>', '_limit<N>' for other sets and a tag for every
    sizing option off its default (SIZE_TAGS; '_noattack'), e.g. 'evaluate_nc12_nood60_scale1':
    a run with other settings never overwrites another's results."""
    import argparse

    from jaxrej.data.registry import parse_named

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    defaults = vars(parser.parse_args(["--workdir", "."]))
    stem = "evaluate"
    if args.test:
        stem += f"_{parse_named(args.test)[0]}"
    if args.ood:
        stem += "_ood_" + "_".join(parse_named(o)[0] for o in args.ood)
    if args.limit:
        stem += f"_limit{args.limit}"
    for field, tag in SIZE_TAGS:
        value = getattr(args, field)
        if value != defaults[field] and not (field.startswith("attack_") and not args.attack):
            text = f"{value:g}" if isinstance(value, float) else str(value)
            stem += f"_{tag}" + text.replace(",", "" if field == "severities" else "-")
    if not args.attack:
        stem += "_noattack"
    return stem


def run(args) -> dict:
    from jaxrej import corruptions
    from jaxrej.eval import protocol, runs, tables
    from jaxrej.training.checkpoint import atomic_write_json, atomic_write_text

    if args.limit < 0 or args.n_corrupt < 1:
        raise ValueError("--limit: expected >= 0; --n-corrupt: expected >= 1")
    if args.corruptions == "all":
        names = corruptions.CORRUPTIONS
    elif args.corruptions == "none":
        names = ()
    else:
        names = tuple(n.strip() for n in args.corruptions.split(",") if n.strip())
    try:
        sevs = tuple(int(s) for s in args.severities.split(","))
    except ValueError as e:
        raise ValueError(
            f"--severities: expected a comma list of 1..5, got {args.severities!r}"
        ) from e
    options = protocol.EvalOptions(corruptions=names, severities=sevs, n_corrupt=args.n_corrupt,
                                   corruption_scale=args.corruption_scale,
                                   n_ood=args.n_ood or None)  # fmt: skip
    found = runs.find_runs(args.workdir)
    data, sources, notes = runs.eval_data(found, test=args.test, ood=args.ood, limit=args.limit)
    scorers = {}
    for d in found["heads"][:1]:
        scorers.update(runs.heads_scorers(d, batch_size=256))
    for d in found["sbgc"][:1]:
        scorers["sbgc"] = runs.sbgc_scorer(d, batch_size=args.sbgc_batch)
    for d in found.get("abs", [])[:1]:
        scorers["abs"] = runs.abs_scorer(d, batch_size=100)
    for kind, dirs in found.items():
        if len(dirs) > 1:
            notes.append(f"several {kind} runs found; evaluated {dirs[0]!r} only")
    out_dir = os.path.join(args.workdir, result_stem(args))
    os.makedirs(out_dir, exist_ok=True)
    t0 = time.time()
    report = protocol.evaluate(scorers, data, options=options, out_dir=out_dir,
                               progress=not args.no_progress)  # fmt: skip
    md = tables.markdown(report, percentiles=options.percentiles)
    if args.attack:
        adv = runs.adversarial(found, data, out_dir=out_dir, n_heads=args.attack_n,
                               n_sbgc=args.attack_sbgc_n, progress=not args.no_progress)  # fmt: skip
        report["adversarial"] = adv["report"]
        md += "\n" + adv["markdown"]
    report.update({"runs": found, "sets": sources, "notes": notes, "seconds": time.time() - t0})
    atomic_write_json(os.path.join(out_dir, "evaluate.json"), report)
    atomic_write_text(os.path.join(out_dir, "evaluate.md"), md)
    print(md, file=sys.stderr)
    for n in notes:
        print(f"jaxrej evaluate: note: {n}", file=sys.stderr)
    return {
        "out_dir": out_dir,
        "scorers": list(scorers),
        "clean": {k: r["clean"] for k, r in report["scorers"].items()},
        "ood_auroc": {
            k: {s: o["auroc"] for s, o in r["ood"].items()} for k, r in report["scorers"].items()
        },  # fmt: skip
        "figures": report["figures"],
        "notes": notes,
        "seconds": round(report["seconds"], 1),
    }
