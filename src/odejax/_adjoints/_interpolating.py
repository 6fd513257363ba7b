"""`InterpolatingAdjoint` and `QuadratureAdjoint`: continuous adjoints that read the
forward state from the stored dense output of the forward solve."""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._saveat import SaveAt
from .._solve import _init_dense, dense_interpolation
from .._terms import ODETerm
from ._backsolve import (
    _forward,
    backward_kwargs,
    backward_solver,
    check_supported,
    check_unperturbed_times,
    gradients,
    saved_cotangents,
    sweep,
)
from ._base import AbstractAdjoint

# Gauss-Legendre nodes and weights on [-1, 1], 4 points (exact for polynomials of
# degree 7); Abramowitz & Stegun, Table 25.4.
_GL_X = np.array([-0.8611363115940526, -0.3399810435848563, 0.3399810435848563, 0.8611363115940526])
_GL_W = np.array([0.3478548451374538, 0.6521451548625461, 0.6521451548625461, 0.3478548451374538])


class _DenseAdjoint(AbstractAdjoint):
    kwargs: tuple  # sorted (name, value) pairs: hashable when the values are

    def __init__(self, **kwargs):
        self.kwargs = backward_kwargs(type(self).__name__, kwargs)

    def loop(self, integrate, init_state, max_steps):
        name = type(self).__name__
        check_supported(name, integrate, init_state)
        if max_steps is None:
            raise ValueError(
                f"{name} stores the dense output of the forward solve, whose size is "
                "max_steps: give an integer max_steps."
            )
        return _dense_adjoint((init_state, integrate), self, max_steps=max_steps)


class InterpolatingAdjoint(_DenseAdjoint):
    """Differentiate the solve by the continuous adjoint, reading the forward solution
    from its stored dense output (optimise-then-discretise; Cao, Li, Petzold & Serban
    2003; SciMLSensitivity's `InterpolatingAdjoint`): after the forward solve,
    `[a_y, a_params]` with `a_y' = -a_y df/dy(t, y(t))` and
    `a_params' = -a_y df/dparams` is solved backwards from the end to `t0`, with `y(t)`
    the forward solve's interpolant, adding the cotangent of each saved output at its
    time.

    Unlike `BacksolveAdjoint` it never integrates `y` backwards, so it stays accurate
    where that reconstruction does not (chaotic or strongly dissipative problems, e.g.
    Lorenz over long spans); memory is the forward dense output, O(`max_steps`)
    states. The gradient is an approximation, as accurate as the forward
    interpolation and the backward solve.

    **Arguments** (keywords; each defaults to the forward solve's): `solver`,
    `stepsize_controller`, `dt0`, `max_steps` of the backward solve, as for
    `BacksolveAdjoint`.

    Supports `SaveAt(t0=..., ts=..., t1=...)` saving the state itself, forward solves
    with `t0 < t1` known before tracing, an integer `max_steps`, and reverse mode
    only. Gradients flow to `y0`, `args` and parameters inside the terms; not to `t0`,
    `t1` or `SaveAt.ts` (that raises).

    ```python
    sol = odejax.diffeqsolve(term, odejax.Tsit5(), 0.0, 1.0, 0.1, y0,
                             adjoint=odejax.InterpolatingAdjoint())
    ```
    """


class QuadratureAdjoint(_DenseAdjoint):
    """As `InterpolatingAdjoint`, but only `a_y` is solved backwards (with its dense
    output); the parameter gradient `integral a_y(t) df/dparams(t, y(t)) dt` is then
    computed by 4-point Gauss-Legendre quadrature on each step of that backward solve
    (SciMLSensitivity's `QuadratureAdjoint`). The backward solve's step sizes are set
    by the adjoint state alone, so it is the cheaper choice when there are many
    parameters (a neural network) and few states.

    **Arguments** and support: as `InterpolatingAdjoint`.

    ```python
    sol = odejax.diffeqsolve(term, odejax.Tsit5(), 0.0, 1.0, 0.1, y0,
                             adjoint=odejax.QuadratureAdjoint())
    ```
    """


@eqx.filter_custom_vjp
def _dense_adjoint(vjp_arg, adjoint, *, max_steps):
    return _forward(vjp_arg, max_steps)


@_dense_adjoint.def_fwd
def _dense_adjoint_fwd(perturbed, vjp_arg, adjoint, *, max_steps):
    check_unperturbed_times(type(adjoint).__name__, perturbed, vjp_arg[1])
    init_state, integ = vjp_arg
    dense0 = _init_dense(
        integ.solver,
        integ.terms,
        integ.t0,
        integ.t1,
        init_state.y,
        integ.args,
        max_steps,
        integ.t0.dtype,
    )
    state = dataclasses.replace(init_state, dense=dense0)
    final = _forward((state, integ), max_steps)
    return dataclasses.replace(final, dense=None), final


@_dense_adjoint.def_bwd
def _dense_adjoint_bwd(final, grad_obj, perturbed, vjp_arg, adjoint, *, max_steps):
    del perturbed
    init_state, integ = vjp_arg
    forward = dense_interpolation(final.dense, jnp.asarray(1, integ.t0.dtype), init_state.y)
    times, cots = saved_cotangents(final, grad_obj, integ.t0)
    diff, nondiff = eqx.partition((integ.terms, integ.args), eqx.is_inexact_array)

    def f(t, y, params):
        terms, args = eqx.combine(params, nondiff)
        return terms.vf(t, y, args)

    neg = lambda v: -v
    zero_a = jax.tree.map(jnp.zeros_like, final.y)
    zero_p = jax.tree.map(jnp.zeros_like, diff)

    if isinstance(adjoint, QuadratureAdjoint):

        def adjoint_vf(t, a, fwd):
            _, vjp = jax.vjp(lambda y: f(t, y, diff), fwd.evaluate(t))
            return jax.tree.map(neg, vjp(a)[0])

        back = backward_solver(
            adjoint, integ, init_state, max_steps, ODETerm(adjoint_vf), SaveAt(t1=True, dense=True)
        )

        def segment(state, t_from, t_to, cot):
            a, a_p = state
            sol = back(a, t_from, t_to, forward)
            a = jax.tree.map(lambda v, c: v[-1] + c, sol.ys, cot)
            return a, jax.tree.map(jnp.add, a_p, _quadrature(f, diff, forward, sol))

    else:

        def adjoint_vf(t, state, params_fwd):
            a, _ = state
            params, fwd = params_fwd
            _, vjp = jax.vjp(lambda y, p: f(t, y, p), fwd.evaluate(t), params)
            a_y, a_p = vjp(a)
            return jax.tree.map(neg, a_y), jax.tree.map(neg, a_p)

        back = backward_solver(adjoint, integ, init_state, max_steps, ODETerm(adjoint_vf))

        def segment(state, t_from, t_to, cot):
            a, a_p = back(state, t_from, t_to, (diff, forward))
            return jax.tree.map(jnp.add, a, cot), a_p

    a0, a_p = sweep(segment, (zero_a, zero_p), final.t, times, cots)
    return gradients(init_state, integ, a0, a_p, nondiff)


def _quadrature(f, params, forward, sol):
    """`integral a(t) df/dparams(t, y(t)) dt` over the backward solve `sol` of `a`
    (y from the forward interpolant), by Gauss-Legendre on each of its steps."""
    interp = sol.interpolation
    ts = interp.ts  # step boundaries in the backward solve's internal time, -t
    x = jnp.asarray(_GL_X, ts.dtype)
    w = jnp.asarray(_GL_W, ts.dtype)

    def at(t):
        a = sol.evaluate(t)
        _, vjp = jax.vjp(lambda p: f(t, forward.evaluate(t), p), params)
        return vjp(a)[0]

    def body(carry):
        k, total = carry
        lo, hi = ts[k], ts[k + 1]
        half = 0.5 * (hi - lo)
        nodes = -(0.5 * (hi + lo) + half * x)  # user time
        values = jax.vmap(at)(nodes)
        step = jax.tree.map(
            lambda v: half.astype(v.dtype) * jnp.tensordot(w.astype(v.dtype), v, axes=1), values
        )
        return k + 1, jax.tree.map(jnp.add, total, step)

    zero = jax.tree.map(jnp.zeros_like, params)
    init = (jnp.asarray(0, interp.num_steps.dtype), zero)
    return jax.lax.while_loop(lambda c: c[0] < interp.num_steps, body, init)[1]
