"""`diffeqsolve` as a whole: PyTree states, backward time, jit/vmap, dtypes, t0 == t1,
statistics and differentiation through the solve (failures, result codes and input
checking are in test_robustness.py).

Expected values come from exact solutions (or from the same solve done alone, for
the vmap tests); never from a stored odejax output.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from jax.flatten_util import ravel_pytree

import odejax
from helpers import NL_Y0, decay_vf, nonlinear_vf, pid

# ---- shared problems ----------------------------------------------------------------

# A coupled linear system y' = M y on a flat vector of 9 entries, exact solution
# expm(M t) y0; the PyTree tests split the same 9 entries into different trees.
_rng = np.random.default_rng(0)
M = -0.5 * np.eye(9) + 0.4 * _rng.standard_normal((9, 9))
FLAT_Y0 = _rng.standard_normal(9)


def flat_vf(t, y, args):
    return jnp.asarray(M, y.dtype) @ y


def tree_vf(t, y, args):
    flat, unravel = ravel_pytree(y)
    return unravel(jnp.asarray(M, flat.dtype) @ flat)


def max_abs(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


# ---- PyTree states --------------------------------------------------------------------

# Each entry splits the 9 entries of FLAT_Y0 into a PyTree (leaves of several shapes,
# including (3, 2) and a scalar).
TREES = {
    "dict": lambda v: {"a": v[:6].reshape(3, 2), "b": v[6:8], "c": v[8]},
    "tuple": lambda v: (v[:3], v[3:9].reshape(3, 2)),
    "nested": lambda v: {"x": (v[:2], {"y": v[2:8].reshape(3, 2)}), "z": [v[8]]},
    "matrix": lambda v: v.reshape(3, 3),
}


@pytest.mark.parametrize("make_tree", TREES.values(), ids=TREES.keys())
def test_pytree_state_matches_flat(make_tree):
    T = 1.5
    ts = jnp.array([0.3, 0.9])
    kw = dict(stepsize_controller=pid(1e-9), saveat=odejax.SaveAt(ts=ts, t1=True))
    y0_tree = make_tree(jnp.asarray(FLAT_Y0))
    flat = odejax.diffeqsolve(
        odejax.ODETerm(flat_vf), odejax.Tsit5(), 0.0, T, 0.1, jnp.asarray(FLAT_Y0), **kw
    )
    tree = odejax.diffeqsolve(odejax.ODETerm(tree_vf), odejax.Tsit5(), 0.0, T, 0.1, y0_tree, **kw)

    # Same structure as y0, with a leading axis of saved times on every leaf.
    assert jax.tree.structure(tree.ys) == jax.tree.structure(y0_tree)
    for leaf, leaf0 in zip(jax.tree.leaves(tree.ys), jax.tree.leaves(y0_tree)):
        assert leaf.shape == (3,) + leaf0.shape
        assert leaf.dtype == leaf0.dtype
    # Same values as the flat solve (same arithmetic up to summation order in the norm)
    # and as the exact solution.
    tree_flat = jax.vmap(lambda y: ravel_pytree(y)[0])(tree.ys)
    np.testing.assert_allclose(tree_flat, flat.ys, rtol=0, atol=1e-12)
    assert int(tree.stats["num_steps"]) == int(flat.stats["num_steps"])
    exact = np.stack([scipy.linalg.expm(M * t) @ FLAT_Y0 for t in (0.3, 0.9, T)])
    assert max_abs(tree_flat, exact) < 1e-7


def test_mixed_precision_pytree_keeps_each_dtype():
    # A state with a float32 and a float64 leaf: each leaf keeps its own dtype, with no
    # silent promotion anywhere (the suite runs with strict dtype promotion).
    y0 = {"single": jnp.array([1.0, 2.0], jnp.float32), "double": jnp.array([3.0])}
    sol = odejax.diffeqsolve(
        odejax.ODETerm(decay_vf),
        odejax.Tsit5(),
        0.0,
        1.0,
        0.1,
        y0,
        1.0,
        stepsize_controller=pid(1e-6),
    )
    assert sol.ys["single"].dtype == jnp.float32
    assert sol.ys["double"].dtype == jnp.float64
    assert max_abs(sol.ys["single"][0], np.exp(-1.0) * np.array([1.0, 2.0])) < 1e-5
    assert max_abs(sol.ys["double"][0], np.exp(-1.0) * np.array([3.0])) < 1e-5


# ---- backward integration -------------------------------------------------------------


def _backward_exact(t, t0, y_t0):
    # y' = cos(t) y  =>  y(t) = y(t0) exp(sin t - sin t0)
    return y_t0 * np.exp(np.sin(t) - np.sin(t0))


@pytest.mark.parametrize(
    "controller, dt0",
    [(pid(1e-10), -0.1), (pid(1e-10), None), (odejax.ConstantStepSize(), -0.01)],
    ids=["pid", "pid-auto-dt0", "constant"],
)
def test_backward_in_time(controller, dt0):
    # Non-autonomous on purpose: a sign error in t inside the solver would show.
    t0, t1 = 2.0, -0.5
    ts = jnp.array([1.8, 1.1, 0.3, -0.2])
    sol = odejax.diffeqsolve(
        odejax.ODETerm(nonlinear_vf),
        odejax.Tsit5(),
        t0,
        t1,
        dt0,
        jnp.asarray(NL_Y0),
        saveat=odejax.SaveAt(t0=True, ts=ts, t1=True),
        stepsize_controller=controller,
    )
    want_ts = np.array([t0, 1.8, 1.1, 0.3, -0.2, t1])
    np.testing.assert_array_equal(sol.ts, want_ts)  # user time, exactly
    exact = np.stack([_backward_exact(t, t0, NL_Y0) for t in want_ts])
    assert max_abs(sol.ys, exact) < 1e-8


def test_backward_saves_steps_in_decreasing_user_time():
    sol = odejax.diffeqsolve(
        odejax.ODETerm(nonlinear_vf),
        odejax.Tsit5(),
        1.0,
        0.0,
        -0.3,
        jnp.asarray(NL_Y0),
        saveat=odejax.SaveAt(steps=True),
        max_steps=6,
    )
    n = int(sol.stats["num_accepted_steps"])
    assert n == 4
    np.testing.assert_allclose(sol.ts[:n], [0.7, 0.4, 0.1, 0.0], rtol=0, atol=1e-15)
    assert float(sol.ts[n - 1]) == 0.0  # the last step lands exactly on t1
    assert np.all(np.isinf(np.asarray(sol.ts[n:])))


# ---- jit and vmap -----------------------------------------------------------------


@jax.jit
def _solve_decay(y0, rate, t1):
    """y' = -rate * y from 0 to t1, adaptive; one compile for every vmap below."""
    sol = odejax.diffeqsolve(
        odejax.ODETerm(decay_vf),
        odejax.Tsit5(),
        0.0,
        t1,
        0.05,
        y0,
        rate,
        stepsize_controller=pid(1e-10),
    )
    return sol.ys[0], sol.stats["num_steps"]


def test_jit_matches_exact():
    y0 = jnp.array([1.0, -2.0])
    y1, _ = _solve_decay(y0, 0.7, 1.3)
    assert max_abs(y1, np.exp(-0.7 * 1.3) * np.array([1.0, -2.0])) < 1e-9
    # The same solve outside jit (diffeqsolve jits internally) gives the same numbers.
    direct = odejax.diffeqsolve(
        odejax.ODETerm(decay_vf),
        odejax.Tsit5(),
        0.0,
        1.3,
        0.05,
        y0,
        0.7,
        stepsize_controller=pid(1e-10),
    )
    assert max_abs(direct.ys[0], y1) < 1e-14


def test_vmap_over_y0():
    y0s = jnp.array([[1.0, 2.0], [-3.0, 0.5], [0.0, 1e-3]])
    ys, _ = jax.vmap(_solve_decay, in_axes=(0, None, None))(y0s, 0.7, 1.3)
    assert max_abs(ys, np.exp(-0.7 * 1.3) * np.asarray(y0s)) < 1e-9


def test_vmap_over_args():
    rates = jnp.array([0.1, 1.0, 5.0])
    y0 = jnp.array([1.0, 2.0])
    ys, steps = jax.vmap(_solve_decay, in_axes=(None, 0, None))(y0, rates, 1.3)
    exact = np.exp(-np.asarray(rates)[:, None] * 1.3) * np.asarray(y0)
    assert max_abs(ys, exact) < 1e-9


def test_vmap_over_t1_steps_per_element():
    t1s = jnp.array([0.5, 2.0, 7.0])
    y0 = jnp.array([1.0])
    ys, steps = jax.vmap(_solve_decay, in_axes=(None, None, 0))(y0, 1.0, t1s)
    steps = np.asarray(steps)
    # Each element takes its own adaptive steps ...
    assert len(set(steps.tolist())) == 3, steps
    assert max_abs(ys[:, 0], np.exp(-np.asarray(t1s))) < 1e-9
    # ... and equals the same solve done alone.
    for i, t1 in enumerate(t1s):
        y_alone, steps_alone = _solve_decay(y0, 1.0, t1)
        assert int(steps_alone) == steps[i]
        assert max_abs(ys[i], y_alone) < 1e-12


# ---- dtypes ---------------------------------------------------------------------------


def test_float32_state_and_times():
    # x64 is enabled for the suite: float32 must be asked for, and must then be kept.
    f32 = jnp.float32
    ts = jnp.array([0.25, 0.5], f32)
    sol = odejax.diffeqsolve(
        odejax.ODETerm(decay_vf),
        odejax.Tsit5(),
        f32(0.0),
        f32(1.0),
        f32(0.1),
        jnp.array([1.0, 2.0], f32),
        f32(1.0),
        stepsize_controller=odejax.PIDController(rtol=f32(1e-6), atol=f32(1e-6)),
        saveat=odejax.SaveAt(ts=ts, t1=True),
    )
    assert sol.ys.dtype == jnp.float32
    assert sol.ts.dtype == jnp.float32
    exact = np.exp(-np.array([0.25, 0.5, 1.0]))[:, None] * np.array([1.0, 2.0])
    assert max_abs(sol.ys, exact) < 1e-5


@pytest.mark.parametrize("dt0", [0.1, None], ids=["dt0", "auto-dt0"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.complex64], ids=["float32", "complex64"])
def test_single_precision_state_with_float64_times(dtype, dt0):
    # A float32 state with (default, float64) Python times, e.g. a float32 neural ODE in
    # a program that enables x64: the state keeps its dtype, with no silent promotion.
    sol = odejax.diffeqsolve(
        odejax.ODETerm(decay_vf),
        odejax.Tsit5(),
        0.0,
        1.0,
        dt0,
        jnp.array([1.0, 2.0], dtype),
        1.0,
        stepsize_controller=odejax.PIDController(rtol=1e-6, atol=1e-6),
    )
    assert sol.ys.dtype == dtype
    assert max_abs(sol.ys[0], np.exp(-1.0) * np.array([1.0, 2.0])) < 1e-5


def rotation_vf(t, y, omega):
    return jnp.asarray(1j * omega, y.dtype) * y


@pytest.mark.parametrize(
    "dtype, tdtype, tol, bound",
    [(jnp.complex64, jnp.float32, 1e-6, 2e-5), (jnp.complex128, jnp.float64, 1e-10, 1e-8)],
    ids=["complex64", "complex128"],
)
@pytest.mark.parametrize("dt0", [0.1, None], ids=["dt0", "auto-dt0"])
def test_complex_state(dtype, tdtype, tol, bound, dt0):
    # y' = i w y: a rotation in the complex plane, y = y0 exp(i w t).
    omega, T = 3.0, 2.0
    y0 = jnp.array([1.0 + 0.5j, -2.0j], dtype)
    sol = odejax.diffeqsolve(
        odejax.ODETerm(rotation_vf),
        odejax.Tsit5(),
        tdtype(0.0),
        tdtype(T),
        None if dt0 is None else tdtype(dt0),
        y0,
        omega,
        stepsize_controller=odejax.PIDController(rtol=tdtype(tol), atol=tdtype(tol)),
    )
    assert sol.ys.dtype == dtype
    exact = np.asarray(y0, np.complex128) * np.exp(1j * omega * T)
    assert max_abs(sol.ys[0], exact) < bound


# ---- t0 == t1 -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "controller, dt0",
    [(odejax.ConstantStepSize(), 0.1), (pid(1e-6), None)],
    ids=["constant", "pid-auto-dt0"],
)
def test_empty_interval_returns_y0(controller, dt0):
    y0 = jnp.array([1.0, -2.0])
    sol = odejax.diffeqsolve(
        odejax.ODETerm(decay_vf),
        odejax.Tsit5(),
        1.0,
        1.0,
        dt0,
        y0,
        1.0,
        stepsize_controller=controller,
        saveat=odejax.SaveAt(t0=True, t1=True),
    )
    assert int(sol.result) == odejax.RESULTS.successful
    np.testing.assert_array_equal(sol.ts, [1.0, 1.0])
    np.testing.assert_array_equal(sol.ys, np.stack([y0, y0]))
    assert int(sol.stats["num_steps"]) == 0


def test_empty_interval_dense_evaluate_returns_y0():
    y0 = jnp.array([1.0, -2.0])
    sol = odejax.diffeqsolve(
        odejax.ODETerm(decay_vf),
        odejax.Tsit5(),
        1.0,
        1.0,
        0.1,
        y0,
        1.0,
        saveat=odejax.SaveAt(t1=True, dense=True),
        max_steps=4,
    )
    np.testing.assert_array_equal(sol.evaluate(1.0), y0)


# ---- statistics -----------------------------------------------------------------------


def test_stats_constant_step_fevals():
    # Tsit5 has 7 stages and is FSAL: one evaluation to start, then 6 new ones per step.
    sol = odejax.diffeqsolve(
        odejax.ODETerm(decay_vf),
        odejax.Tsit5(),
        0.0,
        1.0,
        0.1,
        jnp.array([1.0]),
        1.0,
        max_steps=16,
    )
    assert set(sol.stats) == {
        "num_steps",
        "num_accepted_steps",
        "num_rejected_steps",
        "max_steps",
        "num_fevals",
    }
    assert sol.stats["max_steps"] == 16
    assert int(sol.stats["num_steps"]) == 10
    assert int(sol.stats["num_accepted_steps"]) == 10
    assert int(sol.stats["num_rejected_steps"]) == 0
    assert int(sol.stats["num_fevals"]) == 1 + 10 * 6


def test_stats_adaptive_with_rejections():
    # A first step of the whole interval on a fast decay is rejected a few times.
    sol = odejax.diffeqsolve(
        odejax.ODETerm(decay_vf),
        odejax.Tsit5(),
        0.0,
        1.0,
        1.0,
        jnp.array([1.0]),
        10.0,
        stepsize_controller=pid(1e-6),
    )
    steps = int(sol.stats["num_steps"])
    rejected = int(sol.stats["num_rejected_steps"])
    assert rejected > 0
    assert steps == int(sol.stats["num_accepted_steps"]) + rejected
    # Given dt0 (no starting-step probe): a rejected step costs 6 evaluations too.
    assert int(sol.stats["num_fevals"]) == 1 + 6 * steps


# ---- differentiation through the solve -----------------------------------------------


def _y_at_1(a, adjoint):
    # y' = -a y, y(0) = 1: y(1) = exp(-a), dy(1)/da = -exp(-a).
    sol = odejax.diffeqsolve(
        odejax.ODETerm(decay_vf),
        odejax.Tsit5(),
        0.0,
        1.0,
        0.1,
        jnp.asarray(1.0),
        a,
        adjoint=adjoint,
        stepsize_controller=pid(1e-10),
        max_steps=64,
    )
    return sol.ys[0]


def test_derivative_through_solve_all_adjoints_agree():
    a = 0.7
    exact = -np.exp(-a)
    derivs = {
        "forward-jvp": jax.jvp(lambda a: _y_at_1(a, odejax.ForwardMode()), (a,), (1.0,))[1],
        "direct-jvp": jax.jvp(lambda a: _y_at_1(a, odejax.DirectAdjoint()), (a,), (1.0,))[1],
        "direct-grad": jax.grad(_y_at_1)(a, odejax.DirectAdjoint()),
        "checkpoint-grad": jax.grad(_y_at_1)(a, odejax.RecursiveCheckpointAdjoint()),
    }
    for name, d in derivs.items():
        assert abs(float(d) - exact) < 1e-6, (name, float(d), exact)
    # All are the exact derivative of the same discrete solve: equal to rounding.
    values = np.array([float(d) for d in derivs.values()])
    assert np.ptp(values) < 1e-12, derivs
