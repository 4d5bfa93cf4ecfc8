"""The adversarial protocol: attack a scorer's attack view with a suite, re-judge every input
with the label-blind judge, and report per-example worst cases with Wilson intervals.

    suite = default_suite(num_classes=10, steps=10)
    r = evaluate_scorer(scorer, x, y, clean_scores=s, suite=suite, options=AdversarialOptions(
        eps=(0.1, 0.2, 0.3), norm="linf"), key=key)
    print(markdown({"sbgc": r}, title="L-inf"))

Protocol (Carlini et al. 2019, "On evaluating adversarial robustness"; Stutz et al. 2020):
* the JUDGE is the scorer of the clean table (`jaxrej.scorers.Scorer`: label-blind, thresholds
  fitted on validation rows only); the clean row of this table is the judge's clean-table scores
  of the attacked rows, so its clean accuracy is the clean table's on those rows;
* every attack of the suite (a list of `AttackSpec`) runs on the scorer's ATTACK VIEW
  (`Scorer.for_attack(labels=...)`: cheaper, may keep the label); every input it returns is
  re-judged: (pred, accepted, ok) = the judge's decision at x_adv under each threshold rule;
* per example the outcome of an input is a level: 0 correct and accepted, 1 correct and rejected,
  2 wrong and rejected (a failed solve of the judge is wrong and rejected, and counted apart),
  3 wrong and accepted (fooled). An example's outcome at eps is the max level over every attack
  of the suite, every budget eps' <= eps and the clean input (eps' = 0): each rate below is
  monotone in eps by construction. Rates over the n attacked examples:
    accuracy under attack (no rejection) = mean(level <= 1),
    adversarial rejected                 = mean(level in {1, 2}),
    fooled and accepted                  = mean(level == 3)   (a per-example union),
  and the clean rejection rate; each with its Wilson 95% interval (`jaxrej.metrics`) and n;
* each eps alone (no eps' < eps) is the INDEPENDENT run; whether its rates were monotone in eps
  is reported apart, as a check on the attacks (`independent_monotone`);
* within one eps an example the suite has already fooled-and-accepted under every rule is not
  attacked again (AutoAttack's rule: the worst case cannot grow), so later attacks cost less;
* judge="every" re-judges every attack's input (the exact worst case over the suite); where one
  judgement costs more than an attack step (the ODE judge), judge="best" re-judges per example
  and eps the one input the attack view ranks worst (AutoAttack keeps one input per example too);
* the attack view's own success (union over the suite) is reported beside the judge's numbers.
Masking checks (`jaxrej.eval.masking`) read the per-attack records this returns; `transfer_checks`
re-judges a surrogate scorer's worst inputs (its `_worst_x`) with a model's judge.
"""

from __future__ import annotations

import dataclasses
import inspect
import time
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxrej import attacks
from jaxrej.data.batching import padded_batches

__all__ = ["AdversarialOptions", "AttackSpec", "default_suite", "levels", "worst_case",
           "rates", "evaluate_scorer", "transfer_checks", "markdown", "json_ready"]  # fmt: skip

CORRECT_ACCEPTED, CORRECT_REJECTED, WRONG_REJECTED, FOOLED = 0, 1, 2, 3


@dataclasses.dataclass(frozen=True, kw_only=True)
class AttackSpec:
    """One attack of a suite. attack: a `jaxrej.attacks` function (fn, x, y, *, key, eps,
    norm, **kwargs) -> AttackResult, y the true labels (its goal: misclassified, or with
    thresholds misclassified and accepted); kwargs: its options (loss, steps, n_targets, ...);
    reject_aware: run it once per threshold rule with `thresholds=` that rule's (the reject-aware
    loss); gradient_free: needs no gradient (Square)."""

    name: str
    attack: Callable
    kwargs: tuple = ()
    reject_aware: bool = False
    gradient_free: bool = False


def default_suite(*, num_classes: int, steps: int = 10, reject_restarts: int = 2,
                  n_targets: int = 3, square_queries: int = 100, pgd: bool = True,
                  only: Sequence[str] | None = None, loop: str | None = None) -> list[AttackSpec]:  # fmt: skip
    """PGD-CE (unless pgd=False), APGD-CE, APGD-DLR (C >= 3), APGD-T (`attacks.apgd_targeted`:
    targeted DLR at the n_targets best other classes, C >= 4), the reject-aware loss through APGD
    with `reject_restarts` restarts, and Square (`attacks.square`, gradient-free, margin loss)
    with `square_queries` queries (0: none). only: keep the attacks of these kinds
    (SUITE_KINDS; "apgd-t" is the targeted one whatever its n_targets). loop: the attacks'
    `loop` ("python": one shared jitted gradient step serves every attack, loss and eps of a
    scorer, `jaxrej.attacks.stepper` -- one compilation instead of one per attack; None: their
    default, one compiled region each)."""
    s = [AttackSpec(name="pgd-ce", attack=attacks.pgd, kwargs=(("loss", "ce"), ("steps", steps)))]
    s = s if pgd else []
    s.append(
        AttackSpec(name="apgd-ce", attack=attacks.apgd, kwargs=(("loss", "ce"), ("steps", steps)))
    )
    if num_classes >= 3:
        s.append(AttackSpec(name="apgd-dlr", attack=attacks.apgd,
                            kwargs=(("loss", "dlr"), ("steps", steps))))  # fmt: skip
    if num_classes >= 4 and n_targets:
        s.append(AttackSpec(name=f"apgd-t{n_targets}", attack=attacks.apgd_targeted,
                            kwargs=(("loss", "dlr"), ("steps", steps),
                                    ("n_targets", min(n_targets, num_classes - 1)))))  # fmt: skip
    s.append(AttackSpec(name="apgd-reject", attack=attacks.apgd, reject_aware=True,
                        kwargs=(("loss", "reject"), ("steps", steps),
                                ("restarts", reject_restarts))))  # fmt: skip
    if square_queries:
        s.append(AttackSpec(name="square", attack=attacks.square, gradient_free=True,
                            kwargs=(("queries", square_queries),)))  # fmt: skip
    if loop is not None:
        s = [dataclasses.replace(a, kwargs=a.kwargs + (("loop", loop),)) for a in s]
    if only is not None:
        unknown = set(only) - set(SUITE_KINDS)
        if unknown:
            raise ValueError(
                f"attacks: unknown {sorted(unknown)}; expected names from {SUITE_KINDS}"
            )
        s = [a for a in s if _kind(a.name) in only]
    return s


SUITE_KINDS = ("pgd-ce", "apgd-ce", "apgd-dlr", "apgd-t", "apgd-reject", "square")


def _kind(name: str) -> str:
    return "apgd-t" if name.startswith("apgd-t") and name[6:].isdigit() else name


@dataclasses.dataclass(frozen=True, kw_only=True)
class AdversarialOptions:
    """eps: radii in `norm` ("linf" | "l2"), sorted ascending here; rules: threshold rules of
    the judge to report (keys of Scorer.thresholds; None: all); batch_size: rows per attack
    call (padded: one compilation); skip_fooled: within one eps, do not attack again an example
    already fooled-and-accepted (under every rule, judge="every"; in the view's verdict,
    judge="best"); judge: "every" re-judges every attack's input (the exact worst case over the
    suite), "best" re-judges, per example and eps, the one input the attack view ranks worst
    (the attacker's pick, by the view's scores under the judge's first rule) -- one judgement
    per example and eps, for a judge that costs more than an attack step; unbounded: also run
    APGD (margin loss) from the clean input at a budget covering the data range (the `unbounded` masking
    check; one more compilation); eot_draws: for a stochastic attack view (fresh randomness at
    every step), the draws per gradient of the `eot` masking check's attack (0: no check)."""

    eps: tuple[float, ...]
    norm: str = "linf"
    rules: tuple[str, ...] | None = None
    batch_size: int = 64
    skip_fooled: bool = True
    judge: str = "every"
    unbounded: bool = False
    eot_draws: int = 8

    def __post_init__(self):
        attacks.geometry.check_norm(self.norm)
        if not self.eps or any(not e > 0 for e in self.eps):
            raise ValueError(f"eps: expected positive radii, got {self.eps}")
        object.__setattr__(self, "eps", tuple(sorted(float(e) for e in self.eps)))
        if not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise ValueError(f"batch_size: expected an int >= 1, got {self.batch_size!r}")
        if self.judge not in ("every", "best"):
            raise ValueError(f"judge: expected 'every' or 'best', got {self.judge!r}")
        if not (isinstance(self.eot_draws, int) and self.eot_draws != 1 and self.eot_draws >= 0):
            raise ValueError(
                f"eot_draws: expected 0 (no check) or an int >= 2, got {self.eot_draws!r}"
            )


# ---------------------------------------------------------------- pure per-example arithmetic


def levels(pred, accepted, ok, y) -> np.ndarray:
    """(N,) int8 outcome level of one input per example (module doc): 0 correct & accepted,
    1 correct & rejected, 2 wrong & rejected (or failed: ok False), 3 wrong & accepted."""
    pred, accepted, ok, y = (np.asarray(a) for a in (pred, accepted, ok, y))
    right = ok & (pred == y)
    acc = accepted & ok
    return np.where(right, np.where(acc, 0, 1), np.where(acc, 3, 2)).astype(np.int8)


def worst_case(clean_level, independent: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Per eps (ascending), the per-example max level over the clean input and every eps' <= eps:
    independent[i] (N,) is eps_i's level (already the max over the suite). Monotone in eps."""
    out, cur = [], np.asarray(clean_level)
    for lv in independent:
        cur = np.maximum(cur, lv)
        out.append(cur)
    return out


def rates(level, *, confidence: float = 0.95) -> dict:
    """{'n', 'accuracy', 'rejected', 'fooled_accepted'} of per-example levels (N,), each rate
    with its count k and Wilson interval [lo, hi] (`jaxrej.metrics.wilson_interval`)."""
    from jaxrej.metrics import wilson_interval

    lv = np.asarray(level)
    n = int(lv.size)
    out: dict = {"n": n}
    for name, mask in (("accuracy", lv <= 1), ("rejected", (lv == 1) | (lv == 2)),
                       ("fooled_accepted", lv == 3)):  # fmt: skip
        k = int(mask.sum())
        lo, hi = wilson_interval(k, n, confidence)
        out[name] = {"rate": k / n if n else float("nan"), "k": k, "ci": [float(lo), float(hi)]}
    return out


def _monotone(seq, *, increasing: bool) -> bool:
    d = np.diff(np.asarray(seq, np.float64))
    return bool(np.all(d >= -1e-12) if increasing else np.all(d <= 1e-12))


# ---------------------------------------------------------------- running the suite


def _call(spec: AttackSpec, view, x, y, *, key, eps, norm, thresholds):
    kw = dict(spec.kwargs)
    params = inspect.signature(spec.attack).parameters
    if view.stochastic:
        kw.update(stochastic=True, n_eot=view.n_eot)
    if thresholds is not None:
        kw["thresholds"] = thresholds
    kw = {k: v for k, v in kw.items() if k in params}
    return spec.attack(view.fn, x, y, key=key, eps=eps, norm=norm, **kw)


def run_attack(spec: AttackSpec, scorer, x, y, *, eps: float, norm: str, key, batch_size: int,
               thresholds=None) -> dict:  # fmt: skip
    """One attack of the suite on the scorer's attack view (built with the true labels y) over
    padded batches: {'x_adv' (N, *event), 'view_success' (N,), 'view_ok' (N,), 'view_scores'
    (N, C)} numpy, and 'stochastic': the view draws fresh randomness at every step."""
    out = {"x_adv": [], "view_success": [], "view_ok": [], "view_scores": []}
    stochastic = False
    for j, ((xb, yb), mask) in enumerate(padded_batches(x, y, batch_size=batch_size)):
        yb = jnp.asarray(yb, jnp.int32)
        view = scorer.for_attack(labels=yb)
        stochastic |= bool(view.stochastic)
        th = None if thresholds is None else jnp.asarray(thresholds, jnp.float32)
        res = _call(spec, view, jnp.asarray(xb, jnp.float32), yb, key=jax.random.fold_in(key, j),
                    eps=float(eps), norm=norm, thresholds=th)  # fmt: skip
        out["x_adv"].append(np.asarray(res.x_adv)[mask])
        out["view_success"].append(np.asarray(res.success)[mask])
        out["view_ok"].append(np.all(np.isfinite(np.asarray(res.scores)), axis=1)[mask])
        out["view_scores"].append(np.asarray(res.scores, np.float64)[mask])
    return {k: np.concatenate(v) for k, v in out.items()} | {"stochastic": stochastic}


def evaluate_scorer(scorer, x, y, *, clean_scores, suite: Sequence[AttackSpec],
                    options: AdversarialOptions, key, log: Callable = print) -> dict:  # fmt: skip
    """The protocol (module doc) for one scorer (thresholds fitted) on rows x (N, *event), y (N,);
    clean_scores (N, C): the judge's clean-table scores of these rows. Returns a dict with
    'n', 'clean' (rates per rule), 'eps' {eps: {rule: rates + 'failures' + 'view_success'}},
    'independent' {rule: {eps: rates}}, 'independent_monotone' {rule: bool}, 'attacks'
    {eps: {attack: {'n_run', 'broke', 'view_success', 'seconds'}}}, 'levels' {'clean': {rule:
    (N,)}, 'independent': {rule: (n_eps, N)}} (per-example levels, lists), and arrays that
    `json_ready` drops: '_records' (per (eps, attack), for the masking checks) and '_worst_x'
    (n_eps, N, *event): per eps and example the input judged worst under the first rule (judge
    "best": the one input judged; the clean input where nothing was worse)."""
    o = options
    y = np.asarray(y)
    x = np.asarray(x, np.float32)
    n = len(y)
    rules = tuple(o.rules or scorer.thresholds)
    missing = [r for r in rules if r not in scorer.thresholds]
    if missing:
        raise ValueError(
            f"rules: {missing} not among the scorer's thresholds {list(scorer.thresholds)}"
        )
    clean_scores = np.asarray(clean_scores)
    ok_clean = np.all(np.isfinite(clean_scores), axis=1)
    clean_lv = {}
    for r in rules:
        pred, acc = scorer.decide_scores(clean_scores, rule=r)
        clean_lv[r] = levels(pred, acc, ok_clean, y)
    indep = {r: [] for r in rules}
    failed_indep, view_indep = [], []
    attack_log: dict = {}
    records: dict = {}
    bs = min(o.batch_size, max(n, 1))
    every = o.judge == "every"
    worst_x = []
    for i, eps in enumerate(o.eps):
        lv = {r: np.zeros(n, np.int8) for r in rules}
        failed = np.zeros(n, bool)
        view_any = np.zeros(n, bool)
        best_x, best_view = x.copy(), np.full(n, -1, np.int8)  # judge="best": the view's pick
        judged_x = x.copy()  # judge="every": the input with the worst judged level (first rule)
        attack_log[f"{eps:g}"] = {}
        runs = [
            (spec, rule) for spec in suite for rule in (rules if spec.reject_aware else (None,))
        ]
        for ri, (spec, rule) in enumerate(runs):
            name = spec.name + (f"@{rule}" if rule else "")
            if not o.skip_fooled or spec.gradient_free:  # Square: every row (a masking check)
                done = np.zeros(n, bool)
            elif every:
                done = np.all([lv[r] == FOOLED for r in rules], axis=0)
            else:
                done = best_view == FOOLED
            rows = np.flatnonzero(~done)
            t0 = time.time()
            rec: dict = {"rows": rows, "level": {}}
            attack_log[f"{eps:g}"][name] = {"n_run": int(rows.size), "broke": 0, "seconds": 0.0}
            records[(float(eps), name)] = rec
            if not rows.size:
                continue
            k = jax.random.fold_in(jax.random.fold_in(key, i), ri)
            th = None if rule is None else scorer.thresholds[rule]
            res = run_attack(spec, scorer, x[rows], y[rows], eps=eps, norm=o.norm, key=k,
                             batch_size=bs, thresholds=th)  # fmt: skip
            view_any[rows] |= res["view_success"]
            # the view's own verdict, under the judge's thresholds (the attacker knows them)
            pv, av = scorer.decide_scores(res["view_scores"], rule=rules[0])
            lv_view = levels(pv, av, res["view_ok"], y[rows])
            rec |= {"view_success": res["view_success"], "view_ok": res["view_ok"],
                    "view_level": lv_view, "x_adv": res["x_adv"],
                    "stochastic": res["stochastic"]}  # fmt: skip
            log_a = attack_log[f"{eps:g}"][name]
            log_a |= {"view_success": float(res["view_success"].mean()),
                      "view_failures": int((~res["view_ok"]).sum())}  # fmt: skip
            if every:  # re-judge this attack's inputs now
                s = scorer.class_scores(res["x_adv"])  # the judge
                ok = np.all(np.isfinite(s), axis=1)
                before = np.all([lv[r][rows] == FOOLED for r in rules], axis=0)
                worse = np.zeros(rows.size, bool)
                for r in rules:
                    pred, acc = scorer.decide_scores(s, rule=r)
                    rec["level"][r] = levels(pred, acc, ok, y[rows])
                    if r == rules[0]:
                        worse = rec["level"][r] > lv[r][rows]
                    lv[r][rows] = np.maximum(lv[r][rows], rec["level"][r])
                judged_x[rows[worse]] = res["x_adv"][worse]
                failed[rows] |= ~ok
                after = np.all([lv[r][rows] == FOOLED for r in rules], axis=0)
                rec |= {"judge_ok": ok, "scores": s}
                log_a |= {"broke": int((after & ~before).sum()), "judge_failures": int((~ok).sum())}
            else:  # keep the view's best input per example for the judge
                better = lv_view > best_view[rows]
                best_x[rows[better]] = res["x_adv"][better]
                best_view[rows[better]] = lv_view[better]
                log_a["broke"] = int(better.sum())
            log_a["seconds"] = round(time.time() - t0, 2)
        if not every:  # one judgement per example: the input the view ranked worst
            s = scorer.class_scores(best_x)
            ok = np.all(np.isfinite(s), axis=1)
            for r in rules:
                pred, acc = scorer.decide_scores(s, rule=r)
                lv[r] = levels(pred, acc, ok, y)
            failed |= ~ok
            records[(float(eps), "judged")] = {
                "x_adv": best_x,
                "scores": s,
                "view_level": best_view,
            }
            judged_x = best_x
        worst_x.append(judged_x)
        for r in rules:
            indep[r].append(lv[r])
        failed_indep.append(failed)
        view_indep.append(view_any)
        log(f"  {scorer.name} {o.norm} eps={eps:g}: " + ", ".join(
            f"{r}: fooled+accepted {np.mean(np.maximum(lv[r], clean_lv[r]) == FOOLED):.3f}"
            for r in rules) + f" ({sum(v.get('seconds', 0) for v in attack_log[f'{eps:g}'].values()):.0f} s)")  # fmt: skip
    checks = masking_checks(scorer, x, y, records=records, clean_level=clean_lv[rules[0]],
                            independent=indep[rules[0]], suite=suite, options=o, key=key,
                            rule=rules[0]) if n else []  # fmt: skip
    out: dict = {"n": n, "norm": o.norm, "judge": o.judge, "rules": list(rules),
                 "checks": [c.to_json() for c in checks],
                 "suite": [s.name for s in suite],
                 "clean": {r: rates(clean_lv[r]) for r in rules}, "eps": {}, "independent": {},
                 "independent_monotone": {}, "attacks": attack_log,
                 "levels": {"clean": {r: clean_lv[r].tolist() for r in rules},
                            "independent": {r: np.stack(indep[r]).tolist() if n else []
                                            for r in rules}}}  # fmt: skip
    cum_failed = np.logical_or.accumulate(np.stack(failed_indep), axis=0) if n else failed_indep
    cum_view = np.logical_or.accumulate(np.stack(view_indep), axis=0) if n else view_indep
    for r in rules:
        worst = worst_case(clean_lv[r], indep[r])
        ind = [rates(np.maximum(clean_lv[r], lv_e)) for lv_e in indep[r]]
        out["independent"][r] = {f"{e:g}": v for e, v in zip(o.eps, ind, strict=True)}
        out["independent_monotone"][r] = _monotone(
            [v["fooled_accepted"]["rate"] for v in ind], increasing=True
        ) and _monotone([v["accuracy"]["rate"] for v in ind], increasing=False)
        for j, e in enumerate(o.eps):
            row = rates(worst[j])
            row["failures"] = int(np.asarray(cum_failed[j]).sum())
            row["view_success"] = float(np.mean(cum_view[j])) if n else float("nan")
            out["eps"].setdefault(f"{e:g}", {})[r] = row
    out["_records"] = records
    out["_worst_x"] = np.stack(worst_x) if n else np.zeros((len(o.eps), *x.shape), np.float32)
    return out


def masking_checks(scorer, x, y, *, records, clean_level, independent, suite, options, key,
                   rule) -> list:  # fmt: skip
    """The `jaxrej.eval.masking` checks that the suite's records support, success = misclassified
    by the judge (level >= 2) under `rule` (judge="best": Square vs the rest by the view's
    verdict, the only per-attack verdict there is): monotone (independent runs over >= 3 eps),
    gradient_free (Square vs the white-box union, per eps), unbounded (options.unbounded:
    APGD on the margin loss from the clean input at eps covering the data range, judged; the
    margin, not CE: a CE over log-likelihoods saturates at a confident clean input), eot (a
    stochastic attack view, options.eot_draws > 0: `_eot_check`)."""
    from jaxrej.eval import masking

    o = options
    n = len(y)
    out = []
    first = next((a for a in suite if not a.gradient_free and not a.reject_aware), None)
    stochastic = any(r.get("stochastic") for r in records.values())  # the view, as attacked
    if n and o.eot_draws and first and stochastic:
        out.append(_eot_check(scorer, x, y, clean_level=clean_level, independent=independent,
                              spec=first, options=o, key=key, rule=rule))  # fmt: skip
    if len(o.eps) >= 3:
        out.append(masking.monotone(o.eps, [np.maximum(clean_level, lv) >= WRONG_REJECTED
                                            for lv in independent]))  # fmt: skip
    free = [a.name for a in suite if a.gradient_free]
    white = [a.name for a in suite if not a.gradient_free]
    for eps in o.eps if free and white else ():

        def wrong(name, eps=eps):
            rec = records.get((float(eps), name), {})
            hit = np.zeros(n, bool)
            lv = rec.get("level", {}).get(rule) if o.judge == "every" else rec.get("view_level")
            if lv is not None:
                hit[rec["rows"]] = lv >= WRONG_REJECTED
            return hit

        names = [k for (e, k) in records if e == float(eps)]
        wb = np.zeros(n, bool)
        for k in names:
            if k.split("@")[0] in white:
                wb |= wrong(k)
        sq = np.zeros(n, bool)
        for k in free:
            sq |= wrong(k)
        clean_wrong = clean_level >= WRONG_REJECTED  # on both sides: every eps-ball holds x
        c = masking.gradient_free(sq | clean_wrong, wb | clean_wrong)
        out.append(dataclasses.replace(c, name=f"gradient_free@{eps:g}"))
    if o.unbounded:
        big = 1.0 if o.norm == "linf" else float(np.sqrt(np.prod(np.shape(x)[1:])))
        spec = AttackSpec(name="unbounded", attack=attacks.apgd,
                          kwargs=(("loss", "margin"), ("steps", 20), ("random_start", False)))  # fmt: skip
        res = run_attack(spec, scorer, x, y, eps=big, norm=o.norm, key=jax.random.fold_in(key, 999),
                         batch_size=min(o.batch_size, n))  # fmt: skip
        s = scorer.class_scores(res["x_adv"])
        pred, acc = scorer.decide_scores(s, rule=rule)
        hit = levels(pred, acc, np.all(np.isfinite(s), axis=1), y) >= WRONG_REJECTED
        correct = clean_level <= CORRECT_REJECTED
        if correct.any():
            out.append(masking.unbounded(hit, clean_correct=correct))
    return out


def _eot_check(scorer, x, y, *, clean_level, independent, spec, options, key, rule):
    """The `eot` masking check of a stochastic attack view: `spec` (the suite's first gradient
    attack without the reject-aware loss) run on every row twice at one radius -- with one fresh draw per step
    and with options.eot_draws draws averaged per gradient (EOT) -- each input judged; success =
    wrong (level >= 2, with the clean level). The radius: the one whose independent runs were
    wrong most nearly half the time (a saturated radius would hide any difference)."""
    from jaxrej.eval import masking

    o = options
    wrong = [np.mean(np.maximum(clean_level, lv) >= WRONG_REJECTED) for lv in independent]
    i = int(np.argmin(np.abs(np.asarray(wrong) - 0.5)))
    eps = o.eps[i]
    hits, view = [], scorer.for_attack
    for j, n_eot in enumerate((1, o.eot_draws)):

        def eot_view(labels, n_eot=n_eot):
            return view(labels=labels)._replace(n_eot=n_eot)

        res = run_attack(spec, dataclasses.replace(scorer, view=eot_view), x, y, eps=eps,
                         norm=o.norm, key=jax.random.fold_in(key, 1000 + j),
                         batch_size=min(o.batch_size, len(y)))  # fmt: skip
        s = scorer.class_scores(res["x_adv"])
        pred, acc = scorer.decide_scores(s, rule=rule)
        lv = levels(pred, acc, np.all(np.isfinite(s), axis=1), y)
        hits.append(np.maximum(clean_level, lv) >= WRONG_REJECTED)
    c = masking.eot(hits[1], hits[0])
    return dataclasses.replace(c, name=f"eot({spec.name}, {o.eot_draws} draws)@{eps:g}")


def transfer_checks(
    scorer, result, surrogate_x, y, *, surrogate: str, rule: str | None = None
) -> list:
    """The `transfer` masking check per eps: inputs attacked on a surrogate (`surrogate_x`
    (n_eps, N, *event), e.g. a head's `_worst_x` on the same rows and radii) re-judged by
    `scorer` (thresholds fitted) must not make it wrong (level >= 2, with its clean level) more
    often than its own white-box suite did (`result`: its `evaluate_scorer` result, with
    'levels'). A row the white-box suite already made wrong counts as a transfer success too (an
    upper bound on transfer's rate, so the check only gets stricter) and is not judged again: the
    judge runs on the other rows only. Checks named 'transfer(<surrogate>)@<eps>'."""
    from jaxrej.eval import masking

    rule = rule or result["rules"][0]
    clean = np.asarray(result["levels"]["clean"][rule])
    indep = np.asarray(result["levels"]["independent"][rule])
    y = np.asarray(y)
    surrogate_x = np.asarray(surrogate_x, np.float32)
    eps = list(result["eps"])
    if surrogate_x.shape[:2] != (len(eps), len(y)) or indep.shape != (len(eps), len(y)):
        raise ValueError(
            f"surrogate_x: expected ({len(eps)}, {len(y)}, *event) inputs for the result's radii "
            f"and rows, got {surrogate_x.shape}"
        )
    out = []
    for i, e in enumerate(eps):
        white = np.maximum(clean, indep[i]) >= WRONG_REJECTED
        hit = white.copy()
        rows = np.flatnonzero(~white)
        if rows.size:
            s = scorer.class_scores(surrogate_x[i][rows])
            pred, acc = scorer.decide_scores(s, rule=rule)
            hit[rows] = levels(pred, acc, np.all(np.isfinite(s), axis=1), y[rows]) >= WRONG_REJECTED
        c = masking.transfer(hit, white)
        out.append(dataclasses.replace(c, name=f"transfer({surrogate})@{e}"))
    return out


def json_ready(result):
    """`result` without its array entries (keys starting with "_")."""
    if isinstance(result, dict):
        return {k: json_ready(v) for k, v in result.items() if not str(k).startswith("_")}
    return result


# ---------------------------------------------------------------- tables


def cell(r: Mapping) -> str:
    """'87.5 [79.1, 92.8]' (percentages) of a rate dict."""
    if r["rate"] != r["rate"]:
        return "–"
    return f"{100 * r['rate']:.1f} [{100 * r['ci'][0]:.1f}, {100 * r['ci'][1]:.1f}]"


HEADER = ("| scorer | rule | eps | n | clean acc. | clean rejected | acc. under attack | "
          "adv. rejected | fooled + accepted | solver failures | view fooled |")  # fmt: skip


def markdown_rows(name: str, r: Mapping) -> list[str]:
    """The table rows of one scorer's result (HEADER's columns); a scorer with a failed masking
    check is marked "(masked?)": its numbers bound nothing."""
    lines = []
    if not all(c["passed"] for c in r.get("checks", [])):
        name = f"{name} (masked?)"
    for rule in r["rules"]:
        c = r["clean"][rule]
        for e, rows in r["eps"].items():
            x = rows[rule]
            view = (
                "–" if x["view_success"] != x["view_success"] else f"{100 * x['view_success']:.1f}"
            )
            lines.append(f"| {name} | {rule} | {e} | {x['n']} | {cell(c['accuracy'])} | "
                         f"{cell(c['rejected'])} | {cell(x['accuracy'])} | {cell(x['rejected'])} | "
                         f"{cell(x['fooled_accepted'])} | {x['failures']} | {view} |")  # fmt: skip
    return lines


def markdown(results: Mapping[str, Mapping], *, title: str) -> str:
    """One table of every scorer's rows (module doc), a line per scorer with its suite, and the
    independent runs' monotonicity check."""
    lines = [f"### Adversarial inputs, {title}", "",
             "Per example the worst case over the suite and every eps' <= eps, re-judged by the "
             "clean table's label-blind scorer and validation thresholds; rates in % with Wilson "
             "95% intervals; view fooled: the attack view's own success.", "", HEADER,
             "|---" * 11 + "|"]  # fmt: skip
    for name, r in results.items():
        lines += markdown_rows(name, r)
    lines += ["", "| scorer | suite | judged | independent runs monotone in eps | masking checks |",
              "|---|---|---|---|---|"]  # fmt: skip
    for name, r in results.items():
        mono = ", ".join(
            f"{k}: {'yes' if v else '**no**'}" for k, v in r["independent_monotone"].items()
        )
        judged = {"every": "every input", "best": "the view's worst input per example"}[r["judge"]]
        checks = ", ".join(f"{c['name']}: {'pass' if c['passed'] else '**FAIL** (' + c['reason'] + ')'}"
                           for c in r.get("checks", [])) or "–"  # fmt: skip
        lines.append(f"| {name} | {', '.join(r['suite'])} | {judged} | {mono} | {checks} |")
    return "\n".join(lines) + "\n"
