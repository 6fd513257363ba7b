"""`ImplicitAdjoint`: the gradient of a steady state by the implicit function theorem."""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from .._solution import RESULTS
from ._backsolve import integrator_cotangent
from ._base import AbstractAdjoint, lax_loops, zero_cotangents


class ImplicitAdjoint(AbstractAdjoint):
    """Differentiate a solve that ends at a steady state (`event=Event(
    steady_state_event())`) by the implicit function theorem: the final state `y*`
    satisfies `f(t, y*, θ) = 0`, so `dy*/dθ = -(df/dy)^-1 df/dθ`, whatever the path
    the solver took to get there. No backpropagation through the steps: memory and
    time are one Jacobian of `f` (dense, `jax.jacfwd`) and one linear solve.

    Supports `SaveAt(t1=True)` (the steady state), and reverse mode. Gradients flow to
    `args` and parameters inside the terms; the steady state does not depend on `y0`
    (its gradient is zero). Where the solve did not end at the steady-state event (it
    reached `t1` first), the gradient is NaN rather than silently wrong.

    ```python
    sol = odejax.diffeqsolve(term, odejax.Tsit5(), 0.0, jnp.inf, 0.1, y0, args,
                             stepsize_controller=odejax.PIDController(rtol=1e-8, atol=1e-8),
                             event=odejax.Event(odejax.steady_state_event()),
                             adjoint=odejax.ImplicitAdjoint())
    ```
    """

    def loop(self, integrate, init_state, max_steps):
        if integrate.event is None:
            raise ValueError(
                "ImplicitAdjoint differentiates a steady state: pass "
                "event=odejax.Event(odejax.steady_state_event()) to diffeqsolve."
            )
        for spec in integrate.specs:
            if not (spec.t1 and not spec.t0 and spec.ts is None and not spec.steps):
                raise NotImplementedError(
                    "ImplicitAdjoint supports SaveAt(t1=True) only (the steady state)."
                )
        if init_state.dense is not None:
            raise NotImplementedError("ImplicitAdjoint does not support SaveAt(dense=True).")
        outer, inner = lax_loops()
        stopped = jax.tree.map(
            lambda x: jax.lax.stop_gradient(x) if eqx.is_inexact_array(x) else x,
            (integrate, init_state),
        )
        final = stopped[0](stopped[1], outer, inner, max_steps)
        y = _steady_state((final.y, integrate), final.t, final.result)
        return dataclasses.replace(final, y=y)


@eqx.filter_custom_vjp
def _steady_state(vjp_arg, t, result):
    y, _ = vjp_arg
    return y


@_steady_state.def_fwd
def _steady_state_fwd(perturbed, vjp_arg, t, result):
    del perturbed
    return vjp_arg[0], None


@_steady_state.def_bwd
def _steady_state_bwd(residuals, grad_obj, perturbed, vjp_arg, t, result):
    del residuals, perturbed
    y, integrate = vjp_arg
    flat_y, unravel = ravel_pytree(y)
    diff, nondiff = eqx.partition((integrate.terms, integrate.args), eqx.is_inexact_array)

    def f(flat_y, diff):
        terms, args = eqx.combine(diff, nondiff)
        return ravel_pytree(terms.vf(t, unravel(flat_y), args))[0]

    jac = jax.jacfwd(f)(flat_y, diff)
    ct = ravel_pytree(zero_cotangents(grad_obj, y))[0]
    lam = jnp.linalg.solve(jac.T, ct)
    # Only a solve that ended at the steady state has this gradient.
    lam = jnp.where(result == RESULTS.event_occurred, lam, jnp.nan)
    _, vjp = jax.vjp(lambda d: f(flat_y, d), diff)
    (g_diff,) = vjp(-lam)
    return jax.tree.map(lambda _: None, y), integrator_cotangent(integrate, g_diff)
