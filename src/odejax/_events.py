"""Events: end a solve when a condition on the state holds, or at the exact time a
condition crosses zero (located on the step's dense output, differentiably)."""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp

from ._controllers import rms_norm


class RootFinder(eqx.Module):
    """How an event's zero crossing is located inside the step where it happens:
    Newton's method on the step's dense output, safeguarded by bisection of the
    bracketing interval, until the change in time is below `atol + rtol * |t|` (or
    `max_steps` iterations). `None` tolerances mean a few ULP of the time's precision.

    Any object with `rtol` and `atol` attributes (e.g. `optimistix.Newton(rtol, atol)`)
    is accepted as an `Event`'s `root_finder` too; odejax uses this algorithm with its
    tolerances.
    """

    rtol: float | None = None
    atol: float | None = None
    max_steps: int = eqx.field(default=64, static=True)


class Event(eqx.Module):
    """End the solve when `cond_fn` says so (`diffeqsolve(..., event=Event(...))`).

    **Arguments:**

    - `cond_fn`: `cond_fn(t, y, args, **kwargs)` (kwargs: `terms`, `solver`,
      `stepsize_controller`), returning a bool scalar (the solve stops at the end of
      the first step after which it holds) or a float scalar (the solve stops where it
      crosses zero, located by root finding on the step's dense output). A PyTree of
      such functions: the crossing earliest in time ends the solve, and
      `Solution.event_mask` says which.
    - `root_finder`: a `RootFinder` (or any object with `rtol`/`atol`); default
      `RootFinder()`.
    - `direction`: None (both), True (only upward crossings, negative to positive) or
      False (only downward); or a PyTree of these matching `cond_fn`.

    The event time and the state there are differentiable (implicit function theorem
    through the root, `dt*/dθ = -(dg/dθ)/(dg/dt)`) with `RecursiveCheckpointAdjoint`,
    `DirectAdjoint` and `ForwardMode`. A bool condition that holds at `t0` ends the
    solve there (no step taken); a float condition that is exactly zero at the start
    of a step does not trigger (so a solve restarted on a surface does not stop at
    once). With an event, `t1` may be infinite (`jnp.inf`): the solve runs until the
    event (or `max_steps`); `Solution.t1` is then the event time. With `SaveAt(t1=True)` the solve saves the event time and state; saved
    times after the event are `inf`. Dense output past the event time extrapolates
    the last step.

    ```python
    hit_ground = odejax.Event(lambda t, y, args, **kw: y[0])
    sol = odejax.diffeqsolve(term, odejax.Tsit5(), 0.0, 10.0, 0.01, y0, event=hit_ground)
    ```
    """

    cond_fn: Callable | object
    root_finder: object = None
    direction: bool | None | object = None

    def __check_init__(self):
        for fn in jax.tree.leaves(self.cond_fn, is_leaf=callable):
            if not callable(fn):
                raise TypeError(
                    "Event: `cond_fn` must be a function `cond_fn(t, y, args, **kwargs)` "
                    f"or a PyTree of them, got a {type(fn).__name__}."
                )
        rf = self.root_finder
        if rf is not None and not (hasattr(rf, "rtol") and hasattr(rf, "atol")):
            raise TypeError(
                "Event: `root_finder` must be an odejax.RootFinder (or have `rtol` and "
                f"`atol`), got {type(rf).__name__}."
            )


def steady_state_event(rtol=None, atol=None, norm=None):
    """A condition for `Event`: true once `norm(f(t, y)) < atol + rtol * norm(y)`, i.e.
    the solution has (nearly) stopped moving. `rtol`/`atol` default to the
    `PIDController`'s (required with other controllers), `norm` to the RMS norm. Use
    with `ImplicitAdjoint` for the gradient at the steady state.

    ```python
    sol = odejax.diffeqsolve(term, odejax.Tsit5(), 0.0, jnp.inf, 0.1, y0,
                             stepsize_controller=odejax.PIDController(rtol=1e-8, atol=1e-8),
                             event=odejax.Event(odejax.steady_state_event()))
    ```
    """

    def cond_fn(t, y, args, *, terms, stepsize_controller, **kwargs):
        ctrl = stepsize_controller
        while hasattr(ctrl, "controller"):  # e.g. ClipStepSizeController(PIDController)
            ctrl = ctrl.controller
        r = rtol if rtol is not None else getattr(ctrl, "rtol", None)
        a = atol if atol is not None else getattr(ctrl, "atol", None)
        if r is None or a is None:
            raise ValueError(
                "steady_state_event: give rtol and atol (the step-size controller has none)."
            )
        n = rms_norm if norm is None else norm
        return n(terms.vf(t, y, args)) < a + r * n(y)

    return cond_fn


class SteadyStateEvent(Event):
    """`Event(steady_state_event(rtol, atol, norm))`: end the solve once it has reached
    a steady state (see `steady_state_event`)."""

    def __init__(self, rtol=None, atol=None, norm=None):
        self.cond_fn = steady_state_event(rtol, atol, norm)
        self.root_finder = None
        self.direction = None


# ---- inside the loop ------------------------------------------------------------------


class EventState(eqx.Module):
    values: tuple  # each float condition's value at the start of the step (0 for bools)
    mask: tuple  # which condition ended the solve


def _flat(event):
    fns, treedef = jax.tree.flatten(event.cond_fn, is_leaf=callable)
    dirs = event.direction
    if dirs is None or isinstance(dirs, bool):
        dirs = [dirs] * len(fns)
    else:
        dirs = treedef.flatten_up_to(dirs)
    return fns, dirs, treedef


def _call(fn, t, y, args, kwargs):
    out = jnp.asarray(fn(t, y, args, **kwargs))
    if out.shape != ():
        raise ValueError(
            f"Event: a `cond_fn` must return a scalar (bool or float), got shape {out.shape}."
        )
    return out


def init_event_state(event, t0, y0, args, kwargs):
    """The conditions' values at the start of the solve (user time `t0`)."""
    fns, _, _ = _flat(event)
    values, mask = [], []
    for fn in fns:
        v = _call(fn, t0, y0, args, kwargs)
        values.append(jnp.zeros((), t0.dtype) if v.dtype == bool else v)
        # A bool condition that already holds ends the solve at t0 (as in diffrax); a
        # float one only triggers when it crosses zero.
        mask.append(v if v.dtype == bool else jnp.asarray(False))
    return EventState(tuple(values), tuple(mask))


def event_mask(event, state: EventState):
    """The PyTree (shaped like `cond_fn`) of which condition ended the solve."""
    _, _, treedef = _flat(event)
    return jax.tree.unflatten(treedef, list(state.mask))


def event_step(event, state, t_start, t_end, y1, interp, direction, args, kwargs, keep):
    """After a step from `t_start` to `t_end` (internal time) ending at `y1` (kept or
    not): `(hit, t_event, y_event, new_state)`. `t_event`/`y_event` are where the solve
    ends if `hit` (the earliest crossing), else `t_end`/`y1`."""
    fns, dirs, _ = _flat(event)
    rf = event.root_finder or RootFinder()
    times, values, crossed = [], [], []
    for fn, d, v0 in zip(fns, dirs, state.values):
        v1 = _call(fn, t_end * direction, y1, args, kwargs)
        if v1.dtype == bool:
            times.append(t_end)
            crossed.append(keep & v1)
            values.append(v0)
            continue
        up = (v0 < 0) & (v1 >= 0)
        down = (v0 > 0) & (v1 <= 0)
        hit = up if d is True else down if d is False else up | down
        hit = keep & hit

        def g(tau, fn=fn):
            return _call(fn, tau * direction, interp.evaluate(tau), args, kwargs)

        # (g(t_start) is v0: the dense output starts at the step's initial state.)
        t_root = jax.lax.cond(
            jnp.any(hit),
            lambda neg, g=g: _root(g, t_start, t_end, neg, rf),
            lambda neg: t_end,
            v0 < 0,
        )
        times.append(jnp.where(hit, t_root, t_end))
        crossed.append(hit)
        values.append(jnp.where(keep, v1, v0).astype(v0.dtype))
    any_hit = jnp.asarray(False)
    t_event = t_end
    for t, c in zip(times, crossed):
        any_hit = any_hit | c
        t_event = jnp.where(c, jnp.minimum(t_event, t), t_event)
    mask = tuple(c & (t == t_event) for t, c in zip(times, crossed))
    at_end = t_event >= t_end
    y_event = jax.tree.map(
        lambda a, b: jnp.where(at_end, a, b), y1, interp.evaluate(jnp.minimum(t_event, t_end))
    )
    return any_hit, t_event, y_event, EventState(tuple(values), mask)


def _root(g, lo, hi, neg_lo, rf):
    """The zero of `g` in `[lo, hi]`, where `g(lo)` (negative iff `neg_lo`) and `g(hi)`
    differ in sign (or `g(hi) == 0`); differentiable by the implicit function theorem."""
    g = eqx.filter_closure_convert(g, lo)
    return _root_ift(g, lo, hi, neg_lo, rf)


@eqx.filter_custom_jvp
def _root_ift(g, lo, hi, neg_lo, rf):
    return _newton_bisect(g, lo, hi, neg_lo, rf)


@_root_ift.def_jvp
def _root_ift_jvp(primals, tangents):
    g, lo, hi, neg_lo, rf = primals
    t_g = tangents[0]
    t = _root_ift(g, lo, hi, neg_lo, rf)
    if t_g is None:
        return t, jnp.zeros_like(t)
    # g(t*(θ), θ) = 0  =>  dt* = -(dg/dθ · dθ) / (dg/dt).
    dg_dt = jax.jvp(g, (t,), (jnp.ones_like(t),))[1]
    dg_dtheta = eqx.filter_jvp(lambda g: g(t), (g,), (t_g,))[1]
    safe = jnp.where(dg_dt == 0, 1, dg_dt)
    return t, jnp.where(dg_dt == 0, 0, -dg_dtheta / safe).astype(t.dtype)


def _newton_bisect(g, lo, hi, neg_lo, rf):
    dtype = lo.dtype
    eps = jnp.finfo(dtype).eps
    rtol = jnp.asarray(4 * eps if rf.rtol is None else rf.rtol, dtype)
    atol = jnp.asarray(4 * eps * jnp.abs(hi - lo) if rf.atol is None else rf.atol, dtype)
    max_steps = getattr(rf, "max_steps", 64)  # e.g. optimistix.Newton has none

    def body(carry):
        i, lo, hi, t, _ = carry
        value, slope = jax.jvp(g, (t,), (jnp.ones_like(t),))
        value, slope = value.astype(dtype), slope.astype(dtype)  # e.g. float32 y, f64 t
        # Shrink the bracket around the root.
        below = (value < 0) == neg_lo
        lo = jnp.where(below, t, lo)
        hi = jnp.where(below, hi, t)
        newton = t - value / jnp.where(slope == 0, 1, slope)
        inside = (slope != 0) & (newton > lo) & (newton < hi)
        t_new = jnp.where(inside, newton, 0.5 * (lo + hi))
        t_new = jnp.where(value == 0, t, t_new)
        return i + 1, lo, hi, t_new.astype(dtype), jnp.abs(t_new - t)

    def cond(carry):
        i, lo, hi, t, step = carry
        return (i < max_steps) & (step > atol + rtol * jnp.abs(t)) & (hi > lo)

    t0 = 0.5 * (lo + hi)
    init = (jnp.asarray(0), lo, hi, t0, jnp.asarray(jnp.inf, dtype))
    return jax.lax.while_loop(cond, body, init)[3]
