"""Regression tests for bugs found in review of the core loop (each failed before its fix)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import odejax
from helpers import decay_vf


def _osc(t, y, w):
    return jnp.stack([y[1], -(w**2) * y[0]])


def test_last_step_is_never_rejected_forever_float32():
    # float32 times near 1000: the snapping tolerance used to be wider than the retried
    # steps, so a rejected last step was snapped back onto t1 and retried forever.
    f32 = jnp.float32
    sol = odejax.diffeqsolve(
        odejax.ODETerm(_osc),
        odejax.Tsit5(),
        f32(990.0),
        f32(1000.0),
        None,
        jnp.array([1.0, 0.0], f32),
        f32(100.0),
        max_steps=10_000,
        throw=False,
        stepsize_controller=odejax.PIDController(rtol=1e-5, atol=1e-5),
    )
    assert int(sol.result) == odejax.RESULTS.successful
    assert sol.ts[-1] == f32(1000.0)


def test_initial_step_not_below_time_resolution():
    # t0 = 1e9 in float64: Hairer's estimate used to give a zero-length first step.
    sol = odejax.diffeqsolve(
        odejax.ODETerm(_osc),
        odejax.Tsit5(),
        1.0e9,
        1.0e9 + 0.01,
        None,
        jnp.array([1.0, 0.0]),
        jnp.asarray(2e4),
        max_steps=20_000,
        throw=False,
        stepsize_controller=odejax.PIDController(rtol=1e-6, atol=1e-6),
    )
    assert int(sol.result) == odejax.RESULTS.successful


@pytest.mark.parametrize(
    "adjoint", [odejax.RecursiveCheckpointAdjoint(), odejax.DirectAdjoint()], ids=["rca", "direct"]
)
def test_gradient_wrt_closed_over_value(adjoint):
    def loss(k):
        f = lambda t, y, args: -k * y  # noqa: E731 - closes over the traced k
        return odejax.diffeqsolve(
            odejax.ODETerm(f), odejax.Tsit5(), 0.0, 1.0, 0.01, jnp.array([1.0]), adjoint=adjoint
        ).ys[0, 0]

    np.testing.assert_allclose(jax.grad(loss)(1.0), -np.exp(-1.0), rtol=1e-8)


def test_float32_linspace_ts_accepted():
    # float32 ts from linspace(0.1, 0.3) stray past 0.3 by rounding; with Python-float
    # (here float64) times they used to be rejected as outside [t0, t1].
    ts = jnp.linspace(jnp.float32(0.1), jnp.float32(0.3), 5)
    sol = odejax.diffeqsolve(
        odejax.ODETerm(lambda t, y, a: -y),
        odejax.Tsit5(),
        0.1,
        0.3,
        0.01,
        jnp.array([1.0]),
        saveat=odejax.SaveAt(ts=ts),
    )
    assert float(sol.ts[-1]) == 0.3  # clipped into [t0, t1]
    np.testing.assert_allclose(sol.ys[:, 0], np.exp(-(np.asarray(ts, float) - 0.1)), rtol=1e-6)


@pytest.mark.parametrize("adaptive", [False, True], ids=["constant", "pid"])
def test_gradient_through_jump_ts(adaptive):
    inner = odejax.PIDController(rtol=1e-10, atol=1e-10) if adaptive else odejax.ConstantStepSize()
    ctrl = odejax.ClipStepSizeController(inner, jump_ts=jnp.array([1.0]))
    f = lambda t, y, a: jnp.where(t < 1.0, -a * y, jnp.ones_like(y))  # noqa: E731

    def loss(a):
        return odejax.diffeqsolve(
            odejax.ODETerm(f),
            odejax.Tsit5(),
            0.0,
            2.0,
            0.1,
            jnp.array([1.0]),
            a,
            stepsize_controller=ctrl,
        ).ys[0, 0]

    # y(2) = exp(-a) + 1, so dy(2)/da = -exp(-a).
    np.testing.assert_allclose(jax.grad(loss)(1.0), -np.exp(-1.0), rtol=1e-6)


def test_made_jump_true_restarts_fsal_when_continuing():
    f = lambda t, y, a: -y  # noqa: E731
    s1 = odejax.diffeqsolve(odejax.ODETerm(f), odejax.Tsit5(), 0.0, 1.0, 0.1, jnp.array([1.0]))
    ynew = s1.ys[-1] + 1.0  # the state changes between the solves: the cached f is stale
    s2 = odejax.diffeqsolve(
        odejax.ODETerm(f),
        odejax.Tsit5(),
        1.0,
        2.0,
        0.1,
        ynew,
        solver_state=s1.solver_state,
        controller_state=s1.controller_state,
        made_jump=True,
    )
    np.testing.assert_allclose(s2.ys[0, 0], ynew[0] * np.exp(-1.0), rtol=1e-7)


def test_continuing_with_controller_state():
    g = lambda t, y, a: jnp.where(t < 1.5, -y, jnp.ones_like(y))  # noqa: E731
    exact = np.exp(-1.5) + 0.5
    clip = odejax.ClipStepSizeController(odejax.ConstantStepSize(), jump_ts=jnp.array([1.5]))
    s1 = odejax.diffeqsolve(
        odejax.ODETerm(g), odejax.Tsit5(), 0.0, 1.0, 0.1, jnp.array([1.0]), stepsize_controller=clip
    )
    s2 = odejax.diffeqsolve(
        odejax.ODETerm(g),
        odejax.Tsit5(),
        1.0,
        2.0,
        0.6,
        s1.ys[-1],
        stepsize_controller=clip,
        solver_state=s1.solver_state,
        controller_state=s1.controller_state,
        made_jump=s1.made_jump,
    )
    assert abs(float(s2.ys[0, 0]) - exact) < 1e-5  # the first step stops at the jump
    pid = odejax.PIDController(rtol=1e-8, atol=1e-8)
    s1 = odejax.diffeqsolve(
        odejax.ODETerm(g), odejax.Tsit5(), 0.0, 1.0, None, jnp.array([1.0]), stepsize_controller=pid
    )
    s2 = odejax.diffeqsolve(  # dt0=None with a given controller_state used to crash
        odejax.ODETerm(g),
        odejax.Tsit5(),
        1.0,
        1.4,
        None,
        s1.ys[-1],
        stepsize_controller=pid,
        controller_state=s1.controller_state,
    )
    np.testing.assert_allclose(s2.ys[0, 0], np.exp(-1.4), rtol=1e-7)


def test_dense_only_saveat_with_loop_buffers():
    f = lambda t, y, a: -a * y  # noqa: E731

    def run(a, adjoint):
        return odejax.diffeqsolve(
            odejax.ODETerm(f),
            odejax.Tsit5(),
            0.0,
            1.0,
            0.1,
            jnp.array(1.0),
            a,
            saveat=odejax.SaveAt(dense=True),
            adjoint=adjoint,
            max_steps=16,
        ).evaluate(0.5)

    np.testing.assert_allclose(run(2.0, odejax.DirectAdjoint()), np.exp(-1.0), rtol=1e-5)
    g = jax.grad(run)(2.0, odejax.RecursiveCheckpointAdjoint())
    np.testing.assert_allclose(g, -0.5 * np.exp(-1.0), rtol=1e-4)


def test_throw_under_jit_without_saved_outputs():
    def run():
        return odejax.diffeqsolve(
            odejax.ODETerm(lambda t, y, a: -y),
            odejax.Tsit5(),
            0.0,
            1.0,
            0.01,
            jnp.array([1.0]),
            saveat=odejax.SaveAt(dense=True),
            max_steps=5,
        )

    with pytest.raises(Exception, match="max_steps"):
        jax.block_until_ready(jax.jit(run)().result)


def test_empty_interval_saves_y0_at_ts():
    sol = odejax.diffeqsolve(
        odejax.ODETerm(lambda t, y, a: -y),
        odejax.Tsit5(),
        0.5,
        0.5,
        0.1,
        jnp.array([1.0]),
        saveat=odejax.SaveAt(t0=True, ts=jnp.array([0.5]), t1=True),
    )
    np.testing.assert_array_equal(sol.ts, [0.5, 0.5, 0.5])
    np.testing.assert_array_equal(sol.ys[:, 0], [1.0, 1.0, 1.0])


def test_dtmin_failure_not_reported_for_a_finished_solve():
    sol = odejax.diffeqsolve(
        odejax.ODETerm(lambda t, y, a: -y),
        odejax.Tsit5(),
        0.0,
        0.6001,
        0.3,
        jnp.array([1.0]),
        throw=False,
        stepsize_controller=odejax.PIDController(
            rtol=1e-3, atol=1e-3, dtmin=0.01, dtmax=0.3, force_dtmin=False
        ),
    )
    assert int(sol.result) == odejax.RESULTS.successful


@pytest.mark.parametrize("backward", [False, True], ids=["forward", "backward"])
def test_dense_left_and_right_limits_at_a_jump(backward):
    # f jumps at t = 1: dy/dt = -y before, +2 after. Steps meet the jump one ULP either
    # side of it; `left` must pick the side in user time, in either direction.
    g = lambda t, y, a: jnp.where(t < 1.0, -y, 2.0 * jnp.ones_like(y))  # noqa: E731
    ctrl = odejax.ClipStepSizeController(odejax.ConstantStepSize(), jump_ts=jnp.array([1.0]))
    t0, t1, dt0 = (2.0, 0.0, -0.07) if backward else (0.0, 2.0, 0.07)
    sol = odejax.diffeqsolve(
        odejax.ODETerm(g),
        odejax.Tsit5(),
        t0,
        t1,
        dt0,
        jnp.array([1.0]),
        saveat=odejax.SaveAt(dense=True),
        stepsize_controller=ctrl,
    )
    y_jump = sol.evaluate(1.0)[0]
    np.testing.assert_allclose(sol.derivative(1.0, left=True)[0], -y_jump, rtol=1e-6)
    np.testing.assert_allclose(sol.derivative(1.0, left=False)[0], 2.0, rtol=1e-6)


def test_gradient_holds_the_adaptive_steps_fixed():
    # Step sizes are not differentiated through (as in diffrax/torchdiffeq): before,
    # the derivative through the controller's choice of steps dwarfed the derivative
    # of the solution and made neural-ODE training fail. The gradient of an adaptive
    # solve must equal that of the same solve stepping to the same times (StepTo).
    w = jnp.array([[-0.5, 2.0], [-1.5, -0.2]])
    y0 = jnp.array([1.0, -0.5])

    def vf(t, y, w):
        return jnp.tanh(w @ y) * (1.0 + 0.5 * jnp.sin(3.0 * t))

    def solve(w, controller, saveat):
        return odejax.diffeqsolve(
            odejax.ODETerm(vf),
            odejax.Tsit5(),
            0.0,
            3.0,
            None,
            y0,
            w,
            stepsize_controller=controller,
            saveat=saveat,
            max_steps=256,
        )

    adaptive = odejax.PIDController(rtol=1e-4, atol=1e-6)
    sol = solve(w, adaptive, odejax.SaveAt(steps=True))
    assert int(sol.stats["num_rejected_steps"]) > 0  # rejections shape the steps too
    n = int(sol.stats["num_accepted_steps"])
    steps = odejax.StepTo(jnp.concatenate([jnp.zeros(1), sol.ts[:n]]))

    def loss(w, controller, dt0):
        return jnp.sum(solve(w, controller, odejax.SaveAt(t1=True)).ys[-1] ** 2)

    g_adaptive = jax.grad(loss)(w, adaptive, None)
    g_fixed = jax.grad(loss)(w, steps, None)
    np.testing.assert_allclose(g_adaptive, g_fixed, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_constant_steps_of_span_over_n_take_exactly_n_steps(dtype):
    # Step ends used to be accumulated (t + dt, N times): the rounding error left a
    # sliver of a step before t1, so max_steps=N raised "max_steps reached at t=10".
    # They are now t0 + k dt.
    for t0, t1, n in [(0.0, 10.0, 1000), (0.0, 1.0, 3), (2.5, 7.3, 777), (-1.0, 1e3, 10007)]:
        sol = odejax.diffeqsolve(
            odejax.ODETerm(decay_vf),
            odejax.Euler(),
            jnp.asarray(t0, dtype),
            jnp.asarray(t1, dtype),
            jnp.asarray((t1 - t0) / n, dtype),
            jnp.ones(1, dtype),
            jnp.asarray(0.1, dtype),
            max_steps=n,
        )
        assert int(sol.stats["num_steps"]) == n, (t0, t1, n)
        assert float(sol.ts[-1]) == float(jnp.asarray(t1, dtype))
