"""The adversarial protocol: attack every scorer in pixel space, reject-aware numbers, the
gradient-masking checklist, and a markdown table.

For a scorer f: (B, *event) -> (B, C) (`jaxrej.eval.pixel_scorers`) and per-class thresholds
t^(p) fit on held-out validation rows (`jaxrej.reject.fit_class_thresholds`, percentile p):

* clean accuracy; at each eps: accuracy under PGD (CE loss) and APGD (DLR loss, CE for C < 3),
  and under the per-example worst of the two ("plain" attack: a success of either counts);
* rejection rate of the adversarial inputs (the plain attack's x_adv) at each percentile;
* fooled-and-accepted rate = mean(pred(x_adv) != y and s_pred(x_adv) >= t_pred), for the plain
  attack and for the adaptive attack (PGD on the reject-aware loss `losses.attack_loss("reject")`
  with the thresholds of that percentile) -- the robust error of a classifier with a reject
  option;
* gradient-masking checks (Athalye et al. 2018; Carlini et al. 2019), each pass/fail:
  unbounded   success of PGD at eps = the whole data range -> 100%;
  monotone    success never falls from PGD-(steps/4) to PGD-steps to PGD-steps x 2 restarts;
  transfer    PGD x_adv from the base classifier (MSP) fools f no more often than white-box PGD;
  eot         (stochastic scorers) PGD with n_eot draws per step is not stronger than with one
              by more than 5 points (else the no-EOT numbers were masked; the EOT ones are kept).
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxrej import attacks, reject
from jaxrej.data.batching import padded_batches

__all__ = ["AttackOptions", "fit_thresholds", "evaluate_scorer", "json_ready", "markdown"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class AttackOptions:
    """Plain values of the protocol. eps: radii in `norm`; steps: PGD/APGD gradient steps;
    batch_size: examples per attack call (a padded last batch keeps one compilation);
    percentiles: per-class threshold percentiles; checks: run the gradient-masking checks;
    n_eot: EOT draws for the eot check (stochastic scorers)."""

    eps: tuple[float, ...]
    norm: str = "linf"
    steps: int = 40
    restarts: int = 1
    batch_size: int = 64
    percentiles: tuple[float, ...] = (1.0, 2.0)
    checks: bool = True
    unbounded_eps: float | None = None  # default: 1 (L-inf) or sqrt(D) (L2): the whole range
    n_eot: int = 4

    def __post_init__(self):
        attacks.geometry.check_norm(self.norm)
        if not self.eps or any(e <= 0 for e in self.eps):
            raise ValueError(f"eps: expected positive radii, got {self.eps}")
        for p in self.percentiles:
            if not 0 < p < 100:
                raise ValueError(f"percentiles: expected numbers in (0, 100), got {p}")


def scores_of(fn, x, *, batch_size: int, stochastic: bool = False, key=None) -> np.ndarray:
    """f(x) in padded batches -> (N, C) numpy (one compilation per scorer and batch size)."""
    out = []
    call = jax.jit(lambda xb, k: fn(xb, k) if stochastic else fn(xb))
    for j, ((xb,), mask) in enumerate(padded_batches(x, batch_size=batch_size)):
        k = jax.random.fold_in(key if key is not None else jax.random.key(0), j * batch_size)
        out.append(np.asarray(call(jnp.asarray(xb), k))[mask])
    return np.concatenate(out)


def fit_thresholds(val_scores, y_val, percentiles) -> dict[float, np.ndarray]:
    """{p: per-class thresholds (C,)} from validation class scores (N, C)."""
    return {p: np.asarray(reject.fit_class_thresholds(jnp.asarray(val_scores), jnp.asarray(y_val),
                                                      percentile=p)) for p in percentiles}  # fmt: skip


def batched_attack(attack, fn_for, x, y, *, batch_size, key, **kw) -> dict:
    """Run `attack(fn_for(yb), xb, yb, key=..., **kw)` over padded batches; numpy fields.
    fn_for(y_batch) builds the scorer for a batch (e.g. an SBGC scorer keeping the labels)."""
    fields = {"x_adv": [], "success": [], "margin": [], "norm": [], "scores": []}
    for j, ((xb, yb), mask) in enumerate(padded_batches(x, y, batch_size=batch_size)):
        yb = jnp.asarray(yb, jnp.int32)
        k_batch = jax.random.fold_in(key, j * batch_size)
        res = attack(fn_for(yb), jnp.asarray(xb), yb, key=k_batch, **kw)
        for k in fields:
            fields[k].append(np.asarray(getattr(res, k))[mask])
    return {k: np.concatenate(v) for k, v in fields.items()}


def _fooled_accepted(scores, y, th):
    pred, rej = reject.decide(jnp.asarray(scores), jnp.asarray(th))
    pred, rej = np.asarray(pred), np.asarray(rej)
    return float(np.mean((pred != y) & ~rej)), float(np.mean(rej))


def evaluate_scorer(fn_for, x, y, thresholds, *, options: AttackOptions, key, transfer=None,
                    stochastic=False, log=print) -> dict:  # fmt: skip
    """Every number of the module doc for one scorer. fn_for(y_batch) -> the scorer (pixels ->
    (B, C)); x (N, *event) in [0, 1], y (N,); thresholds {p: (C,)} from validation rows;
    transfer: {eps: x_adv (N, *event)} from the base classifier (for the transfer check);
    stochastic: the scorer takes a key (EOT check). Returns a JSON-ready dict."""
    o = options
    y = np.asarray(y)
    bs = min(o.batch_size, x.shape[0])
    clean = np.concatenate([np.asarray(fn_for(jnp.asarray(y[i:i + bs], jnp.int32))(
        jnp.asarray(x[i:i + bs]))) for i in range(0, x.shape[0], bs)])  # fmt: skip
    c = clean.shape[1]
    out = {"n": int(x.shape[0]), "clean_accuracy": float(np.mean(np.argmax(clean, 1) == y)),
           "clean_rejection_rate": {}, "eps": {}}  # fmt: skip
    for p, th in thresholds.items():
        out["clean_rejection_rate"][f"p{p:g}"] = _fooled_accepted(clean, y, th)[1]
    common = dict(batch_size=bs, norm=o.norm, steps=o.steps, restarts=o.restarts)
    apgd_loss = "dlr" if c >= 3 else "ce"
    for i, eps in enumerate(o.eps):
        k = jax.random.fold_in(key, i)
        t0 = time.time()
        pg = batched_attack(attacks.pgd, fn_for, x, y, key=k, eps=eps, loss="ce", **common)
        ap = batched_attack(attacks.apgd, fn_for, x, y, key=k, eps=eps, loss=apgd_loss, **common)
        worst_s = np.where((ap["success"] & ~pg["success"])[:, None], ap["scores"], pg["scores"])
        e = {
            "pgd_accuracy": float(np.mean(np.argmax(pg["scores"], 1) == y)),
            "apgd_accuracy": float(np.mean(np.argmax(ap["scores"], 1) == y)),
            "accuracy": float(np.mean(np.argmax(worst_s, 1) == y)),
            "max_norm": float(max(pg["norm"].max(), ap["norm"].max())),
            "rejection_rate": {}, "fooled_accepted": {}, "fooled_accepted_adaptive": {},
        }  # fmt: skip
        for p, th in thresholds.items():
            fa, rr = _fooled_accepted(worst_s, y, th)
            ad = batched_attack(attacks.pgd, fn_for, x, y, key=jax.random.fold_in(k, 7), eps=eps,
                                loss="reject", thresholds=jnp.asarray(th), **common)  # fmt: skip
            fa_ad, _ = _fooled_accepted(ad["scores"], y, th)
            key_p = f"p{p:g}"
            e["rejection_rate"][key_p] = rr
            e["fooled_accepted"][key_p] = fa
            e["fooled_accepted_adaptive"][key_p] = max(fa_ad, fa)  # the attacker keeps the best
            e.setdefault("fooled_accepted_adaptive_only", {})[key_p] = fa_ad
        if transfer is not None and eps in transfer:
            xt = transfer[eps]
            st = np.concatenate([np.asarray(fn_for(jnp.asarray(y[j:j + bs], jnp.int32))(
                jnp.asarray(xt[j:j + bs]))) for j in range(0, x.shape[0], bs)])  # fmt: skip
            e["transfer_success"] = float(np.mean(np.argmax(st, 1) != y))
        e["pgd_success"] = float(np.mean(pg["success"]))
        e["seconds"] = time.time() - t0
        e["_x_adv_pgd"] = pg["x_adv"]  # for transfer attacks; `json_ready` drops it
        out["eps"][f"{eps:g}"] = e
        log(f"  eps={eps:g}: acc {e['accuracy']:.3f} (pgd {e['pgd_accuracy']:.3f}, apgd "
            f"{e['apgd_accuracy']:.3f}) in {e['seconds']:.0f}s")  # fmt: skip
    if o.checks:
        out["checks"] = masking_checks(fn_for, x, y, out, options=o, key=key,
                                       stochastic=stochastic)  # fmt: skip
    return out


def masking_checks(fn_for, x, y, out, *, options, key, stochastic) -> dict:
    """The gradient-masking checklist (module doc) as {name: {"pass": bool, numbers...}}."""
    o = options
    bs = min(o.batch_size, x.shape[0])
    dim = int(np.prod(x.shape[1:]))
    big = o.unbounded_eps or (1.0 if o.norm == "linf" else float(np.sqrt(dim)))
    kw = dict(batch_size=bs, norm=o.norm, loss="ce")
    k = jax.random.fold_in(key, 1000)
    checks = {}
    r = batched_attack(attacks.pgd, fn_for, x, y, key=k, eps=big, steps=o.steps, **kw)
    s = float(np.mean(r["success"]))
    checks["unbounded"] = {"pass": s >= 0.99, "eps": big, "success": s}
    mid = o.eps[len(o.eps) // 2]
    rates = []
    for steps, restarts in [(max(o.steps // 4, 1), 1), (o.steps, 1), (o.steps, 2)]:
        r = batched_attack(attacks.pgd, fn_for, x, y, key=k, eps=mid, steps=steps,
                           restarts=restarts, **kw)  # fmt: skip
        rates.append(float(np.mean(r["success"])))
    checks["monotone"] = {"pass": rates[0] <= rates[1] <= rates[2], "eps": mid,
                          "success_steps/4, steps, steps x2 restarts": rates}  # fmt: skip
    tr = [(e, v["transfer_success"], v["pgd_success"]) for e, v in out["eps"].items()
          if "transfer_success" in v]  # fmt: skip
    if tr:
        checks["transfer"] = {"pass": all(t <= w + 1e-9 for _, t, w in tr),
                              "eps/transfer/white-box": tr}  # fmt: skip
    if stochastic:
        rs = []
        for n in (1, o.n_eot):
            r = batched_attack(attacks.pgd, fn_for, x, y, key=k, eps=mid, steps=o.steps,
                               stochastic=True, n_eot=n, **kw)  # fmt: skip
            rs.append(float(np.mean(r["success"])))
        checks["eot"] = {"pass": rs[1] <= rs[0] + 0.05, "eps": mid, "n_eot": o.n_eot,
                         "success_no_eot": rs[0], "success_eot": rs[1]}  # fmt: skip
    return checks


def json_ready(result: dict) -> dict:
    """`result` without its array entries (keys starting with "_", e.g. "_x_adv_pgd")."""
    if isinstance(result, dict):
        return {k: json_ready(v) for k, v in result.items() if not str(k).startswith("_")}
    return result


def _pct(v):
    return "-" if v is None else f"{100 * v:.1f}"


def markdown(results: dict, *, percentiles) -> str:
    """One row per (scorer, eps): accuracies, rejection and fooled-and-accepted rates; then one
    row per scorer with the gradient-masking checks."""
    ps = [f"p{p:g}" for p in percentiles]
    cols = ["scorer", "eps", "clean acc", "PGD acc", "APGD acc", "worst acc"]
    cols += [f"rej. adv @{p}" for p in ps] + [f"fooled+acc. @{p}" for p in ps]
    cols += [f"adaptive fooled+acc. @{p}" for p in ps]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for name, r in results.items():
        for eps, e in r["eps"].items():
            row = [name, eps, _pct(r["clean_accuracy"]), _pct(e["pgd_accuracy"]),
                   _pct(e["apgd_accuracy"]), _pct(e["accuracy"])]  # fmt: skip
            row += [_pct(e["rejection_rate"][p]) for p in ps]
            row += [_pct(e["fooled_accepted"][p]) for p in ps]
            row += [_pct(e["fooled_accepted_adaptive"][p]) for p in ps]
            lines.append("| " + " | ".join(row) + " |")
    names = ("unbounded", "monotone", "transfer", "eot")
    lines += ["", "| scorer | " + " | ".join(names) + " |", "|" + "---|" * (1 + len(names))]
    for name, r in results.items():
        ch = r.get("checks", {})
        cells = []
        for n in names:
            if n not in ch:
                cells.append("-")
                continue
            c = ch[n]
            detail = {
                "unbounded": lambda c: f"{100 * c['success']:.0f}% at eps {c['eps']:g}",
                "monotone": lambda c: "/".join(f"{100 * v:.0f}" for v in
                                               c["success_steps/4, steps, steps x2 restarts"]),
                "transfer": lambda c: ", ".join(f"{100 * t:.0f}<={100 * w:.0f}"
                                                for _, t, w in c["eps/transfer/white-box"]),
                "eot": lambda c: f"{100 * c['success_no_eot']:.0f}% -> "
                                 f"{100 * c['success_eot']:.0f}% (n={c['n_eot']})",
            }[n](c)  # fmt: skip
            cells.append(f"{'pass' if c['pass'] else '**FAIL**'} ({detail})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
