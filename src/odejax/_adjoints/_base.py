"""The adjoint interface: an adjoint owns the solve loop and decides how it is
differentiated."""

from __future__ import annotations

import abc

import equinox as eqx
import equinox.internal as eqxi
import jax
import jax.numpy as jnp


def while_loop(cond, body, init, *, max_steps, buffers, kind, checkpoints=None):
    """`equinox.internal.while_loop` with the arguments the loop uses."""
    return eqxi.while_loop(
        cond, body, init, max_steps=max_steps, buffers=buffers, kind=kind, checkpoints=checkpoints
    )


class AbstractAdjoint(eqx.Module):
    """Base class of adjoints: how a solve is differentiated.

    Contract: `loop(integrate, init_state, max_steps)` returns the final loop state,
    where `integrate(init_state, outer_while_loop, inner_while_loop, max_steps)` runs
    the solve loop with the given while-loop implementations (each with the
    signature of `equinox.internal.while_loop` less `kind`). An adjoint may wrap the
    call in `jax.custom_vjp`/`jax.custom_jvp`, or choose loops that JAX can
    differentiate directly.
    """

    @abc.abstractmethod
    def loop(self, integrate, init_state, max_steps): ...


def zero_cotangents(grad, like):
    """`grad` (a cotangent of `like`, as custom-VJP rules receive it) with the zero
    cotangents, marked None, made explicit zeros for every floating-point leaf."""

    def fill(g, x):
        if g is None and eqx.is_inexact_array(x):
            return jnp.zeros_like(x)
        return g

    return jax.tree.map(fill, grad, like, is_leaf=lambda v: v is None)


def lax_while_loop(cond, body, init, *, max_steps, buffers=None):
    """A plain `lax.while_loop` bounded by `max_steps` (forward-mode differentiable;
    buffers are ordinary arrays updated in place by XLA).

    Contract: `body` is a no-op wherever `cond` is False. The loop then runs while
    `cond` holds for *any* batch element under `vmap` (an unbatched predicate), so
    JAX never selects between old and new values of whole buffers each iteration.
    """
    del buffers
    if max_steps is None:
        return jax.lax.while_loop(lambda val: eqxi.unvmap_any(cond(val)), body, init)

    def cond2(carry):
        i, val = carry
        return (i < max_steps) & eqxi.unvmap_any(cond(val))

    def body2(carry):
        i, val = carry
        return i + 1, body(val)

    return jax.lax.while_loop(cond2, body2, (jnp.asarray(0, jnp.int32), init))[1]


def lax_loops():
    return lax_while_loop, lax_while_loop
