"""`DirectAdjoint` and `ForwardMode`: plain JAX autodiff through the loop."""

from __future__ import annotations

import functools as ft

import equinox.internal as eqxi

from ._base import AbstractAdjoint, lax_loops, while_loop


class DirectAdjoint(AbstractAdjoint):
    """Differentiate the solve by plain JAX autodiff through a bounded loop, in
    forward and reverse mode. Compiles more slowly and uses more memory than
    `RecursiveCheckpointAdjoint` (the loop is unrolled into a tree of depth
    `log_16(max_steps)`); prefer it only where both modes are needed. Needs an
    integer `max_steps`.
    """

    def loop(self, integrate, init_state, max_steps):
        if max_steps is None:
            raise ValueError("DirectAdjoint needs an integer `max_steps`, not None.")
        loop = ft.partial(while_loop, kind="bounded")
        return integrate(init_state, loop, loop, max_steps)


class ForwardMode(AbstractAdjoint):
    """Differentiate the solve in forward mode (`jax.jvp`, `jax.jacfwd`) through the
    loop itself: exact and cheap when there are few inputs to differentiate with
    respect to. Reverse mode is not supported with this adjoint."""

    def loop(self, integrate, init_state, max_steps):
        outer, inner = lax_loops()
        final = integrate(init_state, outer, inner, max_steps)
        return eqxi.nondifferentiable_backward(
            final,
            msg=(
                "adjoint=ForwardMode() supports forward-mode differentiation only (jax.jvp, "
                "jax.jacfwd); for jax.grad/jax.vjp use RecursiveCheckpointAdjoint() or "
                "DirectAdjoint()."
            ),
        )
