"""`RecursiveCheckpointAdjoint`: the exact gradient of the discrete solve."""

from __future__ import annotations

import functools as ft

import equinox as eqx
import equinox.internal as eqxi

from ._base import AbstractAdjoint, lax_loops, while_loop, zero_cotangents


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
    for `jax.jvp` use `ForwardMode` or `DirectAdjoint`. A solve that is not
    differentiated runs (and compiles) the plain loop, without checkpointing.
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
        return _checkpointed(
            (init_state, integrate), max_steps=max_steps, checkpoints=self.checkpoints
        )


# The primal (undifferentiated) solve runs the plain lax loop; only under reverse-mode
# differentiation is the checkpointed loop traced and compiled.
@eqx.filter_custom_vjp
def _checkpointed(vjp_arg, *, max_steps, checkpoints):
    init_state, integrate = vjp_arg
    outer, inner = lax_loops()
    return integrate(init_state, outer, inner, max_steps)


def _run_checkpointed(vjp_arg, max_steps, checkpoints):
    init_state, integrate = vjp_arg
    outer = ft.partial(while_loop, kind="checkpointed", checkpoints=checkpoints)
    inner = ft.partial(while_loop, kind="checkpointed")
    return integrate(init_state, outer, inner, max_steps)


@_checkpointed.def_fwd
def _checkpointed_fwd(perturbed, vjp_arg, *, max_steps, checkpoints):
    del perturbed
    out, vjp_fn = eqx.filter_vjp(
        ft.partial(_run_checkpointed, max_steps=max_steps, checkpoints=checkpoints), vjp_arg
    )
    return out, (vjp_fn, out)


@_checkpointed.def_bwd
def _checkpointed_bwd(residuals, grad_obj, perturbed, vjp_arg, *, max_steps, checkpoints):
    del perturbed, vjp_arg, max_steps, checkpoints
    vjp_fn, out = residuals

    # The VJP wants zeros for every floating-point output (and None for the others).
    (grad,) = vjp_fn(zero_cotangents(grad_obj, out))
    return grad
