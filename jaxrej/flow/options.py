"""How to solve the probability-flow ODE: `FlowSolve`, the one frozen, hashable options object,
and `SolverInfo`, the named facts of each Runge-Kutta method.

Every likelihood entry point (`jaxrej.log_likelihood`, the class scorers, `log_likelihood_and_grad`,
`Screen`, `TopK`) takes a `FlowSolve`; keyword arguments named after its fields are sugar for
`dataclasses.replace(solve, **options)`. Every field is static (a compile-time constant), so it is
validated once, when the object is made, on every path, jitted or not.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import diffrax
import jax
import numpy as np

DIVERGENCES = ("exact", "rademacher", "gaussian")
ADJOINTS = ("checkpoint", "backsolve", "direct")
TIME_CHANGES = ("none", "square")


@dataclasses.dataclass(frozen=True)
class SolverInfo:
    """Facts of one explicit Runge-Kutta method, as diffrax 0.7 runs it.

    make: the diffrax solver's factory. evaluations_per_step / initial_evaluations: vector-field
    calls per step and before the first step (tests/test_likelihood.py counts them). adaptive: the
    method has an error estimate (it can run under a PID controller).
    """

    name: str
    make: Callable[[], diffrax.AbstractSolver]
    evaluations_per_step: int
    initial_evaluations: int
    adaptive: bool

    @property
    def tableau(self):
        """The diffrax Butcher tableau, or None (Euler)."""
        return getattr(self.make(), "tableau", None)

    @property
    def weights(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(a (s, s), b (s,), b_err (s,), c (s,)) in float64 numpy: the one tableau that the forward
        step (jaxrej.flow.rk) and the reverse pass (jaxrej.flow.adjoints) both read."""
        tableau = self.tableau
        if tableau is None:  # Euler: one stage, no error estimate
            return np.zeros((1, 1)), np.ones(1), np.zeros(1), np.zeros(1)
        b = np.asarray(tableau.b_sol, np.float64)
        a = np.zeros((b.size, b.size))
        for i, row in enumerate(tableau.a_lower):
            a[i + 1, : len(row)] = row
        c = np.concatenate([[0.0], np.asarray(tableau.c, np.float64)])
        return a, b, np.asarray(tableau.b_error, np.float64), c

    @property
    def divergence_unused(self) -> tuple[bool, ...]:
        """Per stage: True where the stage's divergence has zero weight in the solution and in the
        error estimate and (for an FSAL method) the stage is not the next step's first stage."""
        tableau = self.tableau
        _, b, b_err, _ = self.weights
        fsal = tableau is not None and tableau.fsal
        last = b.size - 1
        return tuple(
            bool(b[i] == 0 and b_err[i] == 0 and not (fsal and i == last)) for i in range(b.size)
        )

    def divergence_evaluations(self, nfe):
        """How many of a solve's `nfe` evaluations computed the divergence (the others, at the
        `divergence_unused` stages of a skipping step, computed the velocity alone)."""
        skipped = sum(self.divergence_unused) if skips_divergence(self) else 0
        return nfe - skipped * ((nfe - self.initial_evaluations) // self.evaluations_per_step)


def skips_divergence(info: SolverInfo) -> bool:
    """True where jaxrej's own step (jaxrej.flow.rk) runs the method: a tableau with stages whose
    divergence nothing uses (Dopri5, Dopri8)."""
    return info.tableau is not None and any(info.divergence_unused)


SOLVERS: dict[str, SolverInfo] = {
    s.name: s
    for s in (
        SolverInfo("tsit5", diffrax.Tsit5, 6, 1, True),
        SolverInfo("dopri5", diffrax.Dopri5, 6, 1, True),
        SolverInfo("dopri8", diffrax.Dopri8, 13, 1, True),
        SolverInfo("heun", diffrax.Heun, 2, 0, True),
        SolverInfo("euler", diffrax.Euler, 1, 0, False),
    )
}


def _fail(field: str, expected: str, got) -> None:
    raise ValueError(f"FlowSolve.{field}: expected {expected}, got {got!r}")


def _positive_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1


def _positive_float(v) -> bool:
    if isinstance(v, (bool, str)):
        return False
    try:
        v = float(v)  # a concrete scalar (Python, numpy, 0-d jax array)
    except (TypeError, ValueError, jax.errors.ConcretizationTypeError):
        return False
    return math.isfinite(v) and v > 0


@dataclasses.dataclass(frozen=True)
class FlowSolve:
    """How to solve the augmented probability-flow ODE for one (example, class) pair.

    divergence: "exact" (D vector-Jacobian products per evaluation) or Hutchinson with
        "rademacher" / "gaussian" probes, `n_probes` of them averaged.
    solver: a key of SOLVERS; `n_steps` switches to that many fixed steps (required for "euler").
    rtol, atol: the PID step-size tolerances. The error norm counts the log-density increment as
        a component of its own beside the RMS over x, so the tolerances bound the log-likelihood's
        error, not only the trajectory's (benchmarks/solver_tolerance.py measures the trade-off).
    eps: the start time in (0, T). max_steps: the step budget; a solve that runs out is flagged.
    adjoint: how jax.grad differentiates the solve -- "checkpoint" (discretise-then-optimise over
        the accepted steps; stores max_steps x D floats per example), "backsolve" (the continuous
        adjoint; gradients w.r.t. x only, memory independent of the steps), "direct" (autodiff
        through diffrax; supports forward-over-reverse, e.g. Hessian-vector products).
    time_change: the solver's time: "none" (t) or "square" (u with t = u^2, from sqrt(eps) to
        sqrt(T); the same ODE, fewer steps near t = eps; jaxrej.flow.field.change_time).
        n_steps fixed steps are then uniform in u.
    """

    divergence: str = "rademacher"
    n_probes: int = 1
    solver: str = "dopri5"
    rtol: float = 1e-5
    atol: float = 1e-5
    eps: float = 1e-5
    adjoint: str = "checkpoint"
    max_steps: int = 4096
    n_steps: int | None = None
    time_change: str = "square"

    def __post_init__(self):
        if self.divergence not in DIVERGENCES:
            _fail("divergence", f"one of {DIVERGENCES}", self.divergence)
        if not _positive_int(self.n_probes):
            _fail("n_probes", "an int >= 1", self.n_probes)
        if self.solver not in SOLVERS:
            _fail("solver", f"one of {tuple(SOLVERS)}", self.solver)
        for name in ("rtol", "atol"):  # static: a traced tolerance cannot be checked, nor compiled
            if not _positive_float(getattr(self, name)):
                _fail(name, "a positive finite number (a static Python float)", getattr(self, name))
        if not (_positive_float(self.eps) and float(self.eps) < 1.0):
            _fail("eps", "a start time in (0, T) = (0, 1)", self.eps)
        if self.time_change not in TIME_CHANGES:
            _fail("time_change", f"one of {TIME_CHANGES}", self.time_change)
        if self.adjoint not in ADJOINTS:
            _fail("adjoint", f"one of {ADJOINTS}", self.adjoint)
        if not _positive_int(self.max_steps):
            _fail("max_steps", "an int >= 1", self.max_steps)
        if self.n_steps is not None and not _positive_int(self.n_steps):
            _fail("n_steps", "None or an int >= 1", self.n_steps)
        if self.n_steps is None and not self.info.adaptive:
            _fail("n_steps", f"an int: solver {self.solver!r} has no error estimate", None)
        for name in ("rtol", "atol", "eps"):  # one canonical type: equal options hash equal
            object.__setattr__(self, name, float(getattr(self, name)))
        for name in ("n_probes", "max_steps"):
            object.__setattr__(self, name, int(getattr(self, name)))

    @property
    def info(self) -> SolverInfo:
        return SOLVERS[self.solver]

    @property
    def probes(self) -> int:
        """Trace directions per evaluation that use probes: 0 for the exact trace."""
        return 0 if self.divergence == "exact" else self.n_probes


FIELDS = tuple(f.name for f in dataclasses.fields(FlowSolve))


def as_solve(solve: FlowSolve | None = None, options: dict | None = None, *,
             default: FlowSolve | None = None) -> FlowSolve:  # fmt: skip
    """`solve` (or `default`, or FlowSolve()) with `options` (FlowSolve field names) replaced.

    The keyword sugar of every entry point: `log_likelihood(..., rtol=1e-6)` is
    `log_likelihood(..., solve=FlowSolve(rtol=1e-6))`.
    """
    if solve is None:
        solve = FlowSolve() if default is None else default
    if not isinstance(solve, FlowSolve):
        raise ValueError(f"solve: expected a jaxrej.FlowSolve, got {type(solve).__name__}")
    options = dict(options or {})
    unknown = sorted(set(options) - set(FIELDS))
    if unknown:
        raise ValueError(
            f"{unknown[0]}: not a solve option; FlowSolve's fields are {', '.join(FIELDS)}"
        )
    return dataclasses.replace(solve, **options) if options else solve
