"""The solve loop: one `while_loop` of step -> error norm -> accept/reject -> save.

Everything here runs in the solver's internal time, which increases from `t0` to
`t1` (`diffeqsolve` maps a backward solve to `tau = -t`). The adjoint chooses how the
two while loops (the outer loop over steps and the inner loop that saves at
`SaveAt.ts` inside a step) are differentiated, and passes them in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import equinox as eqx
import equinox.internal as eqxi
import jax
import jax.numpy as jnp

from ._events import EventState, event_step
from ._misc import tree_where
from ._solution import RESULTS
from ._solvers._base import AbstractSolver

# Consecutive rejections caused by NaN/Inf or by a failed solver step (not by the error
# estimate) after which the solve gives up.
MAX_FORCED_REJECTIONS = 24


class SaveSpec(eqx.Module):
    """One `SubSaveAt` in internal time, with its buffer layout."""

    t0: bool = eqx.field(static=True)
    t1: bool = eqx.field(static=True)
    ts: jax.Array | None
    steps: bool = eqx.field(static=True)
    fn: Callable
    size: int = eqx.field(static=True)
    saves_y: bool = eqx.field(static=True, default=False)  # fn is `save_y`


class SaveState(eqx.Module):
    ts_index: jax.Array  # next entry of `spec.ts` to save
    index: jax.Array  # next free entry of the buffers
    ts: jax.Array  # saved times (user time)
    ys: object  # saved values


class DenseState(eqx.Module):
    index: jax.Array
    ts: jax.Array  # step boundaries (internal time)
    y0s: object
    coeffs: object


class State(eqx.Module):
    """The carry of the solve loop."""

    t: jax.Array  # start of the next step
    tnext: jax.Array  # proposed end of the next step
    y: object
    solver_state: object
    controller_state: object
    made_jump: jax.Array
    result: jax.Array
    num_steps: jax.Array
    num_accepted_steps: jax.Array
    num_rejected_steps: jax.Array
    num_fevals: jax.Array
    num_forced: jax.Array  # consecutive rejections caused by NaN/Inf or a failed step
    saves: tuple
    dense: DenseState | None
    event: EventState | None = None


def _buffers(state: State, num_saves: int):
    """The buffers of the loop state: the arrays the loop only writes into (saved values
    and dense output). (`state` may be a tree of placeholders, in which an empty
    `saves` is a leaf: hence `num_saves`, static.)"""
    bufs = tuple((state.saves[k].ts, state.saves[k].ys) for k in range(num_saves))
    if state.dense is not None:
        bufs = bufs + ((state.dense.ts, state.dense.y0s, state.dense.coeffs),)
    return bufs


def split_buffers(state: State):
    """`(small, buffers)`: the loop state without its buffers, and the buffers."""
    saves = tuple(SaveState(s.ts_index, s.index, None, None) for s in state.saves)
    dense = state.dense
    if dense is not None:
        dense = DenseState(dense.index, None, None, None)
    return dataclasses.replace(state, saves=saves, dense=dense), _buffers(state, len(saves))


def join_buffers(small: State, bufs) -> State:
    """The inverse of `split_buffers`."""
    saves = tuple(SaveState(s.ts_index, s.index, ts, ys) for s, (ts, ys) in zip(small.saves, bufs))
    dense = small.dense
    if dense is not None:
        ts, y0s, coeffs = bufs[len(saves)]
        dense = DenseState(dense.index, ts, y0s, coeffs)
    return dataclasses.replace(small, saves=saves, dense=dense)


def _set(buf, i, x, pred=True):
    """Write `x` into row `i` of a loop buffer if `pred`.

    Plain-array buffers have one scratch row at the end: an unpredicated write goes
    there, so nothing is read and no select over the row is needed (`diffeqsolve`
    strips the scratch row). Under checkpointed/bounded loops the buffers are equinox
    loop buffers, which take `pred` themselves. Trees are written by mapping over
    the *values* first: equinox buffers are PyTree nodes themselves."""
    if isinstance(buf, eqx.Module):
        return eqxi.buffer_at_set(buf, i, x, pred=pred)
    if pred is not True:
        i = jnp.where(pred, i, buf.shape[0] - 1)
    # dynamic_update_slice, not scatter: much cheaper to compile and to run.
    return jax.lax.dynamic_update_index_in_dim(buf, jnp.asarray(x, buf.dtype), i, 0)


def _if_vmap(pred, new, old):
    """`where(pred, new, old)` leaf by leaf where `pred` is batched (under `vmap`), and
    simply `new` where it is not: in an unbatched loop body `pred` (the loop condition)
    is always True, so the select and the computation of `pred` cost nothing."""

    def leaf(a, b):
        a, b = jnp.asarray(a), jnp.asarray(b)
        b = jnp.broadcast_to(b, a.shape).astype(a.dtype)
        return eqxi.select_if_vmap_p.bind(jnp.asarray(pred, bool), a, b)

    return jax.tree.map(leaf, new, old)


def _get(array, i):
    """`array[i]` for a traced `i`, as a dynamic slice (not a gather)."""
    return jax.lax.dynamic_index_in_dim(array, i, keepdims=False)


def _all_finite(tree):
    out = jnp.asarray(True)
    for leaf in jax.tree.leaves(tree):
        out = out & jnp.all(jnp.isfinite(leaf))
    return out


def time_tolerance(t0, t1):
    """Distance below which a step end is snapped onto `t1`: a few ULP of `t1` (or of
    the span, when `t1` is near 0)."""
    eps = jnp.finfo(t1.dtype).eps
    return 4 * eps * jnp.maximum(jnp.abs(t1), jnp.abs(t1 - t0))


def clip_to_end(t, tnext, t1, tol):
    """The end `tnext` of a step from `t`, clipped to `t1`, and snapped onto it when
    within `tol`: the last step always lands exactly on `t1`, never a few ULP short of
    it. A step that does not move (`t + dt == t`) is not snapped: it is an underflow,
    not a step to `t1`."""
    tnext = jnp.minimum(tnext, t1)
    return jnp.where((tnext >= t1 - tol) & (tnext > t), t1, tnext)


class Integrator(eqx.Module):
    """The solve loop with everything it closes over, as a PyTree (so that an adjoint
    can differentiate with respect to its arrays: parameters in `terms`, `args`,
    `t0`, `t1`, `SaveAt.ts`).

    `integrator(init_state, outer_while_loop, inner_while_loop, max_steps) -> State`
    runs the loop with the while loops the adjoint chose.
    """

    terms: object
    solver: object
    controller: object
    specs: tuple
    t0: jax.Array
    t1: jax.Array
    args: object
    direction: object
    error_order: int | None = eqx.field(static=True)
    # Whether a step may start at a discontinuity (jump_ts, or a given made_jump).
    may_jump: bool = eqx.field(static=True, default=False)
    event: object = None  # an Event (its conditions closure-converted), or None
    event_kwargs: object = None  # the keyword arguments of its conditions

    def __call__(self, init_state, outer_while_loop, inner_while_loop, max_steps):
        cond, body = self.loop_fns(inner_while_loop)
        final = outer_while_loop(
            cond,
            body,
            init_state,
            max_steps=max_steps,
            buffers=lambda state: _buffers(state, len(self.specs)),
        )
        return self.finish(final)

    def loop_fns(self, inner_while_loop):
        """`(cond, body)` of the solve loop, with `inner_while_loop` for the loop that
        saves at `SaveAt.ts` inside a step. With `inner_while_loop=None` the body
        writes nothing into the buffers and only advances their counters (to recompute
        the states of a solve)."""
        return _loop_fns(self, inner_while_loop)

    def finish(self, final: State) -> State:
        """The final loop state with `max_steps_reached` set where the loop stopped
        short of `t1`."""
        hit_max = (final.t < self.t1) & (final.result == RESULTS.successful)
        result = jnp.where(hit_max, RESULTS.max_steps_reached, final.result)
        return eqx.tree_at(lambda s: s.result, final, result.astype(jnp.int32))


def _loop_fns(p: Integrator, inner_while_loop):
    terms, solver, controller, specs = p.terms, p.solver, p.controller, p.specs
    t0, t1, args, direction, error_order = p.t0, p.t1, p.args, p.direction, p.error_order
    may_jump = p.may_jump
    event, event_kw = p.event, p.event_kwargs
    never_rejects = controller.never_rejects
    tol = time_tolerance(t0, t1)

    def save_step(spec, save, interp, t_start, t_end, y1, keep, inner_while_loop):
        ts_index, index, ts_buf, ys_buf = save.ts_index, save.index, save.ts, save.ys
        if inner_while_loop is None:
            # Counters only: the entries of `spec.ts` up to `t_end` (sorted, and those
            # before `ts_index` were saved by earlier steps). An unrolled binary
            # search: no loop inside the loop body (one less to compile).
            if spec.ts is not None and spec.ts.shape[0] > 0:
                upto = jnp.searchsorted(
                    spec.ts, t_end, side="right", method="scan_unrolled"
                ).astype(ts_index.dtype)
                new_index = jnp.where(keep, jnp.maximum(ts_index, upto), ts_index)
                index = index + (new_index - ts_index)
                ts_index = new_index
            if spec.steps:
                index = index + keep.astype(index.dtype)
            return SaveState(ts_index, index, ts_buf, ys_buf)
        if spec.ts is not None and spec.ts.shape[0] > 0:
            ts = spec.ts
            n = ts.shape[0]

            def cond(c):
                i = c[0]
                return keep & (i < n) & (_get(ts, jnp.minimum(i, n - 1)) <= t_end)

            def body(c):
                # A no-op where `cond` is False (a finished batch element, see below).
                i, j, tb, yb = c
                active = _if_vmap(cond(c), True, False)
                tau = _get(ts, jnp.minimum(i, n - 1))
                y = interp.evaluate(tau)
                t_user = tau * direction
                tb = _set(tb, j, t_user, pred=active)
                yb = jax.tree.map(
                    lambda v, b: _set(b, j, v, pred=active), spec.fn(t_user, y, args), yb
                )
                step = active.astype(i.dtype)
                return i + step, j + step, tb, yb

            ts_index, index, ts_buf, ys_buf = inner_while_loop(
                cond,
                body,
                (ts_index, index, ts_buf, ys_buf),
                max_steps=n,
                buffers=lambda c: (c[2], c[3]),
            )
        if spec.steps:
            t_user = t_end * direction
            ts_buf = _set(ts_buf, index, t_user, pred=keep)
            val = spec.fn(t_user, y1, args)
            ys_buf = jax.tree.map(lambda v, b: _set(b, index, v, pred=keep), val, ys_buf)
            index = index + keep.astype(index.dtype)
        return SaveState(ts_index, index, ts_buf, ys_buf)

    def body(state: State, inner_while_loop) -> State:
        # `active` is False only for batch elements that have already finished while
        # others go on (under vmap the loop runs while any element is active): for them
        # the body must be a no-op. Loop buffers are written only where `keep`, so no
        # select over whole buffers is ever needed.
        active = _if_vmap(cond(state), True, False)
        t_start, t_end = state.t, state.tnext
        # A finished element (t == tnext) still runs the step under vmap, its result
        # thrown away: give it a short step of non-zero length, so that a solver that
        # divides by h (the implicit ones) stays finite there; a NaN would leak into
        # the other elements' gradients (zero cotangent times NaN).
        dummy = t_start + jnp.maximum(jnp.abs(t_start), 1) * jnp.finfo(t_start.dtype).eps
        t_end = _if_vmap(active, t_end, dummy)
        made_jump = state.made_jump if may_jump else False
        y1, y_error, dense_info, solver_state, solver_result = solver.step(
            terms, t_start, t_end, state.y, args, state.solver_state, made_jump
        )
        # NaN/Inf anywhere in the step's result, or in its error estimate (a stage with
        # zero weight in y1, e.g. f(t1, y1) of an FSAL method, shows only there).
        # (One reduction: y1 + y_error is non-finite iff either is, short of an
        # overflow of the sum, which only a step rejected anyway could produce.)
        finite = _all_finite(y1 if y_error is None else jax.tree.map(jnp.add, y1, y_error))
        solver_ok = jnp.asarray(solver_result) == RESULTS.successful
        # What ends a solve whose steps keep being rejected whatever their size.
        cause = jnp.where(solver_ok, RESULTS.nonfinite, RESULTS.solver_failed)
        if never_rejects:
            _, ctrl_t0, next_t1, next_jump, cstate, cresult = controller.adapt_step_size(
                t_start, t_end, state.y, y1, args, y_error, error_order, state.controller_state
            )
            keep = active & finite & solver_ok
            # A constant step cannot be shrunk: NaN/Inf or a failed step end the solve.
            stuck = ~keep
            num_forced = state.num_forced
        else:
            ctrl_keep, ctrl_t0, next_t1, next_jump, cstate, cresult = controller.adapt_step_size(
                t_start, t_end, state.y, y1, args, y_error, error_order, state.controller_state
            )
            keep = active & ctrl_keep & finite & solver_ok
            # Rejected although the error estimate was acceptable (a failed solver step,
            # or NaN/Inf that the error estimate missed): retry with a quarter of the step.
            next_t1 = jnp.where(keep | ~ctrl_keep, next_t1, t_start + 0.25 * (t_end - t_start))
            forced = (~finite | ~solver_ok).astype(jnp.int32)
            num_forced = jnp.where(keep, 0, state.num_forced + forced)
            stuck = num_forced >= MAX_FORCED_REJECTIONS
        # An accepted step continues where the controller says (at `t_end`, or just past
        # a discontinuity); a rejected one retries from `t_start`.
        next_t0 = jnp.minimum(jnp.where(keep, ctrl_t0, t_start), t1)
        next_t1 = clip_to_end(next_t0, next_t1, t1, tol)
        if not never_rejects:
            # A retry must be strictly shorter than the step it retries. Snapping onto
            # t1, or rounding (`t + 0.9 dt` rounds back to `t + dt` when dt is a few
            # ULP), can undo the controller's shrink: then halve the step instead (a
            # step of one ULP cannot be halved: it retries as zero, an underflow). So a
            # run of rejections always ends, in `dt_underflow` below at the latest.
            half = t_start + 0.5 * (t_end - t_start)
            shorter = jnp.where(half < t_end, half, t_start)
            next_t1 = jnp.where(keep | (next_t1 < t_end), next_t1, shorter)
        underflow = (next_t1 <= next_t0) & (next_t0 < t1)
        # A controller failure (dt below dtmin) only counts while the solve is unfinished.
        failed = (cresult != RESULTS.successful) & (next_t0 < t1)
        result = jnp.where(failed, cresult, state.result)
        result = jnp.where(underflow, RESULTS.dt_underflow, result)
        if not never_rejects:
            result = jnp.where(underflow & (num_forced > 0), cause, result)
        result = jnp.where(active & stuck, cause, result).astype(jnp.int32)

        interp = solver.interpolation(t_start, t_end, dense_info)
        event_state = state.event
        t_save, y_save = t_end, y1
        if event is not None:
            # An event in this (accepted) step ends the solve at its time, with the
            # dense output's state there; nothing after it is saved.
            hit, t_save, y_save, event_state = event_step(
                event, state.event, t_start, t_end, y1, interp, direction, args, event_kw, keep
            )
            next_t0 = jnp.where(hit, t_save, next_t0)
            result = jnp.where(hit, RESULTS.event_occurred, result).astype(jnp.int32)
            event_state = _if_vmap(active, event_state, state.event)
        y = tree_where(keep, y_save, state.y)
        old_state = state.solver_state
        if type(solver).reject is not AbstractSolver.reject:
            old_state = tree_where(active, solver.reject(old_state, solver_state), old_state)
        fevals_step = solver.step_fevals(solver_state)
        solver_state = tree_where(keep, solver_state, old_state)
        saves = tuple(
            save_step(spec, save, interp, t_start, t_save, y_save, keep, inner_while_loop)
            for spec, save in zip(specs, state.saves)
        )
        dense = state.dense
        if dense is not None and inner_while_loop is None:
            dense = dataclasses.replace(dense, index=dense.index + keep.astype(jnp.int32))
        elif dense is not None:
            i = dense.index
            dense = DenseState(
                i + keep.astype(i.dtype),
                _set(dense.ts, i + 1, t_end, pred=keep),
                jax.tree.map(lambda v, b: _set(b, i, v, pred=keep), interp.y0, dense.y0s),
                jax.tree.map(
                    lambda v, b: _set(b, i, v, pred=keep), interp.coefficients(), dense.coeffs
                ),
            )
        # A step that starts at a jump re-evaluates the vector field there (kept or not).
        extra = (state.made_jump & active).astype(jnp.int32) if may_jump else 0
        step = active.astype(jnp.int32)
        small_new = (
            next_t1,
            cstate,
            # Only an accepted step can end at a jump; a retry keeps the flag.
            jnp.where(keep, jnp.asarray(next_jump, bool), state.made_jump)
            if may_jump
            else state.made_jump,
            result,
            num_forced,
        )
        small_old = (
            state.tnext,
            state.controller_state,
            state.made_jump,
            state.result,
            state.num_forced,
        )
        next_t1, cstate, made_jump, result, num_forced = _if_vmap(active, small_new, small_old)
        return State(
            t=next_t0,
            tnext=next_t1,
            y=y,
            solver_state=solver_state,
            controller_state=cstate,
            made_jump=made_jump,
            result=result,
            num_steps=state.num_steps + step,
            num_accepted_steps=state.num_accepted_steps + keep.astype(jnp.int32),
            num_rejected_steps=state.num_rejected_steps + (active & ~keep).astype(jnp.int32),
            num_fevals=state.num_fevals + step * fevals_step + extra,
            num_forced=num_forced,
            saves=saves,
            dense=dense,
            event=event_state,
        )

    def cond(state: State):
        return (state.t < t1) & (state.result == RESULTS.successful)

    return cond, lambda state: body(state, inner_while_loop)
