"""`RecursiveCheckpointAdjoint`: the exact gradient of the discrete solve.

The backward pass is written here as plain JAX loops (no nested `custom_vjp`), so that
it can itself be differentiated in forward mode: `jax.jvp` of `jax.grad` of a loss
through a solve (Hessian-vector products) works.

Checkpointing scheme (multi-level): the forward solve keeps at most `s_0` states,
every `K` steps, where `K` starts at 1 and doubles (every other kept state dropped)
whenever the `s_0` slots are full, so a short solve keeps every state. The backward
pass takes the segments between kept states in reverse; each is recomputed forward,
storing its states every `K_1 = s_2 ... s_{r-1}` steps (at most `s_1` of them), and so
on down to the last level, which stores every step of its segment and backpropagates
through them one by one. Memory: `s_0 + ... + s_{r-1}` states (plus the saved outputs);
time: one forward solve, at most `r - 1` recomputations and one backpropagation of
each step, whatever the number of steps actually taken.
"""

from __future__ import annotations

import functools as ft
import math

import equinox as eqx
import equinox.internal as eqxi
import jax
import jax.numpy as jnp

from .._loop import join_buffers, split_buffers
from ._base import AbstractAdjoint, lax_loops, lax_while_loop, while_loop, zero_cotangents

# Up to this many steps every state is stored (one level): memory max_steps states,
# no recomputation.
_STORE_ALL_UP_TO = 64


class RecursiveCheckpointAdjoint(AbstractAdjoint):
    """Differentiate the solve by backpropagating through the steps the solver took
    (discretise-then-optimise): the exact gradient of the discrete solution, to
    rounding. The forward steps are recomputed from a bounded number of stored states
    (checkpoints), so memory is O(`checkpoints`) states, not O(steps).

    **Arguments:**

    - `checkpoints`: the most states to store. The forward solve keeps up to `s_0`
      states, all of them while it has taken at most `s_0` steps, and then every
      second, fourth, ... (the stride doubles each time they fill up); the backward
      pass recomputes the steps between two kept states (one more forward solve at
      most, none for a solve of at most `s_0` steps), storing them at a second level
      of size `s_1`. None chooses `max_steps` when `max_steps <= 64`, else the two
      levels with the least memory (`s_0 + s_1 = 128` for the default
      `max_steps=4096`): about 3x a forward solve in all. Fewer checkpoints use more
      levels, each one more recomputation (`r` levels need about
      `r * max_steps**(1/r)` checkpoints, at least about `2 * log2(max_steps)`);
      `checkpoints >= max_steps` stores every step.

    The default adjoint of `diffeqsolve`. Reverse mode (`jax.grad`, `jax.vjp`), and
    forward-over-reverse (`jax.jvp` of `jax.grad`: Hessian-vector products). For
    `jax.jvp` alone use `ForwardMode` or `DirectAdjoint`. A solve that is not
    differentiated runs (and compiles) the plain loop, without checkpointing.

    With `max_steps=None` give `checkpoints`: the steps are then checkpointed online
    (treeverse, Stumm & Walther 2010, as in equinox), which supports reverse mode only.

    ```python
    def loss(y0):
        sol = diffeqsolve(ODETerm(f), Tsit5(), 0.0, 1.0, 0.1, y0,
                          adjoint=RecursiveCheckpointAdjoint(checkpoints=32))
        return jnp.sum(sol.ys**2)
    jax.grad(loss)(y0)
    ```
    """

    checkpoints: int | None = eqx.field(default=None, static=True)

    def __check_init__(self):
        c = self.checkpoints
        if c is not None and (isinstance(c, bool) or not isinstance(c, int) or c < 1):
            raise ValueError(f"`checkpoints` must be a positive int or None, got {c!r}.")

    def loop(self, integrate, init_state, max_steps):
        if max_steps is None:
            return _unbounded(integrate, init_state, self.checkpoints)
        sizes = checkpoint_levels(max_steps, self.checkpoints)
        final = _checkpointed((integrate, init_state), sizes=sizes, max_steps=max_steps)
        return integrate.finish(final)


@ft.lru_cache(maxsize=256)
def checkpoint_levels(max_steps: int, checkpoints: int | None) -> tuple[int, ...]:
    """Level sizes `(s_0, ..., s_{r-1})`, as few levels as fit in `checkpoints` states.

    Level 0 keeps at most `s_0` states of the forward solve, every `K` steps, where `K`
    starts at 1 and doubles (dropping every other stored state) each time the `s_0`
    slots are full: a solve of at most `s_0` steps keeps all its states and recomputes
    nothing. Its segments are at most `K_max` steps (the least power of two with
    `s_0 * K_max >= max_steps`), and the static levels `s_1, ...` cover a segment
    (`s_1 * ... >= K_max`). None: `max_steps` states up to 64 steps, else the two
    levels with the least memory."""
    if checkpoints is not None and checkpoints >= max_steps:
        return (max_steps,)
    if checkpoints is None and max_steps <= _STORE_ALL_UP_TO:
        return (max_steps,)
    levels = 2
    while True:
        best = None
        step = max(1, min(checkpoints or max_steps, max_steps) // 20000)
        for s0 in range(2, max(3, min(checkpoints or max_steps, max_steps) + 1), step):
            sub = _root_ceil(_segment_bound(max_steps, s0), levels - 1)
            sizes = (s0,) + (sub,) * (levels - 1)
            if best is None or sum(sizes) < sum(best):
                best = sizes
        if checkpoints is None or sum(best) <= checkpoints:
            return best
        if best[1] <= 2:
            raise ValueError(
                f"RecursiveCheckpointAdjoint(checkpoints={checkpoints}) is too few for "
                f"max_steps={max_steps}: give at least {sum(best)} checkpoints (or fewer "
                "max_steps)."
            )
        levels += 1


def _segment_bound(max_steps, s0):
    """The longest segment between two states that level 0 keeps (see above)."""
    k = 1
    while s0 * k < max_steps:
        k *= 2
    return k


def _root_ceil(n, r):
    """The least integer q with q**r >= n."""
    q = max(1, round(n ** (1 / r)))
    while q**r < n:
        q += 1
    while q > 1 and (q - 1) ** r >= n:
        q -= 1
    return q


def _strides(sizes):
    """Steps between the states stored at each level."""
    return tuple(math.prod(sizes[i + 1 :]) for i in range(len(sizes)))


class _Stack(eqx.Module):
    """`n` loop states (plus one scratch row for writes that keep nothing), stored as
    one 2-D array per dtype: a state is written and read with one dynamic slice per
    dtype, not one per leaf (a solve's loop state has ~20 leaves; every slice is a
    kernel of its own to compile and, on a GPU, to launch). The statistics counters
    (`num_steps`, ...) are not stored: nothing in a backward pass reads them, and they
    read back as zeros."""

    bufs: tuple
    layout: tuple = eqx.field(static=True)  # per leaf: (buffer or None, offset, shape, dtype)
    treedef: object = eqx.field(static=True)

    @classmethod
    def zeros(cls, tree, n):
        leaves, treedef = jax.tree.flatten(tree)
        dropped = treedef.flatten_up_to(_statistics_mask(tree))
        dtypes, sizes, layout = [], [], []
        for leaf, drop in zip(leaves, dropped):
            dtype, shape = jnp.result_type(leaf), jnp.shape(leaf)
            if drop:
                layout.append((None, 0, shape, dtype))
                continue
            if dtype not in dtypes:
                dtypes.append(dtype)
                sizes.append(0)
            g = dtypes.index(dtype)
            layout.append((g, sizes[g], shape, dtype))
            sizes[g] += math.prod(shape)
        bufs = tuple(jnp.zeros((n + 1, size), dtype) for dtype, size in zip(dtypes, sizes))
        return cls(bufs, tuple(layout), treedef)

    def empty(self, n):
        """A stack of `n` states laid out as this one's, zeroed."""
        bufs = tuple(jnp.zeros((n + 1, b.shape[1]), b.dtype) for b in self.bufs)
        return _Stack(bufs, self.layout, self.treedef)

    def store(self, row, tree):
        """The stack with `tree` written at `row`."""
        leaves = self.treedef.flatten_up_to(tree)
        parts = [[] for _ in self.bufs]
        for (g, _, _, _), leaf in zip(self.layout, leaves):
            if g is not None:
                parts[g].append(jnp.ravel(leaf).astype(self.bufs[g].dtype))
        bufs = tuple(
            jax.lax.dynamic_update_index_in_dim(b, jnp.concatenate(p), row, 0)
            for b, p in zip(self.bufs, parts)
        )
        return _Stack(bufs, self.layout, self.treedef)

    def row(self, k):
        """The state at row `k`."""
        rows = [jax.lax.dynamic_index_in_dim(b, k, keepdims=False) for b in self.bufs]
        leaves = [
            jnp.zeros(shape, dtype)
            if g is None
            else rows[g][off : off + math.prod(shape)].reshape(shape)
            for g, off, shape, dtype in self.layout
        ]
        return jax.tree.unflatten(self.treedef, leaves)

    def move(self, dst, src):
        """The stack with row `src` copied to row `dst`."""
        bufs = tuple(
            jax.lax.dynamic_update_index_in_dim(b, jax.lax.dynamic_index_in_dim(b, src), dst, 0)
            for b in self.bufs
        )
        return _Stack(bufs, self.layout, self.treedef)


def _statistics_mask(small):
    """True at the leaves of a loop state (`State`, buffers split off) that only count
    (statistics), False elsewhere."""
    mask = jax.tree.map(lambda _: False, small)
    return eqx.tree_at(_statistics, mask, replace=(True,) * 4)


def _statistics(state):
    return (state.num_steps, state.num_accepted_steps, state.num_rejected_steps, state.num_fevals)


def _add(a, b):
    return jax.tree.map(lambda x, y: x if y is None else x + y, a, b, is_leaf=lambda v: v is None)


# The primal (undifferentiated) solve runs the plain lax loop; only under reverse-mode
# differentiation is the checkpointed loop traced and compiled.
@eqx.filter_custom_vjp
def _checkpointed(vjp_arg, *, sizes, max_steps):
    integrate, init_state = vjp_arg
    cond, body = integrate.loop_fns(lax_while_loop)
    return lax_while_loop(cond, body, init_state, max_steps=max_steps)


@_checkpointed.def_fwd
def _checkpointed_fwd(perturbed, vjp_arg, *, sizes, max_steps):
    del perturbed
    integrate, init_state = vjp_arg
    cond, body = integrate.loop_fns(lax_while_loop)
    size = sizes[0]
    small0, _ = split_buffers(init_state)

    def thin(stored, count, stride):
        # Keep every other stored state (row j <- row 2j, in place: j < 2j) and double
        # the stride.
        def move(j, stored):
            return stored.move(j, 2 * j)

        stored = jax.lax.fori_loop(1, (size + 1) // 2, move, stored)
        return stored, (count + 1) // 2, 2 * stride

    def loop_cond(carry):
        i, state, *_ = carry
        return (i < max_steps) & eqxi.unvmap_any(cond(state))

    def loop_body(carry):
        i, state, stored, count, stride = carry
        if len(sizes) > 1:  # (one level stores every step: never full)
            full = (i % stride == 0) & (count == size)
            stored, count, stride = jax.lax.cond(full, thin, lambda *a: a, stored, count, stride)
        store = i % stride == 0
        stored = stored.store(jnp.where(store, count, size), split_buffers(state)[0])
        return i + 1, body(state), stored, count + store.astype(count.dtype), stride

    zero = jnp.asarray(0, jnp.int32)
    init = (zero, init_state, _Stack.zeros(small0, size), zero, zero + 1)
    num, final, stored, _, stride = jax.lax.while_loop(loop_cond, loop_body, init)
    return final, (num, stored, stride)


@_checkpointed.def_bwd
def _checkpointed_bwd(residuals, grad_obj, perturbed, vjp_arg, *, sizes, max_steps):
    del perturbed, max_steps
    num, stored, stride = residuals
    integrate, init_state = vjp_arg
    # The buffers' values never matter below (the loop only writes into them): those of
    # the initial state stand in for them, with the right shapes.
    bufs0 = split_buffers(init_state)[1]
    grad = zero_cotangents(grad_obj, init_state)
    ct_small, ct_bufs = split_buffers(grad)
    ct_small = eqx.filter(ct_small, eqx.is_inexact_array)
    ct_p = jax.tree.map(jnp.zeros_like, eqx.filter(integrate, eqx.is_inexact_array))
    # Forward recomputation writes nothing into the buffers: it only advances counters.
    _, counting_body = integrate.loop_fns(None)

    def advance(small):
        return split_buffers(counting_body(join_buffers(small, bufs0)))[0]

    def step_vjp(small, cts):
        ct_small, ct_p, ct_bufs = cts

        def one_step(p, small, bufs):
            _, body = p.loop_fns(write_only_while_loop)
            return split_buffers(body(join_buffers(small, bufs)))

        _, vjp_fn = eqx.filter_vjp(one_step, integrate, small, bufs0)
        d_p, d_small, d_bufs = vjp_fn((ct_small, ct_bufs))
        return eqx.filter(d_small, eqx.is_inexact_array), _add(ct_p, d_p), d_bufs

    cts = _backward(0, sizes, stored, num, advance, step_vjp, (ct_small, ct_p, ct_bufs), stride)
    ct_small, ct_p, ct_bufs = cts
    return ct_p, join_buffers(ct_small, ct_bufs)


def _backward(level, sizes, stored, count, advance, step_vjp, cts, stride=None):
    """Backpropagate through `count` steps, given the states stored every `stride`
    steps from their start (`stride(level)` but at level 0, whose stride is dynamic)."""
    if stride is None:
        stride = _strides(sizes)[level]
    if level == len(sizes) - 1:

        def body(carry):
            j, cts = carry
            return j - 1, step_vjp(stored.row(j - 1), cts)

        return jax.lax.while_loop(lambda c: c[0] > 0, body, (count, cts))[1]

    def body(carry):
        k, cts, sub = carry
        start = stored.row(k - 1)
        n = jnp.minimum(stride, count - (k - 1) * stride)
        sub = _recompute(level + 1, sizes, start, n, advance, sub)
        return k - 1, _backward(level + 1, sizes, sub, n, advance, step_vjp, cts), sub

    # One stack for the next level's states, reused by every segment (only the rows a
    # segment writes are read back): allocated and zeroed once, not once per segment.
    sub = stored.empty(sizes[level + 1])
    segments = (count + stride - 1) // stride
    return jax.lax.while_loop(lambda c: c[0] > 0, body, (segments, cts, sub))[1]


def _recompute(level, sizes, start, count, advance, stored):
    """`stored` with the states at steps `0, stride(level), 2 stride(level), ...` before
    `count` written in its first rows, recomputed from `start` (the state at step 0);
    no step beyond the last needed."""
    stride, size = _strides(sizes)[level], sizes[level]

    def body(carry):
        j, small, stored = carry
        row = jnp.where(j % stride == 0, j // stride, size)
        stored = stored.store(row, small)
        return j + 1, advance(small), stored

    last = (count - 1) // stride * stride
    init = (jnp.zeros_like(count), start, stored)
    j, small, stored = jax.lax.while_loop(lambda c: c[0] < last, body, init)
    return stored.store(j // stride, small)


# ---- the loop inside a step that writes saved values (SaveAt.ts) -------------------


def write_only_while_loop(cond, body, init, *, max_steps, buffers=None):
    """A while loop, reverse-mode differentiable, whose carry is integers (counters)
    and write-only buffers (its floating-point leaves): its steps only write values
    computed from the closed-over arrays into the buffers, and never read them. Its
    backward pass reruns the counters and accumulates the cotangents of the written
    values, in plain JAX loops (so it can be differentiated in forward mode too)."""
    del buffers
    body_cc = eqx.filter_closure_convert(body, init)
    cond_cc = eqx.filter_closure_convert(cond, init)
    return _write_loop((body_cc, cond_cc, init), max_steps=max_steps)


@eqx.filter_custom_vjp
def _write_loop(vjp_arg, *, max_steps):
    body, cond, init = vjp_arg
    return lax_while_loop(cond, body, init, max_steps=max_steps)


@_write_loop.def_fwd
def _write_loop_fwd(perturbed, vjp_arg, *, max_steps):
    del perturbed
    return _write_loop.fn(vjp_arg, max_steps=max_steps), None


@_write_loop.def_bwd
def _write_loop_bwd(residuals, grad_obj, perturbed, vjp_arg, *, max_steps):
    del residuals, perturbed
    body, cond, init = vjp_arg
    bufs, counters = eqx.partition(init, eqx.is_inexact_array)
    ct_bufs = zero_cotangents(grad_obj, init)
    ct_bufs = eqx.filter(ct_bufs, eqx.is_inexact_array)
    ct_body = jax.tree.map(jnp.zeros_like, eqx.filter(body, eqx.is_inexact_array))

    def loop_body(carry):
        counters, ct_body, ct_bufs = carry

        def one(b, bufs):
            # The written buffers, and (not differentiated) the advanced counters.
            return eqx.partition(b(eqx.combine(bufs, counters)), eqx.is_inexact_array)

        _, vjp_fn, new_counters = eqx.filter_vjp(one, body, bufs, has_aux=True)
        d_body, ct_bufs = vjp_fn(ct_bufs)
        return new_counters, _add(ct_body, d_body), ct_bufs

    def loop_cond(carry):
        return cond(eqx.combine(bufs, carry[0]))

    carry = lax_while_loop(loop_cond, loop_body, (counters, ct_body, ct_bufs), max_steps=max_steps)
    _, ct_body, ct_bufs = carry
    no_ct_cond = jax.tree.map(lambda _: None, eqx.filter(cond, eqx.is_inexact_array))
    return ct_body, no_ct_cond, ct_bufs


# ---- max_steps=None: equinox's online treeverse -------------------------------------


def _unbounded(integrate, init_state, checkpoints):
    if checkpoints is None:
        outer, inner = lax_loops()
        final = integrate(init_state, outer, inner, None)
        return eqxi.nondifferentiable_backward(
            final,
            msg=(
                "Cannot reverse-mode differentiate a solve with max_steps=None and "
                "RecursiveCheckpointAdjoint(checkpoints=None): give max_steps, or "
                "the number of checkpoints to store."
            ),
        )
    return _treeverse((init_state, integrate), checkpoints=checkpoints)


@eqx.filter_custom_vjp
def _treeverse(vjp_arg, *, checkpoints):
    init_state, integrate = vjp_arg
    outer, inner = lax_loops()
    return integrate(init_state, outer, inner, None)


def _run_treeverse(vjp_arg, checkpoints):
    init_state, integrate = vjp_arg
    outer = ft.partial(while_loop, kind="checkpointed", checkpoints=checkpoints)
    inner = ft.partial(while_loop, kind="checkpointed")
    return integrate(init_state, outer, inner, None)


@_treeverse.def_fwd
def _treeverse_fwd(perturbed, vjp_arg, *, checkpoints):
    del perturbed
    out, vjp_fn = eqx.filter_vjp(ft.partial(_run_treeverse, checkpoints=checkpoints), vjp_arg)
    return out, (vjp_fn, out)


@_treeverse.def_bwd
def _treeverse_bwd(residuals, grad_obj, perturbed, vjp_arg, *, checkpoints):
    del perturbed, vjp_arg, checkpoints
    vjp_fn, out = residuals
    (grad,) = vjp_fn(zero_cotangents(grad_obj, out))
    return grad
