"""`RecursiveCheckpointAdjoint`: the exact gradient of the discrete solve."""

from __future__ import annotations

import functools as ft

import equinox as eqx
import equinox.internal as eqxi

from ._base import AbstractAdjoint, lax_loops, while_loop


class RecursiveCheckpointAdjoint(AbstractAdjoint):
    """Differentiate the solve by backpropagating through the steps the solver took
    (discretise-then-optimise): the exact gradient of the discrete solution, to
    rounding. The forward steps are recomputed from a bounded number of checkpoints
    (online treeverse, Stumm & Walther 2010), so memory is O(`checkpoints`) states.

    **Arguments:**

    - `checkpoints`: how many states to store. None chooses from `max_steps`
      (about `log(max_steps)` checkpoints; more checkpoints means less recomputation).
      With `max_steps=None`, give `checkpoints` to be able to differentiate.

    The default adjoint of `diffeqsolve`. Reverse mode only (`jax.grad`, `jax.vjp`);
    for `jax.jvp` use `ForwardMode` or `DirectAdjoint`.
    """

    checkpoints: int | None = eqx.field(default=None, static=True)

    def loop(self, integrate, init_state, max_steps):
        if self.checkpoints is None and max_steps is None:
            outer, inner = lax_loops()
            final = integrate(init_state, outer, inner, max_steps)
            return eqxi.nondifferentiable_backward(
                final,
                msg=(
                    "Cannot reverse-mode differentiate a solve with max_steps=None and "
                    "RecursiveCheckpointAdjoint(checkpoints=None): give max_steps, or "
                    "the number of checkpoints to store."
                ),
            )
        outer = ft.partial(while_loop, kind="checkpointed", checkpoints=self.checkpoints)
        inner = ft.partial(while_loop, kind="checkpointed")
        return integrate(init_state, outer, inner, max_steps)
