"""What a solve saves: `SaveAt` and `SubSaveAt`."""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp


def save_y(t, y, args):
    """The default `fn` of `SaveAt`: save the state itself."""
    return y


def _check_ts(ts):
    if ts is None:
        return None
    ts = jnp.asarray(ts)
    if ts.ndim != 1:
        raise ValueError(
            f"SaveAt: `ts` must be a one-dimensional array of times, got shape {ts.shape}."
        )
    if not jnp.issubdtype(ts.dtype, jnp.inexact):
        ts = ts.astype(float)
    return ts


class SubSaveAt(eqx.Module):
    """One group of outputs: save `fn(t, y, args)` at `t0`, at the times `ts`, after
    every accepted step (`steps`), and/or at `t1`.

    The output holds the `t0` entry first and the `t1` entry last; in between, the
    `ts` entries and the step ends come in time order (interleaved when both are
    asked for). `steps=True` allocates `max_steps` entries; entries the solve does not
    reach are `inf`. With `throw=False`, the `t1` entry holds the state where a failed
    solve stopped, and its time in `ts` says where that was.
    """

    t0: bool = eqx.field(default=False, static=True)
    t1: bool = eqx.field(default=False, static=True)
    ts: jax.Array | None = eqx.field(default=None, converter=_check_ts)
    steps: bool = eqx.field(default=False, static=True)
    fn: Callable = save_y

    def __check_init__(self):
        if not (self.t0 or self.t1 or self.ts is not None or self.steps):
            raise ValueError(
                "SubSaveAt saves nothing: set at least one of t0=True, t1=True, ts=..., steps=True."
            )


class SaveAt(eqx.Module):
    """What `diffeqsolve` saves.

    **Arguments:**

    - `t0`, `t1`: save the initial / final state.
    - `ts`: an increasing array of times in `[t0, t1]` (decreasing for a backward
      solve) at which to save, evaluated with each method's dense output.
    - `steps`: save after every accepted step.
    - `fn`: save `fn(t, y, args)` instead of `y`.
    - `subs`: a PyTree of `SubSaveAt` for several groups of outputs at once (then
      `Solution.ts`/`ys` are PyTrees of the same structure); use instead of the above.
    - `dense`: keep the dense output of every step, for `Solution.evaluate(t)` and
      `Solution.derivative(t)`; costs memory proportional to `max_steps`.

    ```python
    saveat = odejax.SaveAt(ts=jnp.linspace(0, 1, 11), dense=True)
    ```
    """

    subs: object = None
    dense: bool = eqx.field(default=False, static=True)

    def __init__(
        self, *, t0=False, t1=False, ts=None, steps=False, fn=save_y, subs=None, dense=False
    ):
        if subs is None:
            if t0 or t1 or ts is not None or steps:
                subs = SubSaveAt(t0=t0, t1=t1, ts=ts, steps=steps, fn=fn)
            elif not dense:
                raise ValueError(
                    "SaveAt saves nothing: set at least one of t0=True, t1=True, ts=..., "
                    "steps=True, dense=True (the default of diffeqsolve is SaveAt(t1=True))."
                )
        elif t0 or t1 or ts is not None or steps or fn is not save_y:
            raise ValueError("SaveAt: pass either `subs` or t0/t1/ts/steps/fn, not both.")
        self.subs = subs
        self.dense = dense
