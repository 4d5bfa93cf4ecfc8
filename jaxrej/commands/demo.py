"""`jaxrej demo [--workdir ./jaxrej-demo]`: the whole story on the embedded digits, no download.

The configs are the package's own (jaxrej.configs, the repository's configs/, shipped in the
wheel; `--configs DIR` for others). `options` turns them and the flags into the keywords of
`jaxrej.demo.run_demo`, the same library calls as these three commands (tests/test_demo.py):
1. `jaxrej train --config configs/digits_sbgc.py --workdir WORKDIR/sbgc` (the score-based
   generative classifier), 2. `jaxrej heads --config configs/digits_heads.py --workdir
   WORKDIR/heads` (the base classifier and reject heads), 3. `jaxrej evaluate --workdir WORKDIR`
   with the sizes below (clean, corruptions, OOD sets, attacks; tables and PNG figures in
   WORKDIR/evaluate*/). Re-running reuses what is already trained and scored. The corruptions act at CIFAR pixel size
(`--corruption-scale 1`): the size rule would shrink the blurs, elastic and pixelate of an 8x8
digit to nothing. `--n-corrupt`, `--n-ood`, `--attack-n` (heads; 0: all 360 test
digits) and `--attack-sbgc-n` (the score model's attacked digits, 64: L-inf, APGD-CE, APGD-T,
the reject-aware APGD and Square through one compiled gradient step, judged once per digit and
eps by the clean table's scorer) size the evaluation; the target is 20 minutes on 2 idle CPU
cores (README: not re-measured since issue 21's protocol), and the score model is scored in
batches of 20, which divide the validation, test, OOD and corruption populations (12 digits x 5
severities) with little padding.
"""

from __future__ import annotations

import os

# the score model's attacks in the demo: one compilation each (the costly part on a CPU), L-inf
# only; `jaxrej evaluate` adds APGD-DLR and the L2 table
DEMO_SBGC_SUITE = ("apgd-ce", "apgd-t", "apgd-reject", "square")


def add_arguments(parser) -> None:
    parser.add_argument("--workdir", default="./jaxrej-demo", help="output folder (reused)")
    parser.add_argument("--configs", default=None,
                        help="folder of the digits configs (default: the installed jaxrej.configs)")  # fmt: skip
    parser.add_argument("--n-ood", type=int, default=60, help="images per OOD set")
    parser.add_argument("--n-corrupt", type=int, default=12,
                        help="test digits per corruption and severity")  # fmt: skip
    parser.add_argument("--attack-n", type=int, default=0,
                        help="test digits attacked per head (0: all)")  # fmt: skip
    parser.add_argument("--attack-sbgc-n", type=int, default=64,
                        help="test digits attacked for the score model")  # fmt: skip
    parser.add_argument("--attack-sbgc-steps", type=int, default=10,
                        help="gradient steps per attack of the score model")  # fmt: skip
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def configs_dir(given: str | None) -> str:
    """`given`, else the folder of the installed package jaxrej.configs (the repository's
    configs/, shipped in the wheel)."""
    if given is None:
        import jaxrej.configs

        given = os.path.dirname(jaxrej.configs.__file__)
    if not os.path.isfile(os.path.join(given, "digits_sbgc.py")):
        raise ValueError(
            f"--configs: no digits_sbgc.py in {given!r}; pass the repository's configs/"
        )
    return given


def options(args, configs: str) -> dict:
    """The demo's flags and configs as `jaxrej.demo.run_demo` keywords."""
    from jaxrej.config import heads_settings, load_config, new_run
    from jaxrej.corruptions import CORRUPTIONS
    from jaxrej.eval.protocol import EvalOptions
    from jaxrej.eval.runs import AttackRunOptions

    sbgc = load_config(os.path.join(configs, "digits_sbgc.py"))
    heads = load_config(os.path.join(configs, "digits_heads.py"))
    data, heads_options, seed = heads_settings(heads)
    evaluate = {
        "options": EvalOptions(corruptions=CORRUPTIONS, severities=(1, 2, 3, 4, 5),
                               n_corrupt=args.n_corrupt, n_ood=args.n_ood or None,
                               corruption_scale=1.0),
        "attack": AttackRunOptions(n_heads=args.attack_n, n_model=args.attack_sbgc_n,
                                   model_steps=args.attack_sbgc_steps, linf_eps=(0.1, 0.2, 0.3),
                                   l2_eps=(0.5, 1.0, 2.0), model_norms=("linf",),
                                   model_attacks=DEMO_SBGC_SUITE),
        "sbgc_batch": 20,
    }  # fmt: skip
    return {"sbgc": new_run(sbgc.to_dict()), "evaluate": evaluate,
            "heads": {"data": data, "options": heads_options, "seed": seed,
                      "config": heads.to_dict()}}  # fmt: skip


def run(args) -> dict:
    from jaxrej.demo import run_demo

    kw = options(args, configs_dir(args.configs))
    return run_demo(args.workdir, **kw, progress=not args.no_progress)
