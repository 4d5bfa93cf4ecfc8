"""Moved: the Runge-Kutta step lives in `jaxrej.flow.rk`."""

raise ImportError("jaxrej.rk moved to jaxrej.flow.rk (SkipDivergenceRK(SOLVERS[name]))")
