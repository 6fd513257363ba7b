"""Robustness contracts of the solve loop (issue 7): every solve ends; NaN/Inf, dtmin
and the resolution of time end it with a result code that names them; `throw=True`
raises `odejax.SolveError` saying what happened, where and what to try (also under
jit); `throw=False` returns per-element results with unreached outputs inf-filled;
vmap takes the same steps per element as solving alone; bad arguments raise before
tracing; and the loop scales (large states, wide batches, long solves).

Several tests use `max_steps=None`: a loop that fails to end would hang them, so a
hang is a failure too (CI's time limit catches it).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import odejax
from helpers import decay_vf, pid

F32 = jnp.float32
SUCCESS = odejax.RESULTS.successful


def _results(sol):
    return np.asarray(sol.result)


class FaultyTsit5(odejax.AbstractSolver):
    """Tsit5 with injected faults: a step longer than `h_fail`, or from t >= `t_stuck`,
    reports failure (a stand-in for an implicit solver whose Newton iteration fails);
    a step ending after `t_nan_error` has a NaN error estimate but a finite y1 (as
    when a stage with zero weight in y1 is NaN)."""

    h_fail: float = np.inf
    t_stuck: float = np.inf
    t_nan_error: float = np.inf
    fevals_per_step = odejax.Tsit5.fevals_per_step
    init_fevals = odejax.Tsit5.init_fevals

    def order(self, terms):
        return odejax.Tsit5().order(terms)

    def error_order(self, terms):
        return odejax.Tsit5().error_order(terms)

    def init(self, terms, t0, t1, y0, args):
        return odejax.Tsit5().init(terms, t0, t1, y0, args)

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        y1, err, dense, state, result = odejax.Tsit5().step(
            terms, t0, t1, y0, args, solver_state, made_jump
        )
        failed = (t1 - t0 > self.h_fail) | (t0 >= self.t_stuck)
        err = jnp.where(t1 > self.t_nan_error, jnp.nan, err)
        return y1, err, dense, state, jnp.where(failed, odejax.RESULTS.solver_failed, result)

    def interpolation(self, t0, t1, dense_info):
        return odejax.Tsit5().interpolation(t0, t1, dense_info)


# ---- termination -------------------------------------------------------------------


@pytest.mark.parametrize(
    "t0, dt0, controller",
    [
        (F32(1e8), F32(1e-3), pid(1e-6)),
        (F32(1e8), F32(1e-3), odejax.ConstantStepSize()),
        (1e17, 1e-3, pid(1e-6)),
        (1e17, 1e-3, odejax.ConstantStepSize()),
    ],
    ids=["float32-pid", "float32-constant", "float64-pid", "float64-constant"],
)
def test_step_below_time_resolution_ends_with_underflow(t0, dt0, controller):
    # t0 + dt0 == t0: no step can make progress. Without a bound on the steps the
    # solve must still end, with a result that names the cause.
    dtype = jnp.asarray(t0).dtype
    args = (odejax.ODETerm(decay_vf), odejax.Tsit5(), t0, t0 + dtype.type(100.0), dt0)
    args = args + (jnp.ones(2, dtype), jnp.asarray(1.0, dtype))
    kw = dict(stepsize_controller=controller, max_steps=None)
    sol = odejax.diffeqsolve(*args, throw=False, **kw)
    assert _results(sol) == odejax.RESULTS.dt_underflow
    with pytest.raises(odejax.SolveError, match=r"underflowed the resolution of time at t="):
        odejax.diffeqsolve(*args, **kw)


@pytest.mark.parametrize("dtype", [jnp.float64, F32], ids=["float64", "float32"])
def test_rejections_shrinking_below_time_resolution_end(dtype):
    # y' = y^2, y(0) = 1 blows up at t = 1. Near the blow-up the controller rejects
    # steps of a few ULP, and `t + 0.9 dt` rounds back to `t + dt`: the same step used
    # to be retried forever. It must end with dt_underflow close to t = 1.
    sol = odejax.diffeqsolve(
        odejax.ODETerm(lambda t, y, args: y**2),
        odejax.Tsit5(),
        dtype(0.0),
        dtype(2.0),
        dtype(0.1),
        jnp.ones(1, dtype),
        stepsize_controller=pid(1e-6 if dtype == jnp.float64 else 1e-4),
        saveat=odejax.SaveAt(t1=True),
        max_steps=None,
        throw=False,
    )
    assert _results(sol) == odejax.RESULTS.dt_underflow
    # Stopped where it could not go on: near the singularity, not at t1 = 2.
    assert 0.99 < float(sol.ts[-1]) < 1.01


def test_last_step_onto_t1_is_never_rejected_forever():
    # float32 times near 1000: a rejected last step must not be snapped back onto t1.
    def osc(t, y, w):
        return jnp.stack([y[1], -(w**2) * y[0]])

    sol = odejax.diffeqsolve(
        odejax.ODETerm(osc),
        odejax.Tsit5(),
        F32(990.0),
        F32(1000.0),
        None,
        jnp.array([1.0, 0.0], F32),
        F32(100.0),
        stepsize_controller=odejax.PIDController(rtol=1e-5, atol=1e-5),
        max_steps=None,
        throw=False,
    )
    assert _results(sol) == SUCCESS
    assert sol.ts[-1] == F32(1000.0)
    np.testing.assert_allclose(sol.ys[-1, 0], np.cos(100.0 * 10.0), atol=2e-2)


@pytest.mark.parametrize("dtype", [jnp.float64, F32], ids=["float64", "float32"])
def test_steps_a_few_ulp_short_of_t1_are_snapped_onto_it(dtype):
    # Ten steps of 0.1 sum to 0.9999999999999999 in float64 (0.99999994 in float32):
    # the tenth step must end exactly at t1, not leave an eleventh step of one ULP.
    sol = odejax.diffeqsolve(
        odejax.ODETerm(decay_vf),
        odejax.Tsit5(),
        dtype(0.0),
        dtype(1.0),
        dtype(0.1),
        jnp.ones(1, dtype),
        jnp.asarray(1.0, dtype),
        saveat=odejax.SaveAt(steps=True),
        max_steps=16,
    )
    assert int(sol.stats["num_steps"]) == 10
    assert sol.ts[9] == dtype(1.0)


@pytest.mark.parametrize(
    "controller", [odejax.ConstantStepSize(), pid(1e-6)], ids=["constant", "pid"]
)
def test_step_below_time_resolution_near_t1_is_an_underflow_not_a_step_to_t1(controller):
    # t1 is 2 ULP after t0 (within the snapping tolerance) and t0 + dt0 == t0: a step
    # that does not move must not be snapped onto t1.
    t0 = 1.0
    t1 = float(np.nextafter(np.nextafter(t0, 2.0), 2.0))
    sol = odejax.diffeqsolve(
        odejax.ODETerm(decay_vf),
        odejax.Tsit5(),
        t0,
        t1,
        1e-20,
        jnp.ones(2),
        1.0,
        stepsize_controller=controller,
        max_steps=None,
        throw=False,
    )
    assert _results(sol) == odejax.RESULTS.dt_underflow
    assert int(sol.stats["num_steps"]) == 0


class _RejectFirstRetryOneUlpShorter(odejax.AbstractStepSizeController):
    """Rejects the first step and proposes a retry one ULP shorter (within the snapping
    tolerance of t1 when the first step ends at t1); accepts every later step."""

    def init(self, t0, t1, y0, dt0, args, func, f0, error_order):
        return t0 + dt0, jnp.asarray(0, jnp.int32)

    def adapt_step_size(self, t0, t1, y0, y1, args, y_error, error_order, state):
        keep = state >= 1
        next_t0 = jnp.where(keep, t1, t0)
        retry = jnp.nextafter(t1, jnp.asarray(-jnp.inf, t1.dtype))
        next_t1 = jnp.where(keep, next_t0 + 1.0, retry)
        return keep, next_t0, next_t1, False, state + 1, odejax.RESULTS.successful


def test_rejected_step_onto_t1_is_retried_at_most_halfway_to_t1():
    # The retry would be snapped back onto t1 (the step just rejected): it is halved,
    # rather than crawling towards t1 one ULP at a time.
    sol = odejax.diffeqsolve(
        odejax.ODETerm(decay_vf),
        odejax.Tsit5(),
        0.0,
        1.0,
        1.0,
        jnp.ones(1),
        1.0,
        stepsize_controller=_RejectFirstRetryOneUlpShorter(),
        saveat=odejax.SaveAt(steps=True),
        max_steps=8,
        throw=False,
    )
    assert _results(sol) == SUCCESS
    assert int(sol.stats["num_rejected_steps"]) == 1
    np.testing.assert_array_equal(np.asarray(sol.ts[:2]), [0.5, 1.0])


def test_traced_dt0_of_the_wrong_sign_does_not_integrate_backwards():
    # A traced dt0 cannot be checked in Python: the first step would go backwards.
    solve = jax.jit(
        lambda dt0: odejax.diffeqsolve(
            odejax.ODETerm(decay_vf),
            odejax.Tsit5(),
            0.0,
            1.0,
            dt0,
            jnp.ones(2),
            1.0,
            max_steps=None,
            throw=False,
        )
    )
    sol = solve(-0.1)
    assert _results(sol) == odejax.RESULTS.dt_underflow
    assert int(sol.stats["num_steps"]) == 0
    assert float(sol.ts[-1]) == 0.0  # the state returned is y0, saved at t0
    assert _results(solve(0.1)) == SUCCESS


# ---- non-finite values ---------------------------------------------------------------


def nan_after_half(t, y, args):
    return jnp.where(t > 0.5, jnp.nan, -y)


@pytest.mark.parametrize(
    "controller, dt0",
    [(odejax.ConstantStepSize(), 0.01), (pid(1e-6), 0.01), (pid(1e-6), None)],
    ids=["constant", "pid", "pid-auto-dt0"],
)
def test_nonfinite_ends_with_nonfinite_result(controller, dt0):
    ts = jnp.array([0.25, 0.75])
    sol = odejax.diffeqsolve(
        odejax.ODETerm(nan_after_half),
        odejax.Tsit5(),
        0.0,
        1.0,
        dt0,
        jnp.array([1.0]),
        stepsize_controller=controller,
        saveat=odejax.SaveAt(ts=ts),
        max_steps=1000,
        throw=False,
    )
    assert int(sol.result) == odejax.RESULTS.nonfinite
    assert int(sol.stats["num_steps"]) < 1000  # ended by the NaN, not by max_steps
    np.testing.assert_allclose(sol.ys[0, 0], np.exp(-0.25), rtol=1e-5)  # before the NaN
    assert np.isinf(float(sol.ys[1, 0]))  # never reached
    # The message says when: the last accepted step ended at or before t = 0.5.
    with pytest.raises(odejax.SolveError, match=r"non-finite.*after t=0\.[345]"):
        odejax.diffeqsolve(
            odejax.ODETerm(nan_after_half),
            odejax.Tsit5(),
            0.0,
            1.0,
            dt0,
            jnp.array([1.0]),
            stepsize_controller=controller,
            max_steps=1000,
        )


def test_nonfinite_only_in_the_error_estimate_counts_as_nonfinite():
    # y1 stays finite, the error estimate is NaN past t = 0.5: steps that cross 0.5 are
    # rejected however short. The solve must end naming the NaN, not as an underflow.
    sol = odejax.diffeqsolve(
        odejax.ODETerm(decay_vf),
        FaultyTsit5(t_nan_error=0.5),
        0.0,
        1.0,
        0.1,
        jnp.ones(1),
        1.0,
        stepsize_controller=pid(1e-6),
        saveat=odejax.SaveAt(t1=True),
        max_steps=None,
        throw=False,
    )
    assert _results(sol) == odejax.RESULTS.nonfinite
    assert 0.45 < float(sol.ts[-1]) <= 0.5


@pytest.mark.parametrize(
    "dtype, y0, t1", [(F32, 1.0, 100.0), (jnp.float64, 1e300, 20.0)], ids=["float32", "float64"]
)
def test_overflow_to_inf_is_never_accepted(dtype, y0, t1):
    # Heun's y1 overflows to inf while its scaled error err / (atol + rtol |y1|) is 0:
    # the controller would accept the step; the loop must not.
    sol = odejax.diffeqsolve(
        odejax.ODETerm(lambda t, y, args: y),
        odejax.Heun(),
        dtype(0.0),
        dtype(t1),
        dtype(0.1),
        jnp.full(1, y0, dtype),
        stepsize_controller=odejax.PIDController(rtol=1e-3, atol=1e-3),
        saveat=odejax.SaveAt(t1=True),
        max_steps=None,
        throw=False,
    )
    assert _results(sol) == odejax.RESULTS.nonfinite
    assert np.all(np.isfinite(np.asarray(sol.ys)))
    assert float(sol.ts[-1]) < t1


def test_nonfinite_at_dtmin_with_force_dtmin_ends():
    # force_dtmin=True accepts steps at dtmin only when they are finite; a NaN that
    # shrinking cannot remove must still end the solve (not retry dtmin forever).
    sol = odejax.diffeqsolve(
        odejax.ODETerm(nan_after_half),
        odejax.Tsit5(),
        0.0,
        1.0,
        0.1,
        jnp.array([1.0]),
        stepsize_controller=odejax.PIDController(rtol=1e-6, atol=1e-6, dtmin=1e-3),
        max_steps=None,
        throw=False,
    )
    assert _results(sol) == odejax.RESULTS.nonfinite


# ---- a solver that fails to complete a step (e.g. Newton not converging) --------------


def test_failed_solver_step_is_rejected_and_retried_shorter():
    sol = odejax.diffeqsolve(
        odejax.ODETerm(decay_vf),
        FaultyTsit5(h_fail=0.01),
        0.0,
        1.0,
        0.5,
        jnp.ones(1),
        1.0,
        stepsize_controller=pid(1e-8),
        max_steps=None,
        throw=False,
    )
    assert _results(sol) == SUCCESS
    assert int(sol.stats["num_rejected_steps"]) > 0
    np.testing.assert_allclose(sol.ys[-1, 0], np.exp(-1.0), rtol=1e-7)


@pytest.mark.parametrize(
    "controller, dt0", [(pid(1e-8), 0.1), (odejax.ConstantStepSize(), 0.1)], ids=["pid", "constant"]
)
def test_solver_failing_at_every_step_size_ends_with_solver_failed(controller, dt0):
    kw = dict(stepsize_controller=controller, max_steps=None)
    args = (odejax.ODETerm(decay_vf), FaultyTsit5(h_fail=1.0, t_stuck=0.5))
    args = args + (0.0, 1.0, dt0, jnp.ones(1), 1.0)
    sol = odejax.diffeqsolve(*args, throw=False, **kw)
    assert _results(sol) == odejax.RESULTS.solver_failed
    assert 0.5 <= float(sol.ts[-1]) < 0.7
    with pytest.raises(odejax.SolveError, match=r"solver failed to complete a step at t=0\.[56]"):
        odejax.diffeqsolve(*args, **kw)


# ---- dtmin -----------------------------------------------------------------------------


def stiff_vf(t, y, args):
    return -1e4 * (y - jnp.cos(t))


def test_dtmin_without_force_ends_naming_dtmin():
    # Tsit5 on a stiff problem needs dt ~ 3e-4 for stability, below dtmin = 1e-3.
    kw = dict(
        stepsize_controller=odejax.PIDController(
            rtol=1e-6, atol=1e-6, dtmin=1e-3, force_dtmin=False
        ),
        max_steps=None,
    )
    args = (odejax.ODETerm(stiff_vf), odejax.Tsit5(), 0.0, 1.0, 1e-4, jnp.ones(1))
    sol = odejax.diffeqsolve(*args, throw=False, **kw)
    assert _results(sol) == odejax.RESULTS.dt_min_reached
    with pytest.raises(odejax.SolveError, match=r"below dtmin at t=.*step \d+.*force_dtmin"):
        odejax.diffeqsolve(*args, **kw)


@pytest.mark.parametrize(
    "t0, t1, dtmin, dtype",
    [
        (0.0, 1.0, 0.3, jnp.float64),  # 1 / 0.3 is not a whole number
        (0.0, 0.3, 0.1, jnp.float64),  # 0.1 + 0.1 + 0.1 != 0.3 in floating point
        (0.1, 0.7, 0.2, F32),
        (0.0, 1.0, 1.0 / 3.0, F32),
    ],
    ids=["1/0.3", "0.3/0.1", "float32-0.6/0.2", "float32-1/(1/3)"],
)
def test_force_dtmin_steps_at_dtmin_and_finishes(t0, t1, dtmin, dtype):
    # rtol = 1e-12 wants far smaller steps than dtmin: every step is forced.
    sol = odejax.diffeqsolve(
        odejax.ODETerm(decay_vf),
        odejax.Tsit5(),
        dtype(t0),
        dtype(t1),
        dtype(dtmin),
        jnp.ones(1, dtype),
        jnp.asarray(1.0, dtype),
        stepsize_controller=odejax.PIDController(
            rtol=1e-12, atol=1e-12, dtmin=dtype(dtmin), force_dtmin=True
        ),
        saveat=odejax.SaveAt(steps=True),
        max_steps=16,
        throw=False,
    )
    assert _results(sol) == SUCCESS
    n = int(sol.stats["num_accepted_steps"])
    assert n == int(np.ceil(round((t1 - t0) / dtmin, 6)))
    assert sol.ts[n - 1] == dtype(t1)
    ts = np.asarray(sol.ts[:n], np.float64)
    # Every step but the last is dtmin; none is shorter than a few ULP.
    np.testing.assert_allclose(np.diff(np.concatenate([[t0], ts]))[:-1], dtmin, rtol=1e-5)
    assert np.all(np.diff(ts) > 0)


# ---- failures: throw and result codes -------------------------------------------------


def test_throw_on_max_steps():
    with pytest.raises(odejax.SolveError, match=r"max_steps=5.*t=") as info:
        odejax.diffeqsolve(
            odejax.ODETerm(decay_vf),
            odejax.Tsit5(),
            0.0,
            1.0,
            0.01,
            jnp.array([1.0]),
            1.0,
            max_steps=5,
        )
    assert info.value.result == odejax.RESULTS.max_steps_reached


def test_no_throw_returns_result_and_inf_for_unreached():
    ts = jnp.array([0.01, 0.03, 0.5, 0.9])
    sol = odejax.diffeqsolve(
        odejax.ODETerm(decay_vf),
        odejax.Tsit5(),
        0.0,
        1.0,
        0.01,
        jnp.array([1.0]),
        1.0,
        max_steps=5,
        throw=False,
        saveat=odejax.SaveAt(ts=ts),
    )
    assert int(sol.result) == odejax.RESULTS.max_steps_reached
    assert not bool(odejax.is_successful(sol.result))
    assert int(sol.stats["num_steps"]) == 5
    # The 5 steps of 0.01 reach t = 0.05: the first two times are saved, the rest inf.
    np.testing.assert_allclose(sol.ys[:2, 0], np.exp(-np.array([0.01, 0.03])), rtol=1e-10)
    np.testing.assert_array_equal(sol.ts[:2], [0.01, 0.03])
    assert np.all(np.isinf(np.asarray(sol.ys[2:])))
    assert np.all(np.isinf(np.asarray(sol.ts[2:])))


@jax.jit
def _succeeded(t1):
    sol = odejax.diffeqsolve(
        odejax.ODETerm(decay_vf),
        odejax.Tsit5(),
        0.0,
        t1,
        0.01,
        jnp.array([1.0]),
        1.0,
        max_steps=10,
        throw=False,
    )
    return odejax.is_successful(sol.result), sol.result


def test_is_successful_traced_under_jit_and_vmap():
    ok, result = _succeeded(0.05)
    assert bool(ok) and int(result) == odejax.RESULTS.successful
    ok, result = _succeeded(1.0)
    assert not bool(ok) and int(result) == odejax.RESULTS.max_steps_reached
    ok, result = jax.vmap(_succeeded)(jnp.array([0.05, 1.0, 0.09]))
    np.testing.assert_array_equal(ok, [True, False, True])
    np.testing.assert_array_equal(
        result,
        [odejax.RESULTS.successful, odejax.RESULTS.max_steps_reached, odejax.RESULTS.successful],
    )


# ---- bad inputs: raised in Python, before the loop is traced -------------------------


class CountingField:
    """A vector field that counts how often it is traced or called."""

    def __init__(self, out=lambda y: -y):
        self.calls = 0
        self.out = out

    def __call__(self, t, y, args):
        self.calls += 1
        return self.out(y)


def _solve(f, **kw):
    base = dict(
        solver=odejax.Tsit5(),
        t0=0.0,
        t1=1.0,
        dt0=0.1,
        y0=jnp.array([1.0]),
        saveat=odejax.SaveAt(t1=True),
        stepsize_controller=odejax.ConstantStepSize(),
    )
    base.update(kw)
    return odejax.diffeqsolve(
        odejax.ODETerm(f),
        base.pop("solver"),
        base.pop("t0"),
        base.pop("t1"),
        base.pop("dt0"),
        base.pop("y0"),
        **base,
    )


ADAPTIVE = odejax.PIDController(rtol=1e-6, atol=1e-6)

# (id, keyword overrides of `_solve`, regex that the message must match)
BAD_INPUTS = [
    ("dt0-wrong-sign", dict(dt0=-0.1), r"`dt0`.*wrong sign"),
    ("dt0-wrong-sign-backward", dict(t0=1.0, t1=0.0, dt0=0.1), r"`dt0`.*wrong sign"),
    ("dt0-zero", dict(dt0=0.0), r"`dt0`"),
    (
        "saveat-ts-unsorted",
        dict(saveat=odejax.SaveAt(ts=jnp.array([0.5, 0.2]))),
        r"saveat\.ts.*sorted",
    ),
    (
        "saveat-ts-increasing-backward",
        dict(t0=1.0, t1=0.0, dt0=-0.1, saveat=odejax.SaveAt(ts=jnp.array([0.2, 0.5]))),
        r"saveat\.ts.*sorted",
    ),
    (
        "saveat-ts-after-t1",
        dict(saveat=odejax.SaveAt(ts=jnp.array([0.5, 1.2]))),
        r"saveat\.ts.*within",
    ),
    (
        "saveat-ts-before-t0",
        dict(saveat=odejax.SaveAt(ts=jnp.array([-0.1, 0.5]))),
        r"saveat\.ts.*within",
    ),
    (
        "euler-adaptive",
        dict(solver=odejax.Euler(), stepsize_controller=ADAPTIVE),
        r"Euler.*error estimate",
    ),
    (
        "euler-clipped-adaptive",
        dict(
            solver=odejax.Euler(),
            stepsize_controller=odejax.ClipStepSizeController(ADAPTIVE, jump_ts=jnp.array([0.5])),
        ),
        r"Euler.*error estimate",
    ),
    ("max-steps-0", dict(max_steps=0), r"`max_steps`"),
    ("max-steps-negative", dict(max_steps=-1), r"`max_steps`"),
    ("max-steps-float", dict(max_steps=2.5), r"`max_steps`"),
    ("max-steps-bool", dict(max_steps=True), r"`max_steps`"),
    ("integer-y0", dict(y0=jnp.array([1])), r"`y0`.*int"),
    ("constant-no-dt0", dict(dt0=None), r"`dt0`.*ConstantStepSize"),
    (
        "stepto-with-dt0",
        dict(stepsize_controller=odejax.StepTo(jnp.linspace(0.0, 1.0, 5))),
        r"`dt0`.*StepTo",
    ),
    (
        "stepto-bad-start",
        dict(dt0=None, stepsize_controller=odejax.StepTo(jnp.linspace(0.1, 1.0, 5))),
        r"StepTo.*t0",
    ),
    (
        "stepto-bad-end",
        dict(dt0=None, stepsize_controller=odejax.StepTo(jnp.linspace(0.0, 0.9, 5))),
        r"StepTo.*t1",
    ),
    (
        "stepto-unsorted",
        dict(dt0=None, stepsize_controller=odejax.StepTo(jnp.array([0.0, 0.6, 0.4, 1.0]))),
        r"StepTo.*monotonic",
    ),
    (
        "max-steps-none-with-steps",
        dict(max_steps=None, saveat=odejax.SaveAt(steps=True)),
        r"max_steps",
    ),
    (
        "max-steps-none-with-dense",
        dict(max_steps=None, saveat=odejax.SaveAt(dense=True)),
        r"max_steps",
    ),
    ("event", dict(event=object()), r"`event`"),
    ("t1-inf", dict(t1=float("inf")), r"`t1` must be finite"),
    ("t0-nan", dict(t0=float("nan")), r"`t0` must be finite"),
    ("dt0-nan", dict(dt0=float("nan")), r"`dt0` must be finite"),
    ("y0-nan", dict(y0=jnp.array([1.0, jnp.nan])), r"`y0` contains NaN"),
    (
        "args-unhashable",
        dict(args={"k": {1, 2}}),
        r"`args\['k'\]`.*set.*neither an array nor hashable",
    ),
    ("args-string-array", dict(args=np.array(["a", "b"])), r"`args`.*NumPy array of dtype <U1"),
]


@pytest.mark.parametrize(
    "kw, match", [(k, m) for _, k, m in BAD_INPUTS], ids=[i for i, _, _ in BAD_INPUTS]
)
def test_bad_input_raises_before_tracing(kw, match):
    f = CountingField()
    with pytest.raises((ValueError, TypeError, NotImplementedError), match=match):
        _solve(f, **kw)
    assert f.calls == 0  # caught in Python: the vector field was never traced


# Vector fields whose output does not match y0: caught by one abstract evaluation
# (jax.eval_shape), before the loop is traced.
BAD_FIELDS = {
    "structure": (lambda y: (y,), r"vector field.*structure"),
    "shape": (lambda y: jnp.concatenate([y, y]), r"vector field.*shape \(2,\)"),
    "dtype": (lambda y: y.astype(jnp.float32), r"vector field.*dtype float32"),
    "complex-for-real": (lambda y: y.astype(jnp.complex128), r"vector field.*dtype complex128"),
}


@pytest.mark.parametrize("out, match", BAD_FIELDS.values(), ids=BAD_FIELDS.keys())
def test_bad_vector_field_output_raises(out, match):
    f = CountingField(out)
    with pytest.raises(ValueError, match=match):
        _solve(f)
    assert f.calls == 1  # the shape check only


def test_bad_vector_field_output_in_pytree_names_the_leaf():
    f = CountingField(lambda y: {"a": y["a"], "b": y["b"][:1]})
    with pytest.raises(ValueError, match=r"\['b'\]"):
        _solve(f, y0={"a": jnp.ones(2), "b": jnp.ones(3)})


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: odejax.SaveAt(), r"SaveAt saves nothing"),
        (lambda: odejax.SubSaveAt(), r"SubSaveAt saves nothing"),
        (lambda: odejax.SaveAt(ts=jnp.ones((2, 2))), r"`ts`.*one-dimensional"),
        (lambda: odejax.SaveAt(t1=True, subs=[odejax.SubSaveAt(t1=True)]), r"`subs`"),
        (lambda: odejax.PIDController(rtol=-1e-6, atol=1e-6), r"`rtol`"),
        (lambda: odejax.PIDController(rtol=1e-6, atol=-1e-6), r"`atol`"),
        (lambda: odejax.StepTo(jnp.array([0.0])), r"StepTo.*`ts`"),
    ],
    ids=[
        "saveat-empty",
        "subsaveat-empty",
        "saveat-ts-2d",
        "saveat-subs-and-flags",
        "pid-negative-rtol",
        "pid-negative-atol",
        "stepto-one-time",
    ],
)
def test_bad_construction_raises(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize(
    "which, match",
    [
        ("terms", r"`terms`"),
        ("solver", r"`solver`"),
        ("saveat", r"`saveat`"),
        ("stepsize_controller", r"`stepsize_controller`"),
        ("adjoint", r"`adjoint`"),
    ],
    ids=["terms", "solver", "saveat", "controller", "adjoint"],
)
def test_wrong_type_of_argument_raises(which, match):
    args = dict(terms=odejax.ODETerm(decay_vf), solver=odejax.Tsit5())
    kw = {}
    if which in args:
        args[which] = lambda t, y, a: -y
    else:
        kw[which] = object()
    with pytest.raises(TypeError, match=match):
        odejax.diffeqsolve(
            args["terms"], args["solver"], 0.0, 1.0, 0.1, jnp.array([1.0]), 1.0, **kw
        )


def test_static_python_values_in_args_are_allowed():
    # Hashable non-array leaves (a string choosing a variant) are static under jit.
    def f(t, y, args):
        return -args["k"] * y if args["sign"] == "minus" else args["k"] * y

    for sign, expected in [("minus", np.exp(-0.5)), ("plus", np.exp(0.5))]:
        sol = odejax.diffeqsolve(
            odejax.ODETerm(f),
            odejax.Tsit5(),
            0.0,
            1.0,
            0.01,
            jnp.ones(1),
            {"sign": sign, "k": jnp.asarray(0.5)},
        )
        np.testing.assert_allclose(sol.ys[-1, 0], expected, rtol=1e-10)


# ---- throw=True under jit -----------------------------------------------------------------


def _enough_steps(y0):
    return odejax.diffeqsolve(
        odejax.ODETerm(decay_vf), odejax.Tsit5(), 0.0, 1.0, 0.01, y0, 1.0, max_steps=200
    ).ys


def _too_few_steps(y0):
    return odejax.diffeqsolve(
        odejax.ODETerm(decay_vf), odejax.Tsit5(), 0.0, 1.0, 0.01, y0, 1.0, max_steps=5
    ).ys


@pytest.mark.parametrize("batched", [False, True], ids=["jit", "jit-vmap"])
def test_throw_under_jit_says_what_where_and_what_to_try_first(batched, capfd):
    fn = jax.jit(jax.vmap(_too_few_steps) if batched else _too_few_steps)
    with pytest.raises(Exception) as info:
        jax.block_until_ready(fn(jnp.ones((3, 1) if batched else (1,))))
    where = " (batch element 0)" if batched else ""
    message = f"diffeqsolve failed{where}: max_steps=5 reached at t=0.05 of [0, 1]; increase"
    # The exception that reaches the user carries odejax's SolveError and its message...
    assert "SolveError: " + message in str(info.value)
    # ...and the first thing written is that message, on a line of its own.
    first = capfd.readouterr().err.lstrip().splitlines()[0]
    assert first.startswith("odejax.SolveError: " + message)


@pytest.mark.parametrize(
    "adjoint, mode",
    [
        (odejax.RecursiveCheckpointAdjoint(), "grad"),
        (odejax.DirectAdjoint(), "grad"),
        (odejax.DirectAdjoint(), "jvp"),
        (odejax.ForwardMode(), "jvp"),
    ],
    ids=["rca-grad", "direct-grad", "direct-jvp", "forward-jvp"],
)
def test_throw_under_autodiff_raises_instead_of_returning_a_derivative(adjoint, mode):
    # Under jit(grad(loss)) the solution's values are not outputs: the check must still
    # run, since a gradient of a failed solve is a silent wrong answer.
    def loss(y0):
        return odejax.diffeqsolve(
            odejax.ODETerm(decay_vf),
            odejax.Tsit5(),
            0.0,
            1.0,
            0.01,
            y0,
            1.0,
            max_steps=5,
            adjoint=adjoint,
        ).ys.sum()

    if mode == "grad":
        derivative = jax.jit(jax.grad(loss))
    else:
        derivative = jax.jit(lambda y: jax.jvp(loss, (y,), (y,))[1])
    with pytest.raises(Exception, match=r"SolveError: diffeqsolve failed: max_steps=5"):
        jax.block_until_ready(derivative(jnp.ones(1)))


def test_successful_solve_under_jit_never_calls_the_host(monkeypatch):
    from odejax import _solve

    calls = []
    monkeypatch.setattr(_solve, "_check_result", lambda *a, **k: calls.append(a))
    jax.block_until_ready(jax.jit(jax.vmap(_enough_steps))(jnp.ones((3, 1))))
    assert calls == []


# ---- throw=False: per-element results, unreached outputs inf ----------------------------


def _blowup_vf(t, y, args):
    # y' = a y^2 blows up at t = 1 / (a y0): beyond t1 = 1 for a < 1, before it for a > 1.
    return args * y**2


def _batch_solve(a, y0, max_steps=4096):
    return odejax.diffeqsolve(
        odejax.ODETerm(_blowup_vf),
        odejax.Tsit5(),
        0.0,
        1.0,
        None,
        y0,
        a,
        stepsize_controller=odejax.PIDController(rtol=1e-8, atol=1e-8),
        saveat=odejax.SaveAt(
            subs=[
                odejax.SubSaveAt(ts=jnp.array([0.25, 0.5, 0.75, 1.0])),
                odejax.SubSaveAt(steps=True),
            ]
        ),
        max_steps=max_steps,
        throw=False,
    )


_batch_solve_jit = jax.jit(_batch_solve, static_argnums=2)
_batch_solve_vmap = jax.jit(jax.vmap(_batch_solve, in_axes=(0, 0, None)), static_argnums=2)


def test_no_throw_under_vmap_gives_each_element_its_result():
    # a = 0.5: fine; a = 1.6: blows up at t = 0.625 (dt underflow); the third has
    # too few steps for the tolerance (max_steps).
    a = jnp.array([0.5, 1.6, 0.9])
    y0 = jnp.ones((3, 1))
    sols = [_batch_solve_vmap(a, y0, 4096), _batch_solve_vmap(a, y0, 12)]
    res = np.asarray(sols[0].result)
    assert res[0] == SUCCESS and res[2] == SUCCESS
    assert res[1] == odejax.RESULTS.dt_underflow
    assert np.asarray(sols[1].result)[2] == odejax.RESULTS.max_steps_reached
    np.testing.assert_array_equal(
        np.asarray(odejax.is_successful(sols[0].result)), [True, False, True]
    )
    (ts, steps_ts), (ys, steps_ys) = sols[0].ts, sols[0].ys
    # The element that failed at t ~ 0.625: correct values where it got to (t = 0.25,
    # 0.5; exact y = 1 / (1 - a t)), inf where it did not.
    np.testing.assert_allclose(ys[1, :2, 0], 1 / (1 - 1.6 * np.array([0.25, 0.5])), rtol=1e-6)
    assert np.all(np.isinf(np.asarray(ys[1, 2:])))
    assert np.all(np.isinf(np.asarray(ts[1, 2:])))
    # Steps saved past its last accepted step are inf too, in every element.
    for k in range(3):
        n = int(sols[0].stats["num_accepted_steps"][k])
        assert np.all(np.isfinite(np.asarray(steps_ts[k, :n])))
        assert np.all(np.isinf(np.asarray(steps_ts[k, n:])))
        assert np.all(np.isinf(np.asarray(steps_ys[k, n:])))
    # The successful elements are right.
    np.testing.assert_allclose(
        ys[0, :, 0], 1 / (1 - 0.5 * np.array([0.25, 0.5, 0.75, 1.0])), rtol=1e-6
    )
    np.testing.assert_allclose(
        ys[2, :, 0], 1 / (1 - 0.9 * np.array([0.25, 0.5, 0.75, 1.0])), rtol=1e-6
    )


# ---- vmap: the same steps per element as alone -------------------------------------------


def test_vmap_takes_the_same_steps_as_each_element_alone():
    a = jnp.array([0.3, 0.9, 1.6, 0.05])
    y0 = jnp.array([[1.0], [0.8], [1.0], [3.0]])
    batched = _batch_solve_vmap(a, y0, 256)
    for k in range(a.shape[0]):
        alone = _batch_solve_jit(a[k], y0[k], 256)
        assert int(batched.result[k]) == int(alone.result)
        for key in ("num_steps", "num_accepted_steps", "num_rejected_steps", "num_fevals"):
            assert int(batched.stats[key][k]) == int(alone.stats[key]), key
        # Same step times and values (to rounding: batched arithmetic may fuse
        # differently), and inf in the same places.
        for b, a1 in zip(
            jax.tree.leaves((batched.ts, batched.ys)), jax.tree.leaves((alone.ts, alone.ys))
        ):
            np.testing.assert_allclose(b[k], a1, rtol=1e-12)


# ---- scale ------------------------------------------------------------------------------


def test_100k_dimensional_linear_ode():
    # y' = c (y[n-1] - 2 y[n] + y[n+1]) (periodic), N = 100,000: Fourier modes are
    # eigenvectors; mode k decays at 4 c sin^2(pi k / N).
    n, c = 100_000, 0.5
    x = np.arange(n)
    y0 = np.cos(2 * np.pi * (n // 4) * x / n) + 0.5 * np.cos(np.pi * x)

    def laplacian(t, y, args):
        return c * (jnp.roll(y, 1) - 2 * y + jnp.roll(y, -1))

    sol = odejax.diffeqsolve(
        odejax.ODETerm(laplacian),
        odejax.Tsit5(),
        0.0,
        1.0,
        None,
        jnp.asarray(y0),
        stepsize_controller=pid(1e-8),
    )
    decay_quarter, decay_half = np.exp(-4 * c * 0.5), np.exp(-4 * c * 1.0)
    exact = (
        np.cos(2 * np.pi * (n // 4) * x / n) * decay_quarter + 0.5 * np.cos(np.pi * x) * decay_half
    )
    np.testing.assert_allclose(sol.ys[-1], exact, atol=1e-7)


def test_vmap_over_10k_initial_conditions():
    a = np.array([[-0.3, 2.0], [-2.0, -0.3]])
    y0 = np.random.default_rng(1).standard_normal((10_000, 2))
    solve = jax.jit(
        jax.vmap(
            lambda y: odejax.diffeqsolve(
                odejax.ODETerm(lambda t, y, args: jnp.asarray(a) @ y),
                odejax.Tsit5(),
                0.0,
                2.0,
                None,
                y,
                stepsize_controller=pid(1e-8),
            ).ys[-1]
        )
    )
    import scipy.linalg

    exact = y0 @ scipy.linalg.expm(2.0 * a).T
    np.testing.assert_allclose(solve(jnp.asarray(y0)), exact, atol=1e-6)


def _long_solve(max_steps):
    def run(y0):
        return odejax.diffeqsolve(
            odejax.ODETerm(decay_vf),
            odejax.Euler(),
            0.0,
            1.0,
            2e-6,
            y0,
            1.0,
            saveat=odejax.SaveAt(t1=True),
            max_steps=max_steps,
            throw=False,
        )

    return jax.jit(run)


def test_500k_step_solve_memory_independent_of_step_count():
    sol = _long_solve(None)(jnp.ones(1))
    assert _results(sol) == SUCCESS
    assert int(sol.stats["num_steps"]) >= 500_000
    # Euler's global error at dt = 2e-6 is about dt/2 e^-1.
    np.testing.assert_allclose(sol.ys[-1, 0], np.exp(-1.0), rtol=2e-6)

    def memory(max_steps):
        compiled = _long_solve(max_steps).lower(jnp.ones(1)).compile()
        m = compiled.memory_analysis()
        return m.temp_size_in_bytes, m.output_size_in_bytes

    # The compiled solve's working memory and outputs do not grow with the number of
    # steps it may take (max_steps sizes only SaveAt(steps=True)/dense buffers).
    (small_temp, small_out), (large_temp, large_out) = memory(1000), memory(1_000_000)
    assert (large_temp, large_out) == (small_temp, small_out)
    assert large_temp < 10_000 and large_out < 10_000
