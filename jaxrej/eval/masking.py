"""Gradient-masking checks (Athalye et al. 2018; Carlini et al. 2019, "On Evaluating Adversarial
Robustness", sec. 5-6; AutoAttack's flags), as pure functions of attack outcomes.

Each check compares success rates k / n of attacks that were run by the caller, with the Wilson
score interval (`jaxrej.metrics.wilson_interval`, 95% by default) as the tolerance, and returns a
frozen `Check`: name, passed, the rates compared, n, the intervals used and a one-line reason.
A robustness number is written only when every check of its scorer passed.

    unbounded       an attack started AT THE CLEAN INPUT (no random start: a random point of a
                    huge ball is noise that is misclassified without any attack) with a budget
                    covering the whole data range fools every clean-correct example: k == n.
    monotone        success of independent runs at >= 3 increasing eps never falls: for every
                    eps_i < eps_j, rate_j >= lo_i (the lower end of rate_i's interval).
    gradient_free   a gradient-free attack (Square) does not beat the white-box suite:
                    rate_white_box >= lo_square.
    transfer        adversarial inputs found on a surrogate do not fool the model more often
                    than the white-box suite: rate_white_box >= lo_transfer.
    eot             for a stochastic scorer, the attack with EOT (fresh randomness each step,
                    averaged) and without it agree: rate_plain in [lo_eot, hi_eot].

Inputs are per-example success flags (N,) bool: an array, an `AttackResult` or a dict with a
"success" entry (`jaxrej.eval.adversarial.batched_attack`); for the white-box suite pass the
per-example union over its attacks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from jaxrej.metrics import wilson_interval

__all__ = ["Check", "unbounded", "monotone", "gradient_free", "transfer", "eot", "all_passed"]


@dataclasses.dataclass(frozen=True)
class Check:
    """One masking check's outcome: rates {label: k / n}, intervals {label: (lo, hi)} (Wilson,
    `confidence`), n examples (per rate; for `monotone` the common n), and why it passed or
    failed in one line."""

    name: str
    passed: bool
    rates: dict
    n: int
    intervals: dict
    reason: str
    confidence: float = 0.95

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "passed": bool(self.passed),
            "rates": {k: float(v) for k, v in self.rates.items()},
            "n": int(self.n),
            "intervals": {k: [float(a), float(b)] for k, (a, b) in self.intervals.items()},
            "confidence": float(self.confidence),
            "reason": self.reason,
        }


def _flags(v, name) -> np.ndarray:
    """(N,) bool from an array, an AttackResult (.success) or a dict with "success"."""
    if isinstance(v, dict):
        if "success" not in v:
            raise ValueError(f"{name}: expected success flags, got a dict without 'success'")
        v = v["success"]
    elif hasattr(v, "success"):
        v = v.success
    a = np.asarray(v)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"{name}: expected (N,) success flags with N >= 1, got shape {a.shape}")
    if a.dtype != bool:
        if not np.all((a == 0) | (a == 1)):
            raise ValueError(f"{name}: expected boolean success flags")
        a = a.astype(bool)
    return a


def _same_n(**flags):
    sizes = {k: v.size for k, v in flags.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"expected the same examples in every run, got sizes {sizes}")


def _rate(f: np.ndarray, confidence):
    k, n = int(f.sum()), int(f.size)
    return k / n, wilson_interval(k, n, confidence)


def _pct(v):
    return f"{100 * v:.1f}%"


def unbounded(success, *, clean_correct=None, confidence: float = 0.95) -> Check:
    """Every clean-correct example is fooled at an unbounded budget, by an attack started at the
    clean input (`pgd(..., random_start=False)` / `apgd(..., random_start=False)` with eps
    covering the data range). success (N,); clean_correct (N,) bool (None: all rows count)."""
    s = _flags(success, "success")
    if clean_correct is not None:
        cc = _flags(clean_correct, "clean_correct")
        _same_n(success=s, clean_correct=cc)
        s = s[cc]
    if s.size == 0:
        raise ValueError("clean_correct: no clean-correct example to attack")
    r, ci = _rate(s, confidence)
    ok = bool(s.all())
    missed = int(s.size - s.sum())
    reason = (f"unbounded attack from the clean input fooled all {s.size}" if ok else
              f"unbounded attack from the clean input fooled {_pct(r)} ({missed} of {s.size} "
              "never fooled): gradients do not lead out of the class")  # fmt: skip
    return Check("unbounded", ok, {"success": r}, int(s.size), {"success": ci}, reason, confidence)


def monotone(eps: Sequence[float], successes: Sequence, *, confidence: float = 0.95) -> Check:
    """Success of independent runs at increasing budgets eps (>= 3 values, increasing) does not
    fall beyond the interval: for every i < j, rate_j >= lo_i. successes: one (N,) per eps."""
    eps = [float(e) for e in eps]
    if len(eps) < 3 or any(b <= a for a, b in zip(eps[:-1], eps[1:], strict=True)):
        raise ValueError(f"eps: expected >= 3 strictly increasing budgets, got {eps}")
    if len(successes) != len(eps):
        raise ValueError(f"successes: expected one run per eps ({len(eps)}), got {len(successes)}")
    flags = [_flags(s, f"successes[{i}]") for i, s in enumerate(successes)]
    _same_n(**{f"eps={e:g}": f for e, f in zip(eps, flags, strict=True)})
    rates, cis = zip(*(_rate(f, confidence) for f in flags), strict=True)
    worst = None  # (drop below lo, i, j)
    for i in range(len(eps)):
        for j in range(i + 1, len(eps)):
            gap = cis[i][0] - rates[j]
            if gap > 0 and (worst is None or gap > worst[0]):
                worst = (gap, i, j)
    labels = [f"eps={e:g}" for e in eps]
    if worst is None:
        reason = "success never falls below an earlier budget's interval: " + " <= ".join(
            _pct(r) for r in rates
        )
    else:
        _, i, j = worst
        reason = (f"success falls from {_pct(rates[i])} at eps {eps[i]:g} to {_pct(rates[j])} at "
                  f"eps {eps[j]:g}, below [{_pct(cis[i][0])}, {_pct(cis[i][1])}]: the attack, "
                  "not the model, weakens with the budget")  # fmt: skip
    return Check("monotone", worst is None, dict(zip(labels, rates, strict=True)), int(flags[0].size),
                 dict(zip(labels, cis, strict=True)), reason, confidence)  # fmt: skip


def _not_beaten(name, other_label, other, white_box, confidence, why):
    o, w = _flags(other, other_label), _flags(white_box, "white_box")
    _same_n(**{other_label: o, "white_box": w})
    ro, cio = _rate(o, confidence)
    rw, ciw = _rate(w, confidence)
    ok = rw >= cio[0]
    reason = (f"white-box {_pct(rw)} >= {other_label} {_pct(ro)}'s lower bound {_pct(cio[0])}"
              if ok else
              f"{other_label} {_pct(ro)} (interval [{_pct(cio[0])}, {_pct(cio[1])}]) beats the "
              f"white-box suite's {_pct(rw)}: {why}")  # fmt: skip
    return Check(name, bool(ok), {other_label: ro, "white_box": rw}, int(w.size),
                 {other_label: cio, "white_box": ciw}, reason, confidence)  # fmt: skip


def gradient_free(square_success, white_box_success, *, confidence: float = 0.95) -> Check:
    """A gradient-free attack (Square) must not beat the white-box suite beyond its interval:
    rate_white_box >= lo(square). Both (N,) on the same examples, budget and goal."""
    return _not_beaten("gradient_free", "square", square_success, white_box_success, confidence,
                       "gradients are masked (zero, shattered or saturated)")  # fmt: skip


def transfer(transfer_success, white_box_success, *, confidence: float = 0.95) -> Check:
    """Inputs attacked on a surrogate, judged on the model, must not fool it more often than the
    white-box suite (beyond the interval): rate_white_box >= lo(transfer)."""
    return _not_beaten("transfer", "transfer", transfer_success, white_box_success, confidence,
                       "the model's own gradients are less useful than a surrogate's")  # fmt: skip


def eot(eot_success, plain_success, *, confidence: float = 0.95) -> Check:
    """For a stochastic scorer: the attack with EOT (fresh draws each step, averaged) and the
    same attack without EOT agree within EOT's interval: rate_plain in [lo_eot, hi_eot]."""
    e, p = _flags(eot_success, "eot_success"), _flags(plain_success, "plain_success")
    _same_n(eot=e, plain=p)
    re_, cie = _rate(e, confidence)
    rp, cip = _rate(p, confidence)
    ok = cie[0] <= rp <= cie[1]
    if ok:
        reason = f"without EOT {_pct(rp)} lies in EOT's [{_pct(cie[0])}, {_pct(cie[1])}]"
    elif rp < cie[0]:
        reason = (f"EOT fools {_pct(re_)} vs {_pct(rp)} without: the randomness masked the "
                  "gradients; report the EOT numbers")  # fmt: skip
    else:
        reason = (f"EOT fools {_pct(re_)} vs {_pct(rp)} without: averaging lost strength (too "
                  "few draws or steps); attack with more")  # fmt: skip
    return Check("eot", bool(ok), {"eot": re_, "plain": rp}, int(e.size),
                 {"eot": cie, "plain": cip}, reason, confidence)  # fmt: skip


def all_passed(checks) -> bool:
    """True when every Check in `checks` (an iterable or a dict of them) passed."""
    values = checks.values() if isinstance(checks, dict) else checks
    return all(c.passed for c in values)
