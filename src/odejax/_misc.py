"""Small tree and dtype helpers shared by the modules."""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import numpy as np


def is_traced(x) -> bool:
    return isinstance(x, jax.core.Tracer)


def cast_scalar(x, dtype):
    """A (real) scalar `x` as `dtype` (complex dtypes take the value as real part)."""
    return jnp.asarray(x).astype(dtype)


def _static_number(w):
    return isinstance(w, (numbers.Number, np.number))


def lincomb(y0, h, weights, ks):
    """`y0 + h * sum_j weights[j] * ks[j]` leaf by leaf.

    `weights` holds static numbers (zeros skipped, ones not multiplied: decided at
    trace time) or traced scalars (None skipped); `ks` is a list of PyTrees shaped like
    `y0`; `y0` may be None (then `h * sum_j weights[j] * ks[j]` alone is returned;
    None if every weight is skipped).
    """
    terms = [
        (w, k) for w, k in zip(weights, ks) if w is not None and not (_static_number(w) and w == 0)
    ]
    if not terms:
        return y0

    def leaf(*args):
        base, leaves = (None, args) if y0 is None else (args[0], args[1:])
        acc = None
        for (w, _), k in zip(terms, leaves):
            if _static_number(w):
                term = k if w == 1 else cast_scalar(float(w), k.dtype) * k
            else:
                term = cast_scalar(w, k.dtype) * k
            acc = term if acc is None else acc + term
        acc = cast_scalar(h, acc.dtype) * acc
        return acc if base is None else base + acc

    trees = ([] if y0 is None else [y0]) + [k for _, k in terms]
    return jax.tree.map(leaf, *trees)


def tree_where(pred, a, b):
    """`where(pred, a, b)` over two PyTrees, for a scalar boolean `pred`."""

    def leaf(x, y):
        x, y = jnp.asarray(x), jnp.asarray(y)
        return jax.lax.select(jnp.broadcast_to(pred, x.shape), x, y)

    return jax.tree.map(leaf, a, b)


def time_dtype(*times):
    """The floating dtype used for time: that of the given times, at least float."""
    times = [t for t in times if t is not None]
    dtype = jnp.result_type(*times) if times else jnp.dtype(float)
    if not jnp.issubdtype(dtype, jnp.inexact) or jnp.issubdtype(dtype, jnp.complexfloating):
        dtype = jnp.result_type(float)
    return jax.dtypes.canonicalize_dtype(dtype)


def concrete_or_none(x):
    """`x` as a NumPy value when it is known at trace time, else None."""
    if x is None or is_traced(x):
        return None
    try:
        return np.asarray(x)
    except Exception:  # noqa: BLE001 - anything that cannot be turned into NumPy
        return None


def widest(dtypes):
    """The widest of some real floating dtypes (explicitly: strict promotion refuses
    to mix float32 and float64 implicitly)."""
    return max((jnp.dtype(d) for d in dtypes), key=lambda d: d.itemsize)


@jax.custom_jvp
def nextafter(x, direction):
    """`jnp.nextafter(x, direction)`, differentiable as the identity in `x` (JAX has no
    derivative rule for it; moving by one ULP does not change the derivative)."""
    return jnp.nextafter(x, direction)


@nextafter.defjvp
def nextafter_jvp(primals, tangents):
    x, direction = primals
    tx, _ = tangents
    return nextafter(x, direction), tx
