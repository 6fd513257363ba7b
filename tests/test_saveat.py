"""What a solve saves: SaveAt(t0/ts/t1/steps/fn), SubSaveAt groups and the dense
output (Solution.evaluate / Solution.derivative)."""

import functools as ft

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import odejax
from helpers import ADAPTIVE_SOLVERS, A, Y0, linear_exact, linear_vf, solver_id

TERM = odejax.ODETerm(linear_vf)  # y' = A y, a damped rotation; y = expm(A t) y0
T1 = 3.0
TOL = 1e-6
# Off-grid save times (never a step boundary in practice).
TS = np.linspace(0.05, 2.95, 9)


def pid(tol=TOL):
    return odejax.PIDController(rtol=jnp.asarray(tol), atol=jnp.asarray(tol))


def exact_at(ts):
    return np.stack([linear_exact(t) for t in np.asarray(ts)])


def max_abs(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


# ---- SaveAt(ts): dense output between steps, for every adaptive solver -----------------


@pytest.mark.parametrize("entry", ADAPTIVE_SOLVERS, ids=solver_id)
def test_saveat_ts_matches_exact(entry):
    solver = entry[0]
    sol = odejax.diffeqsolve(
        TERM,
        solver,
        0.0,
        T1,
        None,
        jnp.asarray(Y0),
        stepsize_controller=pid(),
        saveat=odejax.SaveAt(ts=jnp.asarray(TS)),
        max_steps=4096,
    )
    np.testing.assert_array_equal(sol.ts, TS)
    # Between steps the values come from each method's continuous extension, whose
    # error is of the size of the step's own error: within the same 100 * tol as the
    # solution at step ends (see test_controllers.test_pid_error_follows_tolerance).
    assert max_abs(sol.ys, exact_at(TS)) < 100 * TOL
    # Far fewer steps than save times for the high-order methods: values really are
    # interpolated, not stepped to.
    if entry[1] >= 5:
        assert int(sol.stats["num_steps"]) < 4 * len(TS)


def test_saveat_ts_on_the_interval_ends_and_repeated():
    ts = jnp.array([0.0, 1.0, 1.0, T1])
    sol = odejax.diffeqsolve(
        TERM,
        odejax.Tsit5(),
        0.0,
        T1,
        0.1,
        jnp.asarray(Y0),
        stepsize_controller=pid(1e-10),
        saveat=odejax.SaveAt(ts=ts),
    )
    np.testing.assert_array_equal(sol.ts, ts)
    np.testing.assert_array_equal(sol.ys[0], Y0)  # t0 itself: exactly y0
    assert max_abs(sol.ys, exact_at(ts)) < 1e-8


# ---- SaveAt(steps=True) ------------------------------------------------------------------


def test_saveat_steps():
    max_steps = 64
    sol = odejax.diffeqsolve(
        TERM,
        odejax.Tsit5(),
        0.0,
        T1,
        1.0,
        jnp.asarray(Y0),
        stepsize_controller=pid(),
        saveat=odejax.SaveAt(steps=True),
        max_steps=max_steps,
    )
    n = int(sol.stats["num_accepted_steps"])
    assert int(sol.stats["num_rejected_steps"]) > 0  # rejected steps are not saved
    assert sol.ts.shape == (max_steps,)
    assert sol.ys.shape == (max_steps, 2)
    ts = np.asarray(sol.ts[:n])
    assert np.all(np.diff(ts) > 0)
    assert ts[0] > 0.0
    assert ts[-1] == T1
    assert np.all(np.isinf(np.asarray(sol.ts[n:])))
    assert np.all(np.isinf(np.asarray(sol.ys[n:])))
    assert max_abs(sol.ys[:n], exact_at(ts)) < 100 * TOL


def test_saveat_steps_with_t0_and_ts():
    # t0 first; then the ts and the step ends in time order, interleaved (as diffrax
    # does); t1 is the last step itself, not saved twice; the unused rest is inf.
    ts = jnp.array([0.5, 1.5])
    max_steps = 64
    sol = odejax.diffeqsolve(
        TERM,
        odejax.Tsit5(),
        0.0,
        T1,
        0.1,
        jnp.asarray(Y0),
        stepsize_controller=pid(),
        saveat=odejax.SaveAt(t0=True, ts=ts, steps=True, t1=True),
        max_steps=max_steps,
    )
    n = int(sol.stats["num_accepted_steps"])
    assert sol.ts.shape == (1 + 2 + max_steps,)
    used = 1 + 2 + n
    saved = np.asarray(sol.ts[:used])
    assert saved[0] == 0.0 and saved[-1] == T1
    assert np.all(np.diff(saved) >= 0)
    assert 0.5 in saved.tolist() and 1.5 in saved.tolist()
    assert np.all(np.isinf(np.asarray(sol.ts[used:])))
    assert max_abs(sol.ys[:used], exact_at(saved)) < 100 * TOL


# ---- fn, and the t0 / ts / t1 layout ----------------------------------------------------


def first_squared(t, y, args):
    return y[0] ** 2


def test_saveat_fn():
    sol = odejax.diffeqsolve(
        TERM,
        odejax.Tsit5(),
        0.0,
        T1,
        0.1,
        jnp.asarray(Y0),
        stepsize_controller=pid(),
        saveat=odejax.SaveAt(fn=first_squared, ts=jnp.asarray(TS), t1=True),
    )
    assert sol.ys.shape == (len(TS) + 1,)
    want = exact_at(np.append(TS, T1))[:, 0] ** 2
    assert max_abs(sol.ys, want) < 100 * TOL


def test_saveat_fn_pytree_output_sees_t_and_args():
    def fn(t, y, args):
        return {"t": t, "scaled": args * y}

    sol = odejax.diffeqsolve(
        TERM,
        odejax.Tsit5(),
        0.0,
        T1,
        0.1,
        jnp.asarray(Y0),
        2.0,
        stepsize_controller=pid(),
        saveat=odejax.SaveAt(fn=fn, t0=True, ts=jnp.array([1.0]), t1=True),
    )
    np.testing.assert_array_equal(sol.ys["t"], [0.0, 1.0, T1])
    assert sol.ys["scaled"].shape == (3, 2)
    assert max_abs(sol.ys["scaled"], 2.0 * exact_at([0.0, 1.0, T1])) < 100 * TOL


@pytest.mark.parametrize("t0, t1", [(0.0, T1), (T1, 0.0)], ids=["forward", "backward"])
def test_saveat_layout_t0_ts_t1(t0, t1):
    ts = np.array([0.4, 1.3, 2.2])
    if t1 < t0:
        ts = ts[::-1]
    y0 = linear_exact(t0)
    sol = odejax.diffeqsolve(
        TERM,
        odejax.Tsit5(),
        t0,
        t1,
        0.1 * np.sign(t1 - t0),
        jnp.asarray(y0),
        stepsize_controller=pid(1e-10),
        saveat=odejax.SaveAt(t0=True, ts=jnp.asarray(ts), t1=True),
    )
    want_ts = np.concatenate([[t0], ts, [t1]])
    np.testing.assert_array_equal(sol.ts, want_ts)
    np.testing.assert_array_equal(sol.ys[0], y0)
    assert max_abs(sol.ys, exact_at(want_ts)) < 1e-8


# ---- SubSaveAt -----------------------------------------------------------------------


def test_subsaveat_list():
    ts = jnp.array([0.5, 1.0, 2.0])
    saveat = odejax.SaveAt(
        subs=[odejax.SubSaveAt(t1=True), odejax.SubSaveAt(ts=ts, fn=first_squared)]
    )
    sol = odejax.diffeqsolve(
        TERM,
        odejax.Tsit5(),
        0.0,
        T1,
        0.1,
        jnp.asarray(Y0),
        stepsize_controller=pid(),
        saveat=saveat,
    )
    assert isinstance(sol.ts, list) and isinstance(sol.ys, list) and len(sol.ys) == 2
    np.testing.assert_array_equal(sol.ts[0], [T1])
    np.testing.assert_array_equal(sol.ts[1], ts)
    assert sol.ys[0].shape == (1, 2)
    assert sol.ys[1].shape == (3,)
    assert max_abs(sol.ys[0], exact_at([T1])) < 100 * TOL
    assert max_abs(sol.ys[1], exact_at(ts)[:, 0] ** 2) < 100 * TOL


def test_subsaveat_nested_structure_and_steps():
    max_steps = 32
    saveat = odejax.SaveAt(
        subs={
            "end": odejax.SubSaveAt(t1=True),
            "more": (odejax.SubSaveAt(steps=True, fn=first_squared), odejax.SubSaveAt(t0=True)),
        }
    )
    sol = odejax.diffeqsolve(
        TERM,
        odejax.Tsit5(),
        0.0,
        T1,
        0.1,
        jnp.asarray(Y0),
        stepsize_controller=pid(),
        saveat=saveat,
        max_steps=max_steps,
    )
    assert set(sol.ys) == {"end", "more"} and len(sol.ys["more"]) == 2
    assert sol.ys["end"].shape == (1, 2)
    assert sol.ys["more"][0].shape == (max_steps,)
    assert sol.ys["more"][1].shape == (1, 2)
    np.testing.assert_array_equal(sol.ys["more"][1][0], Y0)
    n = int(sol.stats["num_accepted_steps"])
    steps_ts = np.asarray(sol.ts["more"][0][:n])
    assert steps_ts[-1] == T1
    assert max_abs(sol.ys["more"][0][:n], exact_at(steps_ts)[:, 0] ** 2) < 100 * TOL
    # The groups agree with each other at t1.
    assert float(sol.ys["more"][0][n - 1]) == pytest.approx(
        float(sol.ys["end"][0, 0]) ** 2, rel=1e-14
    )


# ---- dense output ---------------------------------------------------------------------


@ft.lru_cache(maxsize=None)
def _dense_solution(t0, t1):
    return odejax.diffeqsolve(
        TERM,
        odejax.Tsit5(),
        t0,
        t1,
        None,
        jnp.asarray(linear_exact(t0)),
        stepsize_controller=pid(1e-8),
        saveat=odejax.SaveAt(dense=True),
        max_steps=128,
    )


T_QUERY = np.array([0.0, 0.123, 0.77, 1.5, 2.345, 2.9, T1])


@pytest.mark.parametrize("t0, t1", [(0.0, T1), (T1, 0.0)], ids=["forward", "backward"])
def test_dense_evaluate_and_derivative(t0, t1):
    sol = _dense_solution(t0, t1)
    assert sol.ys is None and sol.ts is None  # only the dense output was asked for
    values = jax.vmap(sol.evaluate)(jnp.asarray(T_QUERY))
    derivs = jax.vmap(sol.derivative)(jnp.asarray(T_QUERY))
    exact = exact_at(T_QUERY)
    assert max_abs(values, exact) < 100 * 1e-8
    # The derivative of the interpolant is one order less accurate than its values.
    assert max_abs(derivs, exact @ A.T) < 1e-5
    # At the start of the solve the value is y0 itself.
    np.testing.assert_array_equal(sol.evaluate(t0), linear_exact(t0))


@pytest.mark.parametrize("t0, t1", [(0.0, T1), (T1, 0.0)], ids=["forward", "backward"])
def test_dense_evaluate_increment(t0, t1):
    sol = _dense_solution(t0, t1)
    a, b = 0.4, 2.6
    want = linear_exact(b) - linear_exact(a)
    assert max_abs(sol.evaluate(a, b), want) < 100 * 1e-8
    np.testing.assert_allclose(sol.evaluate(a, b), sol.evaluate(b) - sol.evaluate(a), atol=1e-15)


def test_dense_is_continuous_across_step_boundaries():
    sol = odejax.diffeqsolve(
        TERM,
        odejax.Tsit5(),
        0.0,
        T1,
        0.1,
        jnp.asarray(Y0),
        stepsize_controller=pid(1e-8),
        saveat=odejax.SaveAt(dense=True, steps=True),
        max_steps=128,
    )
    n = int(sol.stats["num_accepted_steps"])
    inner = sol.ts[: n - 1]  # the step boundaries inside the interval
    left = jax.vmap(lambda t: sol.evaluate(t, left=True))(inner)
    right = jax.vmap(lambda t: sol.evaluate(t, left=False))(inner)
    # Both one-sided limits equal the saved step values (continuity of the interpolant).
    np.testing.assert_allclose(left, sol.ys[: n - 1], rtol=0, atol=1e-13)
    np.testing.assert_allclose(right, sol.ys[: n - 1], rtol=0, atol=1e-13)


def test_evaluate_without_dense_raises():
    sol = odejax.diffeqsolve(TERM, odejax.Tsit5(), 0.0, 1.0, 0.1, jnp.asarray(Y0))
    with pytest.raises(ValueError, match=r"dense=True"):
        sol.evaluate(0.5)
    with pytest.raises(ValueError, match=r"dense=True"):
        sol.derivative(0.5)
