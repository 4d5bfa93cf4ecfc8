"""`jaxrej demo [--workdir ./jaxrej-demo]`: the whole story on the embedded digits, no download.

1. trains the score-based generative classifier (`jaxrej train --config configs/digits_sbgc.py`)
   into WORKDIR/sbgc, 2. the base classifier and reject heads (`jaxrej heads --config
   configs/digits_heads.py`) into WORKDIR/heads, 3. runs `jaxrej evaluate --workdir WORKDIR`
   (clean, corruptions, OOD sets, attacks; tables and PNG figures in WORKDIR/evaluate*/).
Re-running reuses what is already trained and scored. The corruptions act at CIFAR pixel size
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

import argparse
import os
import sys
import time

# the score model's attacks in the demo: one compilation each (the costly part on a CPU), L-inf
# only; `jaxrej evaluate` adds APGD-DLR and the L2 table
DEMO_SBGC_SUITE = "apgd-ce,apgd-t,apgd-reject,square"


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


def run(args) -> dict:
    from jaxrej.commands import evaluate, heads, train
    from jaxrej.scorers.heads import HEADS_FILE

    cfg = configs_dir(args.configs)
    os.makedirs(args.workdir, exist_ok=True)
    t0 = time.time()
    times = {}
    ns = argparse.Namespace
    print("jaxrej demo: 1/3 score-based classifier (jaxrej train)", file=sys.stderr)
    train.run(ns(config=os.path.join(cfg, "digits_sbgc.py"), overrides=[],
                 workdir=os.path.join(args.workdir, "sbgc"), no_progress=args.no_progress))  # fmt: skip
    times["train_s"] = time.time() - t0
    hdir = os.path.join(args.workdir, "heads")
    if os.path.isfile(os.path.join(hdir, HEADS_FILE)) and os.path.isfile(
        os.path.join(hdir, "heads.json")
    ):
        print(f"jaxrej demo: 2/3 heads already in {hdir!r}, reused", file=sys.stderr)
    else:
        print("jaxrej demo: 2/3 base classifier and reject heads (jaxrej heads)", file=sys.stderr)
        heads.run(ns(config=os.path.join(cfg, "digits_heads.py"), overrides=[], workdir=hdir,
                     test=None, ood=None, no_progress=args.no_progress))  # fmt: skip
    times["heads_s"] = time.time() - t0 - times["train_s"]
    print("jaxrej demo: 3/3 evaluation (jaxrej evaluate)", file=sys.stderr)
    summary = evaluate.run(ns(workdir=args.workdir, test=None, ood=None, corruptions="all",
                              severities="1,2,3,4,5", n_corrupt=args.n_corrupt, limit=0, n_ood=args.n_ood,
                              attack=True, attack_n=args.attack_n,
                              attack_sbgc_n=args.attack_sbgc_n,
                              attack_sbgc_steps=args.attack_sbgc_steps,
                              attack_sbgc_norms="linf", attack_sbgc_suite=DEMO_SBGC_SUITE,
                              linf_eps="0.1,0.2,0.3",
                              l2_eps="0.5,1,2", corruption_scale=1.0, sbgc_batch=20,
                              no_progress=args.no_progress, overrides=[]))  # fmt: skip
    times["evaluate_s"] = time.time() - t0 - times["train_s"] - times["heads_s"]
    return {**summary, "seconds": {k: round(v, 1) for k, v in times.items()},
            "total_s": round(time.time() - t0, 1)}  # fmt: skip
