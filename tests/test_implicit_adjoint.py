"""`ImplicitAdjoint`: the gradient of a steady state by the implicit function theorem
agrees with the closed form and with backpropagation through the steps; misuse
raises; a solve that never reached its steady state gives NaN, not a wrong number."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import odejax


def linear(t, y, args):
    a, k = args
    return a - k * y  # steady state a / k


def cubic(t, y, args):
    a, k = args
    return a - k * y * (1 + 0.1 * y**2)


def _steady(args, y0, adjoint, vf=linear, t1=1e4, throw=True):
    sol = odejax.diffeqsolve(
        odejax.ODETerm(vf),
        odejax.Tsit5(),
        0.0,
        t1,
        0.1,
        y0,
        args,
        stepsize_controller=odejax.PIDController(rtol=1e-10, atol=1e-10),
        event=odejax.Event(odejax.steady_state_event()),
        adjoint=adjoint,
        max_steps=2048,
        throw=throw,
    )
    return jnp.sum(sol.ys[-1] ** 2), sol


A = jnp.array([1.0, 2.0])
K = jnp.asarray(1.5)
Y0 = jnp.zeros(2)


@functools.cache
def _grad(adjoint, vf):
    return jax.jit(jax.grad(lambda args, y0: _steady(args, y0, adjoint, vf)[0], argnums=(0, 1)))


def test_linear_steady_state_gradient_matches_closed_form():
    (g_a, g_k), g_y0 = _grad(odejax.ImplicitAdjoint(), linear)((A, K), Y0)
    # loss = sum (a / k)^2: d/da = 2 a / k^2, d/dk = -2 sum a^2 / k^3.
    np.testing.assert_allclose(g_a, 2 * A / K**2, rtol=1e-8)
    np.testing.assert_allclose(g_k, -2 * jnp.sum(A**2) / K**3, rtol=1e-8)
    # The steady state does not depend on where the solve started.
    np.testing.assert_array_equal(g_y0, jnp.zeros(2))


def test_nonlinear_steady_state_gradient_matches_backpropagation():
    implicit = _grad(odejax.ImplicitAdjoint(), cubic)((A, K), Y0)[0]
    discrete = _grad(odejax.RecursiveCheckpointAdjoint(), cubic)((A, K), Y0)[0]
    # Backpropagating through the steps converges to the same derivative as the
    # solve converges to the steady state (here to the steady-state tolerance).
    for i, d in zip(implicit, discrete):
        np.testing.assert_allclose(i, d, rtol=1e-6)


def test_vmap_of_grad():
    ks = jnp.array([0.5, 1.0, 2.0])
    g = jax.grad(lambda k: _steady((A, k), Y0, odejax.ImplicitAdjoint())[0])
    np.testing.assert_allclose(jax.vmap(g)(ks), -2 * jnp.sum(A**2) / ks**3, rtol=1e-8)


def test_unreached_steady_state_gives_nan_not_a_wrong_gradient():
    g = jax.grad(lambda k: _steady((A, k), Y0, odejax.ImplicitAdjoint(), t1=0.5, throw=False)[0])
    assert np.isnan(g(K))


def test_misuse_raises():
    imp = odejax.ImplicitAdjoint()

    def no_event(k):
        sol = odejax.diffeqsolve(
            odejax.ODETerm(linear), odejax.Tsit5(), 0.0, 1.0, 0.1, Y0, (A, k), adjoint=imp
        )
        return jnp.sum(sol.ys)

    with pytest.raises(ValueError, match="steady_state_event"):
        jax.grad(no_event)(K)

    def saved_ts(k):
        sol = odejax.diffeqsolve(
            odejax.ODETerm(linear),
            odejax.Tsit5(),
            0.0,
            1.0,
            0.1,
            Y0,
            (A, k),
            saveat=odejax.SaveAt(ts=jnp.array([0.5, 1.0])),
            stepsize_controller=odejax.PIDController(rtol=1e-6, atol=1e-6),
            event=odejax.Event(odejax.steady_state_event()),
            adjoint=imp,
        )
        return jnp.sum(sol.ys)

    with pytest.raises(NotImplementedError, match=r"SaveAt\(t1=True\) only"):
        jax.grad(saved_ts)(K)


@pytest.mark.parametrize(
    "adjoint",
    [odejax.BacksolveAdjoint(), odejax.InterpolatingAdjoint(), odejax.QuadratureAdjoint()],
    ids=["backsolve", "interpolating", "quadrature"],
)
def test_continuous_adjoints_refuse_events(adjoint):
    with pytest.raises(NotImplementedError, match="does not support events"):
        jax.grad(lambda k: _steady((A, k), Y0, adjoint)[0])(K)


def test_steady_state_event_class_is_the_event_of_the_condition():
    def solve(event):
        return odejax.diffeqsolve(
            odejax.ODETerm(linear),
            odejax.Tsit5(),
            0.0,
            jnp.inf,
            0.1,
            Y0,
            (A, K),
            stepsize_controller=odejax.PIDController(rtol=1e-8, atol=1e-8),
            event=event,
            adjoint=odejax.ImplicitAdjoint(),
        )

    a = solve(odejax.SteadyStateEvent())
    b = solve(odejax.Event(odejax.steady_state_event()))
    assert int(a.result) == int(odejax.RESULTS.event_occurred)
    np.testing.assert_array_equal(a.ts, b.ts)
    np.testing.assert_allclose(a.ys[-1], A / K, rtol=1e-6)
