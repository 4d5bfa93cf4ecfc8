"""The probability-flow ODE engine, one concept per module: `options` (FlowSolve, SolverInfo),
`field` (the augmented vector field and its VJP), `rk` (the Runge-Kutta step skipping unused
divergences and its reverse pass), `solve` (the forward solve), `adjoints` (checkpoint,
backsolve, direct; the per-example entry point)."""

from jaxrej.flow.adjoints import example_log_likelihood
from jaxrej.flow.options import SOLVERS, FlowSolve, SolverInfo, as_solve

__all__ = ["FlowSolve", "SolverInfo", "SOLVERS", "as_solve", "example_log_likelihood"]
