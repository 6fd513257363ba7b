"""Convergence order of every explicit solver, of its solution and its dense output."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import odejax
from helpers import EXPLICIT_SOLVERS, NL_Y0, fit_slope, nonlinear_exact, nonlinear_vf, solver_id

T1 = 1.0
# Dense output is checked off-grid at a fixed fraction THETA of the step containing each
# of these times, so that the interpolant's error constant is the same for every dt.
T_OFF = np.array([0.15, 0.385, 0.55, 0.815])
THETA = 0.37


def _step_sizes(order):
    # Numbers of steps chosen to keep the errors in the asymptotic regime and well above
    # rounding (about 1e-3 down to 1e-12).
    steps = {
        1: [64, 128, 256, 512, 1024, 2048],
        2: [32, 64, 128, 256, 512, 1024],
        3: [16, 32, 64, 128, 256, 512],
        5: [12, 16, 24, 32, 48, 64],
        8: [3, 4, 5, 6, 7, 8],
    }[order]
    return [T1 / n for n in steps]


def _solve_fn(solver):
    @jax.jit
    def solve(dt0):
        sol = odejax.diffeqsolve(
            odejax.ODETerm(nonlinear_vf),
            solver,
            0.0,
            T1,
            dt0,
            jnp.asarray(NL_Y0),
            saveat=odejax.SaveAt(t1=True, dense=True),
            max_steps=4096,
        )
        ts = (jnp.floor(jnp.asarray(T_OFF) / dt0) + THETA) * dt0
        dense = jax.vmap(sol.evaluate)(ts)
        return sol.ys[-1], ts, dense, sol.stats["num_steps"]

    return solve


# Dopri8's solution reaches rounding at a few steps per unit time, while its dense output
# (order 5) needs smaller steps to be asymptotic: it gets its own step counts.
DENSE_STEPS = {8: [8, 11, 16, 22, 32, 45]}


@pytest.mark.parametrize("entry", EXPLICIT_SOLVERS, ids=solver_id)
def test_order(entry):
    solver, order, dense_order = entry
    solve = _solve_fn(solver)  # one compile for all step sizes: dt0 is traced
    exact_end = nonlinear_exact(T1)
    dts, errs = [], []
    for dt in _step_sizes(order):
        y1, _, _, steps = solve(jnp.asarray(dt))
        assert int(steps) == round(T1 / dt)
        dts.append(dt)
        errs.append(np.max(np.abs(np.asarray(y1) - exact_end)))
    slope = fit_slope(dts, errs)
    assert abs(slope - order) < 0.2, (slope, errs)

    # Off-grid: the interpolant's own local error is O(h^(q+1)), so the dense output
    # converges at min(order, q + 1).
    dense_dts = [T1 / n for n in DENSE_STEPS[order]] if order in DENSE_STEPS else dts
    dense_errs = []
    for dt in dense_dts:
        _, ts, dense, _ = solve(jnp.asarray(dt))
        exact_off = np.stack([nonlinear_exact(t) for t in np.asarray(ts)])
        dense_errs.append(np.max(np.abs(np.asarray(dense) - exact_off)))
    expected = min(order, dense_order + 1)
    dense_slope = fit_slope(dense_dts, dense_errs)
    assert abs(dense_slope - expected) < 0.2, (dense_slope, dense_errs)
