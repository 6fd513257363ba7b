"""Step-size controllers: PIDController (tolerances, automatic first step, dtmin/dtmax,
PID coefficients), StepTo, ConstantStepSize and ClipStepSizeController."""

import functools as ft

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import odejax
from helpers import NL_Y0, nonlinear_exact, nonlinear_vf

TERM = odejax.ODETerm(nonlinear_vf)  # y' = cos(t) y, y = y0 exp(sin t)
Y0 = jnp.asarray(NL_Y0)


def max_abs(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


def used(sol):
    """The saved step ends of a SaveAt(steps=True) solve (the entries that were used)."""
    n = int(sol.stats["num_accepted_steps"])
    return np.asarray(sol.ts[:n]), jax.tree.map(lambda y: np.asarray(y[:n]), sol.ys)


# ---- PIDController: tolerance sweep -----------------------------------------------------

T_SWEEP = 6.0
TOLS = [1e-4, 1e-6, 1e-8]


@ft.lru_cache(maxsize=None)
def _sweep_fn(solver):
    @jax.jit
    def solve(tol, dt0):
        sol = odejax.diffeqsolve(
            TERM,
            solver,
            0.0,
            T_SWEEP,
            dt0,
            Y0,
            stepsize_controller=odejax.PIDController(rtol=tol, atol=tol),
            max_steps=2048,
        )
        return sol.ys[0], sol.stats["num_steps"], sol.stats["num_accepted_steps"]

    return solve


SWEEP_SOLVERS = [odejax.Tsit5(), odejax.Dopri5(), odejax.Dopri8(), odejax.Bosh3()]


@pytest.mark.parametrize("solver", SWEEP_SOLVERS, ids=lambda s: type(s).__name__)
def test_pid_error_follows_tolerance(solver):
    solve = _sweep_fn(solver)  # tol is traced: one compile for the three tolerances
    exact = nonlinear_exact(T_SWEEP)
    errors, steps = [], []
    for tol in TOLS:
        y1, n, _ = solve(jnp.asarray(tol), jnp.asarray(0.01))
        errors.append(max_abs(y1, exact))
        steps.append(int(n))
        # The controller keeps each step's local error near tol (relative to |y|, which
        # stays below 3 here); the global error adds up the local errors of the steps,
        # damped or amplified by the problem, which on this problem and interval costs
        # a factor of order 10 (Bosh3, with its many steps, is the worst). 100 * tol
        # leaves room for that and still fails a controller that ignores tol.
        assert errors[-1] <= 100 * tol, (tol, errors)
    assert errors[0] > errors[1] > errors[2], errors
    assert steps[0] < steps[1] < steps[2], steps


@pytest.mark.parametrize("solver", SWEEP_SOLVERS, ids=lambda s: type(s).__name__)
def test_pid_automatic_first_step(solver):
    # dt0=None: the controller picks the first step (Hairer's algorithm).
    solve = _sweep_fn(solver)
    tol = 1e-6
    exact = nonlinear_exact(T_SWEEP)
    y_auto, n_auto, _ = solve(jnp.asarray(tol), None)
    y_given, n_given, _ = solve(jnp.asarray(tol), jnp.asarray(0.01))
    assert max_abs(y_auto, exact) <= 100 * tol
    assert max_abs(y_given, exact) <= 100 * tol
    # A sensible first step costs no more than a few extra steps compared with a given one.
    assert int(n_auto) <= int(n_given) + 5, (int(n_auto), int(n_given))


@pytest.mark.parametrize("t0, t1", [(0.0, 2.0), (2.0, 0.0)], ids=["forward", "backward"])
def test_pid_automatic_first_step_size(t0, t1):
    # The first step the algorithm chooses is a usable fraction of the interval: not
    # the 1e-6 fallback, not beyond t1; in both directions.
    tol = 1e-6
    sol = odejax.diffeqsolve(
        TERM,
        odejax.Tsit5(),
        t0,
        t1,
        None,
        Y0,
        saveat=odejax.SaveAt(steps=True),
        stepsize_controller=odejax.PIDController(rtol=tol, atol=tol),
        max_steps=64,
    )
    ts, ys = used(sol)
    first = abs(ts[0] - t0)
    assert 1e-3 < first < abs(t1 - t0), first
    assert ts[-1] == t1
    exact = nonlinear_exact(t1) * np.exp(-np.sin(t0))
    assert max_abs(ys[-1], exact) < 100 * tol


# ---- PIDController: coefficients, dtmin, dtmax --------------------------------------------


@jax.jit
def _solve_pid_coeffs(p, i, d):
    sol = odejax.diffeqsolve(
        TERM,
        odejax.Tsit5(),
        0.0,
        T_SWEEP,
        0.01,
        Y0,
        stepsize_controller=odejax.PIDController(
            rtol=jnp.asarray(1e-7), atol=jnp.asarray(1e-7), pcoeff=p, icoeff=i, dcoeff=d
        ),
        saveat=odejax.SaveAt(steps=True),
        max_steps=256,
    )
    return sol


@pytest.mark.parametrize(
    "coeffs",
    [(0.3, 0.3, 0.0), (0.2, 0.4, 0.0), (0.1, 0.3, 0.1), (0.0, 0.7, 0.3)],
    ids=["PI-0.3-0.3", "PI-0.2-0.4", "PID-0.1-0.3-0.1", "ID-0.7-0.3"],
)
def test_pid_coefficients(coeffs):
    sol = _solve_pid_coeffs(*(jnp.asarray(c) for c in coeffs))
    ts, ys = used(sol)
    assert ts[-1] == T_SWEEP
    assert max_abs(ys[-1], nonlinear_exact(T_SWEEP)) < 100 * 1e-7
    # The coefficients are used: the steps differ from those of the I controller.
    ts_i, _ = used(_solve_pid_coeffs(jnp.asarray(0.0), jnp.asarray(1.0), jnp.asarray(0.0)))
    assert ts.shape != ts_i.shape or np.max(np.abs(ts - ts_i)) > 1e-6


def blow_up_vf(t, y, args):
    return y**2  # y(0) = 1: y = 1 / (1 - t), singular at t = 1


def test_dtmin_without_force_ends_with_dt_min_reached():
    ctrl = odejax.PIDController(rtol=1e-6, atol=1e-6, dtmin=1e-3, force_dtmin=False)
    sol = odejax.diffeqsolve(
        odejax.ODETerm(blow_up_vf),
        odejax.Tsit5(),
        0.0,
        2.0,
        0.1,
        jnp.array([1.0]),
        stepsize_controller=ctrl,
        max_steps=500,
        throw=False,
    )
    assert int(sol.result) == odejax.RESULTS.dt_min_reached
    assert 0.9 < float(sol.ts[0]) < 1.0  # stopped before the singularity
    # Up to where it stopped, the solution is still accurate.
    assert abs(float(sol.ys[0, 0]) - 1 / (1 - float(sol.ts[0]))) < 1e-5 * float(sol.ys[0, 0]) ** 2
    with pytest.raises(odejax.SolveError, match="dtmin"):
        odejax.diffeqsolve(
            odejax.ODETerm(blow_up_vf),
            odejax.Tsit5(),
            0.0,
            2.0,
            0.1,
            jnp.array([1.0]),
            stepsize_controller=ctrl,
            max_steps=500,
        )


def test_dtmin_forced_steps_at_least_dtmin():
    # With force_dtmin (the default), steps never go below dtmin, even where the error
    # estimate would ask for smaller ones (the start of a fast transient here).
    dtmin = 0.02
    sol = odejax.diffeqsolve(
        odejax.ODETerm(lambda t, y, args: -50.0 * (y - jnp.cos(t))),
        odejax.Tsit5(),
        0.0,
        1.0,
        None,
        jnp.array([0.0]),
        saveat=odejax.SaveAt(steps=True),
        max_steps=128,
        stepsize_controller=odejax.PIDController(rtol=1e-8, atol=1e-8, dtmin=dtmin),
    )
    ts, _ = used(sol)
    steps = np.diff(np.concatenate([[0.0], ts]))
    assert ts[-1] == 1.0
    assert np.all(steps[:-1] >= dtmin * (1 - 1e-12)), steps  # the last step is clipped to t1


@pytest.mark.parametrize("dt0", [0.5, None], ids=["dt0", "auto-dt0"])
@pytest.mark.parametrize("t0, t1", [(0.0, 1.5), (1.5, 0.0)], ids=["forward", "backward"])
def test_dtmax_bounds_every_step(t0, t1, dt0):
    dtmax = 0.07
    sol = odejax.diffeqsolve(
        TERM,
        odejax.Tsit5(),
        t0,
        t1,
        None if dt0 is None else np.sign(t1 - t0) * dt0,
        Y0,
        saveat=odejax.SaveAt(steps=True),
        max_steps=64,
        stepsize_controller=odejax.PIDController(rtol=1e-4, atol=1e-4, dtmax=dtmax),
    )
    ts, _ = used(sol)
    steps = np.abs(np.diff(np.concatenate([[t0], ts])))
    assert ts[-1] == t1
    # The first step too, whether dt0 is given (0.5 > dtmax) or chosen.
    assert np.all(steps <= dtmax * (1 + 1e-12)), steps
    assert len(steps) >= np.ceil(1.5 / dtmax)


# ---- StepTo ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ts",
    [np.array([0.0, 0.1, 0.35, 0.4, 0.9, 1.3]), np.array([1.3, 1.0, 0.2, 0.15, 0.0])],
    ids=["forward", "backward"],
)
def test_stepto_lands_on_every_time(ts):
    n = len(ts) - 1
    sol = odejax.diffeqsolve(
        TERM,
        odejax.Tsit5(),
        float(ts[0]),
        float(ts[-1]),
        None,
        Y0,
        stepsize_controller=odejax.StepTo(jnp.asarray(ts)),
        saveat=odejax.SaveAt(steps=True),
        max_steps=n,  # exactly enough
    )
    assert int(sol.stats["num_steps"]) == n
    assert int(sol.stats["num_accepted_steps"]) == n
    np.testing.assert_array_equal(sol.ts, ts[1:])
    exact = np.stack([nonlinear_exact(t) * np.exp(-np.sin(ts[0])) for t in ts[1:]])
    assert max_abs(sol.ys, exact) < 1e-4  # Tsit5 with steps up to 0.8 long


# ---- ConstantStepSize -------------------------------------------------------------------


@jax.jit
def _solve_constant(t0, t1, dt0):
    return odejax.diffeqsolve(
        TERM, odejax.Tsit5(), t0, t1, dt0, Y0, saveat=odejax.SaveAt(steps=True), max_steps=16
    )


@pytest.mark.parametrize(
    "t0, t1, dt0, num_steps",
    [
        (0.0, 1.0, 0.3, 4),  # 3 full steps and a last step of 0.1
        (0.0, 1.0, 0.1, 10),  # 10 * 0.1 != 1.0 in floating point: still 10 steps
        (0.0, 1.0, 1 / 3, 3),
        (0.2, 2.3, 0.7, 3),  # 3 * 0.7 = 2.1 up to rounding
        (1.0, 0.0, -0.3, 4),
        (0.0, 1.0, 2.5, 1),  # dt0 longer than the interval
    ],
    ids=["remainder", "tenths", "thirds", "offset", "backward", "longer-than-interval"],
)
def test_constant_step_size_ends_exactly_at_t1(t0, t1, dt0, num_steps):
    sol = _solve_constant(jnp.asarray(t0), jnp.asarray(t1), jnp.asarray(dt0))
    ts, ys = used(sol)
    assert len(ts) == num_steps
    assert int(sol.stats["num_steps"]) == num_steps
    assert ts[-1] == t1  # exactly, not a few ULP off
    # Every step but the last has size dt0 (to rounding).
    np.testing.assert_allclose(np.diff(np.concatenate([[t0], ts]))[:-1], dt0, rtol=1e-12)
    exact = nonlinear_exact(t1) * np.exp(-np.sin(t0))
    assert max_abs(ys[-1], exact) < 1e-3


# ---- ClipStepSizeController -------------------------------------------------------------

# f = -y before t = 1 and -3 y after: a jump of the vector field at t = 1, in the two
# conventions (which side the value at t = 1 itself belongs to).
JUMP_FIELDS = {
    "right-continuous": lambda t, y, args: jnp.where(t < 1.0, -y, -3.0 * y),
    "left-continuous": lambda t, y, args: jnp.where(t <= 1.0, -y, -3.0 * y),
}


def jump_exact(t):
    return np.where(t < 1, np.exp(-t), np.exp(-1.0) * np.exp(-3.0 * (t - 1.0)))


def _jump_solve(vf, controller, t0=0.0, t1=2.0):
    return odejax.diffeqsolve(
        odejax.ODETerm(vf),
        odejax.Tsit5(),
        t0,
        t1,
        0.1 * np.sign(t1 - t0),
        jnp.array([1.0]),
        stepsize_controller=controller,
        saveat=odejax.SaveAt(steps=True),
        max_steps=256,
    )


TOL = 1e-8
PID = odejax.PIDController(rtol=TOL, atol=TOL)
ULP = np.finfo(np.float64).eps


@pytest.mark.parametrize("vf", JUMP_FIELDS.values(), ids=JUMP_FIELDS.keys())
def test_clip_jump_ts_more_accurate_and_steps_to_the_jump(vf):
    plain = _jump_solve(vf, PID)
    clipped = _jump_solve(vf, odejax.ClipStepSizeController(PID, jump_ts=jnp.array([1.0])))
    ts_p, ys_p = used(plain)
    ts_c, ys_c = used(clipped)
    assert ts_c[-1] == 2.0
    err_plain = abs(float(ys_p[-1, 0]) - jump_exact(2.0))
    err_clip = abs(float(ys_c[-1, 0]) - jump_exact(2.0))
    assert err_clip < err_plain, (err_clip, err_plain)
    assert err_clip < 100 * TOL
    # A step ends at the jump (to within a couple of ULP: an implementation may stop
    # just before it and restart just after it).
    assert np.min(np.abs(ts_c - 1.0)) <= 2 * ULP, ts_c[np.argmin(np.abs(ts_c - 1.0))]


@pytest.mark.parametrize("vf", JUMP_FIELDS.values(), ids=JUMP_FIELDS.keys())
def test_clip_jump_ts_avoids_rejections_at_the_jump(vf):
    # Told where the jump is, the controller need not find it by trial and error: no
    # cascade of rejected, shrinking steps in front of it (without the clip, about 40
    # steps are rejected here), and fewer steps in all.
    plain = _jump_solve(vf, PID)
    clipped = _jump_solve(vf, odejax.ClipStepSizeController(PID, jump_ts=jnp.array([1.0])))
    assert int(clipped.stats["num_rejected_steps"]) <= 3, clipped.stats
    assert int(clipped.stats["num_steps"]) < int(plain.stats["num_steps"]), (
        clipped.stats,
        plain.stats,
    )


def test_clip_jump_ts_backward():
    # Backward from t = 2 (y(2) from the exact solution) to 0 across the jump at 1.
    vf = JUMP_FIELDS["right-continuous"]
    y2 = jump_exact(2.0)
    sol = odejax.diffeqsolve(
        odejax.ODETerm(vf),
        odejax.Tsit5(),
        2.0,
        0.0,
        -0.1,
        jnp.array([y2]),
        stepsize_controller=odejax.ClipStepSizeController(PID, jump_ts=jnp.array([1.0])),
        saveat=odejax.SaveAt(steps=True),
        max_steps=256,
    )
    ts, ys = used(sol)
    assert ts[-1] == 0.0
    assert np.min(np.abs(ts - 1.0)) <= 2 * ULP
    assert abs(float(ys[-1, 0]) - 1.0) < 100 * TOL


def test_clip_step_ts_forces_step_ends():
    # step_ts on a smooth problem: steps end exactly at each of the given times.
    step_ts = jnp.array([0.3, 1.0, 1.7])
    ctrl = odejax.ClipStepSizeController(
        odejax.PIDController(rtol=1e-4, atol=1e-4), step_ts=step_ts
    )
    sol = odejax.diffeqsolve(
        TERM,
        odejax.Tsit5(),
        0.0,
        2.0,
        0.1,
        Y0,
        stepsize_controller=ctrl,
        saveat=odejax.SaveAt(steps=True),
        max_steps=64,
    )
    ts, ys = used(sol)
    for t in np.asarray(step_ts):
        assert t in ts.tolist(), (t, ts)
    assert max_abs(ys[-1], nonlinear_exact(2.0)) < 100 * 1e-4


def test_clip_step_ts_with_constant_step_size():
    # A constant step of 0.3 clipped at 0.5: the step ends at 0.5 and then goes on.
    ctrl = odejax.ClipStepSizeController(odejax.ConstantStepSize(), step_ts=jnp.array([0.5]))
    sol = odejax.diffeqsolve(
        TERM,
        odejax.Tsit5(),
        0.0,
        1.0,
        0.3,
        Y0,
        stepsize_controller=ctrl,
        saveat=odejax.SaveAt(steps=True),
        max_steps=8,
    )
    ts, _ = used(sol)
    assert 0.5 in ts.tolist(), ts
    assert ts[0] == pytest.approx(0.3, abs=1e-15)
    assert ts[-1] == 1.0
