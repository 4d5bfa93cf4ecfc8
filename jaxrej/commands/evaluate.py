"""`jaxrej evaluate --workdir DIR [--test SPEC] [--ood [name=]SPEC ...] [--corruptions all|none|a,b]
[--severities 1,2,3,4,5] [--n-corrupt N] [--attack/--no-attack] [--attack-n N]
[--attack-sbgc-n N]`: the reject protocol (`jaxrej.eval.protocol`) for every scorer found in DIR
or one level below (`jaxrej.scorers.find_runs`: a score model trained by `jaxrej train`, heads
saved by `jaxrej heads`, an ABS run), then the adversarial tables (`jaxrej.eval.adversarial`,
L-inf and L2): every scorer's attack view attacked by the suite, every adversarial input re-judged
by the clean table's scorer and thresholds; the heads on every test row (`--attack-n`), the score
model on `--attack-sbgc-n` rows (default 100) spread over the test split.

Data: the runs' dataset string with its validation rows (never trained on) for the per-class
thresholds and its test split (or `--test`); OOD sets from `--ood`, else the runs' configured
ones, else for 8x8/28x28 grey images the synthetic sets of `jaxrej.data.ood`. Corruptions: the
first `--n-corrupt` test rows under every corruption and severity.

Tables print as each finishes: the clean, corruption and OOD tables once scored, then each
scorer's adversarial rows. Writes DIR/<stem>/evaluate.json, evaluate.md, the PNG figures,
scores/ and adversarial/ (the caches that make a killed run resume), where <stem> is "evaluate", with "_<test name>", "_ood_<names>",
"_limit<N>" and a tag per sizing option off its default appended (`result_stem`): a run on other
sets or sizes never overwrites another's results.
"""

from __future__ import annotations


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
    parser.add_argument("--attack-n", type=int, default=0,
                        help="test rows attacked per head (default 0: all)")  # fmt: skip
    parser.add_argument("--attack-sbgc-n", type=int, default=100,
                        help="test rows attacked for the score model / ABS (default 100; 0 skips "
                        "them)")  # fmt: skip
    parser.add_argument("--attack-sbgc-steps", type=int, default=10,
                        help="gradient steps per attack of the score model (default 10)")  # fmt: skip
    parser.add_argument("--attack-sbgc-norms", default="linf,l2",
                        help="norms the score model is attacked in (default linf,l2)")  # fmt: skip
    parser.add_argument("--attack-sbgc-suite", default="apgd-ce,apgd-dlr,apgd-t,apgd-reject,square",
                        help="the score model's attacks (jaxrej.eval.adversarial.SUITE_KINDS)")  # fmt: skip
    parser.add_argument("--attack-sbgc-queries", type=int, default=50,
                        help="Square's queries against the score model / ABS (default 50)")  # fmt: skip
    parser.add_argument("--attack-sbgc-unbounded", action="store_true",
                        help="run the unbounded masking check on the score model / ABS too")  # fmt: skip
    parser.add_argument("--attack-fresh-probes", action="store_true",
                        help="attack the score model with fresh probes / ELBO times at every step "
                             "(not the judge's fixed ones), and run the EOT masking check")  # fmt: skip
    parser.add_argument("--attack-scorers", default="",
                        help="comma list of the scorers attacked (default: every one)")  # fmt: skip
    parser.add_argument("--linf-eps", default="0.1,0.2,0.3", help="L-inf radii ('' skips)")
    parser.add_argument("--l2-eps", default="0.5,1,2", help="L2 radii ('' skips)")
    parser.add_argument("--corruption-scale", type=float, default=None,
                        help="corruption length scale (default: the size rule sqrt(H W) / 32)")  # fmt: skip
    parser.add_argument("--sbgc-batch", type=int, default=36, help="images per SBGC solve batch")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def argparse_bool():
    import argparse

    return argparse.BooleanOptionalAction


def _radii(flag: str, text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError as e:
        raise ValueError(f"{flag}: expected a comma list of radii, got {text!r}") from e


def options_from_args(args) -> dict:
    """The flags as `jaxrej.eval.runs.evaluate_workdir` keywords; ValueError naming a bad one."""
    from jaxrej import corruptions
    from jaxrej.eval.protocol import EvalOptions
    from jaxrej.eval.runs import AttackRunOptions

    if args.limit < 0 or args.n_corrupt < 1:
        raise ValueError("--limit: expected >= 0; --n-corrupt: expected >= 1")
    if args.attack_sbgc_queries < 1:
        raise ValueError(f"--attack-sbgc-queries: expected >= 1, got {args.attack_sbgc_queries}")
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
    attack = AttackRunOptions(
        n_heads=args.attack_n, n_model=args.attack_sbgc_n, model_steps=args.attack_sbgc_steps,
        linf_eps=_radii("--linf-eps", args.linf_eps), l2_eps=_radii("--l2-eps", args.l2_eps),
        model_norms=tuple(v.strip() for v in args.attack_sbgc_norms.split(",") if v.strip()),
        model_attacks=tuple(v.strip() for v in args.attack_sbgc_suite.split(",") if v.strip()),
        model_square_queries=args.attack_sbgc_queries,
        model_unbounded=args.attack_sbgc_unbounded, model_fresh=args.attack_fresh_probes,
        scorers=tuple(v.strip() for v in args.attack_scorers.split(",") if v.strip()) or None,
    )  # fmt: skip
    options = EvalOptions(corruptions=names, severities=sevs, n_corrupt=args.n_corrupt,
                          corruption_scale=args.corruption_scale, n_ood=args.n_ood or None)  # fmt: skip
    return {"options": options, "attack": attack if args.attack else None, "test": args.test,
            "ood": args.ood, "limit": args.limit}  # fmt: skip


def result_stem(args) -> str:
    """The output folder's name for these flags (`jaxrej.eval.runs.evaluate_stem`)."""
    from jaxrej.eval.runs import evaluate_stem

    return evaluate_stem(**options_from_args(args))


def run(args) -> dict:
    from jaxrej.eval.runs import evaluate_workdir

    return evaluate_workdir(args.workdir, **options_from_args(args), sbgc_batch=args.sbgc_batch,
                            progress=not args.no_progress)  # fmt: skip
