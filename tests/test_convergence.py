"""Convergence order of every explicit solver, of its solution and its dense output."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import odejax
from helpers import EXPLICIT_SOLVERS, NL_Y0, fit_slope, nonlinear_exact, nonlinear_vf, solver_id

T1 = 1.0
# Off-grid points for the dense output (never on a step boundary for dt = 2^-k).
T_OFF = np.array([0.15, 0.385, 0.55, 0.815])


def _step_sizes(order):
    # Numbers of steps chosen to keep the errors in the asymptotic regime and well above
    # rounding (about 1e-3 down to 1e-12).
    steps = {
        1: [64, 128, 256, 512, 1024, 2048],
        2: [32, 64, 128, 256, 512, 1024],
        3: [16, 32, 64, 128, 256, 512],
        5: [12, 16, 24, 32, 48, 64],
        8: [2, 3, 4, 5, 6, 8],
    }[order]
    return [T1 / n for n in steps]


def _solve_fn(solver):
    @jax.jit
    def solve(dt0):
        sol = odejax.diffeqsolve(
            odejax.ODETerm(nonlinear_vf), solver, 0.0, T1, dt0, jnp.asarray(NL_Y0),
            saveat=odejax.SaveAt(t1=True, dense=True), max_steps=4096,
        )
        dense = jax.vmap(sol.evaluate)(jnp.asarray(T_OFF))
        return sol.ys[-1], dense, sol.stats["num_steps"]

    return solve


@pytest.mark.parametrize("entry", EXPLICIT_SOLVERS, ids=solver_id)
def test_order(entry):
    solver, order, dense_order = entry
    solve = _solve_fn(solver)  # one compile for all step sizes: dt0 is traced
    exact_end = nonlinear_exact(T1)
    exact_off = np.stack([nonlinear_exact(t) for t in T_OFF])
    dts, errs, dense_errs = [], [], []
    for dt in _step_sizes(order):
        y1, dense, steps = solve(jnp.asarray(dt))
        assert int(steps) == round(T1 / dt)
        dts.append(dt)
        errs.append(np.max(np.abs(np.asarray(y1) - exact_end)))
        dense_errs.append(np.max(np.abs(np.asarray(dense) - exact_off)))
    slope = fit_slope(dts, errs)
    assert abs(slope - order) < 0.2, (slope, errs)
    # Off-grid: the interpolant's own local error is O(h^(q+1)), so the dense output
    # converges at min(order, q + 1).
    expected = min(order, dense_order + 1)
    dense_slope = fit_slope(dts, dense_errs)
    assert abs(dense_slope - expected) < 0.2, (dense_slope, dense_errs)
