"""`BacksolveAdjoint`: gradients by the continuous adjoint agree with the exact
gradient of the discrete solve (RecursiveCheckpointAdjoint) and with central finite
differences, to the solver tolerance; unsupported uses raise."""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import odejax
from helpers import LV_P, LV_Y0, decay_vf, lv_vf

P, Y0 = LV_P, LV_Y0
TS = jnp.arange(0.0, 20.0, 0.1)[:-1]  # 0.0 .. 19.9


def lv_loss(y0, p, adjoint, solver=odejax.Tsit5()):
    sol = odejax.diffeqsolve(
        odejax.ODETerm(lv_vf),
        solver,
        0.0,
        19.9,
        0.01,
        y0,
        p,
        saveat=odejax.SaveAt(ts=TS),
        stepsize_controller=odejax.PIDController(rtol=1e-8, atol=1e-8),
        max_steps=4096,
        adjoint=adjoint,
    )
    return jnp.mean((sol.ys - 1) ** 2)


_grad = jax.jit(jax.grad(lv_loss, argnums=(0, 1)), static_argnums=(2, 3))
_loss = jax.jit(lv_loss, static_argnums=(2, 3))


@functools.cache
def _fd(eps=1e-6):
    """Central differences of the loss in every entry of (y0, p)."""
    flat = np.concatenate([np.asarray(Y0), np.asarray(P)])
    out = np.zeros_like(flat)
    rca = odejax.RecursiveCheckpointAdjoint()
    for i in range(flat.size):
        up, down = flat.copy(), flat.copy()
        up[i] += eps
        down[i] -= eps
        f = lambda v: float(_loss(jnp.asarray(v[:2]), jnp.asarray(v[2:]), rca, odejax.Tsit5()))  # noqa: E731
        out[i] = (f(up) - f(down)) / (2 * eps)
    return out


@pytest.mark.parametrize("solver", [odejax.Tsit5(), odejax.Dopri5()], ids=["Tsit5", "Dopri5"])
def test_lotka_volterra_gradient_matches_checkpointing_and_finite_differences(solver):
    exact = np.concatenate(_grad(Y0, P, odejax.RecursiveCheckpointAdjoint(), solver))
    back = np.concatenate(_grad(Y0, P, odejax.BacksolveAdjoint(), solver))
    # The continuous adjoint differs from the discrete gradient (and from finite
    # differences, which also see the controller move the steps) at the level of the
    # solver's error over 20 time units: a few 1e-6 here, at rtol = atol = 1e-8.
    np.testing.assert_allclose(back, exact, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(back, _fd(), rtol=1e-4, atol=1e-6)


def test_seminorm_controller_gives_the_same_gradient():
    ctrl = odejax.PIDController(rtol=1e-8, atol=1e-8, norm=odejax.adjoint_rms_seminorm)
    exact = np.concatenate(_grad(Y0, P, odejax.RecursiveCheckpointAdjoint(), odejax.Tsit5()))
    semi = np.concatenate(
        _grad(Y0, P, odejax.BacksolveAdjoint(stepsize_controller=ctrl), odejax.Tsit5())
    )
    np.testing.assert_allclose(semi, exact, rtol=1e-4, atol=1e-6)
    x = (jnp.ones(2), jnp.full(2, 3.0), jnp.full(5, 1e9))
    np.testing.assert_allclose(odejax.adjoint_rms_seminorm(x), np.sqrt(5.0), rtol=1e-12)


class MLPField(eqx.Module):
    mlp: eqx.nn.MLP

    def __call__(self, t, y, args):
        return self.mlp(y)


def test_gradient_wrt_module_parameters_matches_direct_adjoint():
    field = MLPField(eqx.nn.MLP(2, 2, 8, 2, activation=jnp.tanh, key=jax.random.PRNGKey(0)))
    ts = jnp.linspace(0.0, 1.0, 6)

    def loss(field, adjoint):
        sol = odejax.diffeqsolve(
            odejax.ODETerm(field),
            odejax.Tsit5(),
            0.0,
            1.0,
            0.05,
            jnp.array([1.0, -0.5]),
            saveat=odejax.SaveAt(t0=True, ts=ts, t1=True),
            stepsize_controller=odejax.PIDController(rtol=1e-9, atol=1e-9),
            max_steps=256,
            adjoint=adjoint,
        )
        return jnp.sum(sol.ys**2)

    grad = eqx.filter_jit(eqx.filter_grad(loss))
    direct = jax.tree.leaves(grad(field, odejax.DirectAdjoint()))
    back = jax.tree.leaves(grad(field, odejax.BacksolveAdjoint()))
    for d, b in zip(direct, back):
        np.testing.assert_allclose(b, d, rtol=1e-5, atol=1e-8)


def test_gradient_wrt_closed_over_value_pytree_state_and_vmap():
    # y' = -k y on a PyTree state, k closed over: y(1) = y0 exp(-k).
    def final(k, y0):
        f = lambda t, y, args: jax.tree.map(lambda v: -k * v, y)  # noqa: E731
        sol = odejax.diffeqsolve(
            odejax.ODETerm(f),
            odejax.Tsit5(),
            0.0,
            1.0,
            0.1,
            y0,
            stepsize_controller=odejax.PIDController(rtol=1e-10, atol=1e-10),
            adjoint=odejax.BacksolveAdjoint(),
        )
        return sol.ys["a"][-1, 0] + 2 * sol.ys["b"][-1]

    y0 = {"a": jnp.array([1.0]), "b": jnp.asarray(0.5)}
    gk, gy = jax.jit(jax.grad(final, argnums=(0, 1)))(0.7, y0)
    np.testing.assert_allclose(gk, -(1.0 + 2 * 0.5) * np.exp(-0.7), rtol=1e-7)
    np.testing.assert_allclose(gy["a"], [np.exp(-0.7)], rtol=1e-7)
    np.testing.assert_allclose(gy["b"], 2 * np.exp(-0.7), rtol=1e-7)
    ks = jnp.array([0.3, 0.7, 1.5])
    batched = jax.jit(jax.vmap(jax.grad(final), in_axes=(0, None)))(ks, y0)
    np.testing.assert_allclose(batched, -2.0 * np.exp(-np.asarray(ks)), rtol=1e-7)


def test_constant_step_forward_with_backward_dt0():
    def final(a):
        sol = odejax.diffeqsolve(
            odejax.ODETerm(decay_vf),
            odejax.Tsit5(),
            0.0,
            1.0,
            0.01,
            jnp.ones(1),
            a,
            adjoint=odejax.BacksolveAdjoint(dt0=0.01),
        )
        return sol.ys[-1, 0]

    np.testing.assert_allclose(jax.grad(final)(0.5), -np.exp(-0.5), rtol=1e-8)


def _solve_with(adjoint, **kw):
    base = dict(saveat=odejax.SaveAt(t1=True), t0=0.0, t1=1.0)
    base.update(kw)
    t0, t1 = base.pop("t0"), base.pop("t1")
    return odejax.diffeqsolve(
        odejax.ODETerm(decay_vf),
        odejax.Tsit5(),
        t0,
        t1,
        0.1 if t1 > t0 else -0.1,
        jnp.ones(1),
        1.0,
        adjoint=adjoint,
        **base,
    ).ys.sum()


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(saveat=odejax.SaveAt(steps=True)), r"steps=True"),
        (dict(saveat=odejax.SaveAt(t1=True, fn=lambda t, y, a: 2 * y)), r"custom `fn`"),
        (dict(saveat=odejax.SaveAt(t1=True, dense=True)), r"dense"),
    ],
    ids=["steps", "fn", "dense"],
)
def test_unsupported_uses_raise(kw, match):
    with pytest.raises(NotImplementedError, match=match):
        _solve_with(odejax.BacksolveAdjoint(), **kw)


def _decay_solve(y0, t0, t1, dt0, adjoint):
    sol = odejax.diffeqsolve(
        odejax.ODETerm(decay_vf), odejax.Tsit5(), t0, t1, dt0, y0, 1.0, adjoint=adjoint
    )
    return sol.ys.sum()


@pytest.mark.parametrize(
    "adjoint",
    [odejax.BacksolveAdjoint(), odejax.InterpolatingAdjoint(), odejax.QuadratureAdjoint()],
    ids=["backsolve", "interpolating", "quadrature"],
)
def test_backward_or_traced_time_solves_run_and_raise_only_when_differentiated(adjoint):
    y0 = jnp.ones(1)
    # Solving (not differentiating) works for any t0, t1: backwards, or traced by jit.
    backward = _decay_solve(y0, 1.0, 0.0, -0.1, adjoint)
    np.testing.assert_allclose(backward, np.exp(1.0), rtol=1e-5)
    traced = jax.jit(lambda t1: _decay_solve(y0, 0.0, t1, 0.1, adjoint))(1.0)
    np.testing.assert_allclose(traced, np.exp(-1.0), rtol=1e-5)
    with pytest.raises(NotImplementedError, match=r"forward solves only.*Python numbers"):
        jax.grad(_decay_solve)(y0, 1.0, 0.0, -0.1, adjoint)
    with pytest.raises(NotImplementedError, match=r"forward solves only.*Python numbers"):
        jax.jit(jax.grad(_decay_solve), static_argnums=4)(y0, 0.0, 1.0, 0.1, adjoint)


def test_gradient_wrt_times_raises_instead_of_returning_zero():
    with pytest.raises(NotImplementedError, match=r"forward solves only.*t0 or t1"):
        jax.grad(lambda t1: _solve_with(odejax.BacksolveAdjoint(), t1=t1))(1.0)

    def at_ts(ts):
        return _solve_with(odejax.BacksolveAdjoint(), saveat=odejax.SaveAt(ts=ts))

    with pytest.raises(ValueError, match=r"cannot differentiate with respect to t0, t1 or Save"):
        jax.grad(at_ts)(jnp.array([0.5, 0.75]))


def test_unknown_keyword_raises():
    with pytest.raises(ValueError, match=r"unknown keyword.*'rtol'"):
        odejax.BacksolveAdjoint(rtol=1e-6)
