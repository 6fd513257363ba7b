"""Dense output: the polynomial of one step, and the piecewise polynomial of a solve.

Every explicit Runge-Kutta method in odejax writes its continuous extension in one
form, `y(t0 + theta h) = y0 + sum_{m=1..p} coeffs[m-1] theta^m`, so one
interpolation class serves them all (the method's own extension, or cubic Hermite).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from ._misc import cast_scalar


def _poly(y0, coeffs, theta):
    """`y0 + sum_m coeffs[m] theta^(m+1)` by Horner's rule; `coeffs` is a tuple of
    PyTrees shaped like `y0`."""

    def leaf(y0_, *c):
        th = cast_scalar(theta, y0_.dtype)
        acc = c[-1]
        for m in range(len(c) - 2, -1, -1):
            acc = acc * th + c[m]
        return y0_ + acc * th

    return jax.tree.map(leaf, y0, *coeffs)


def _poly_derivative(coeffs, theta, h):
    """d/dt of `_poly`: `sum_m (m+1) coeffs[m] theta^m / h`."""

    def leaf(*c):
        th = cast_scalar(theta, c[0].dtype)
        p = len(c)
        acc = p * c[-1]
        for m in range(p - 2, -1, -1):
            acc = acc * th + (m + 1) * c[m]
        return acc / cast_scalar(h, c[0].dtype)

    return jax.tree.map(leaf, *coeffs)


class LocalPolynomialInterpolation(eqx.Module):
    """The dense output of one step on `[t0, t1]`: `y0 + sum_m coeffs[m] theta^(m+1)`
    with `theta = (t - t0) / (t1 - t0)`; `coeffs` is a tuple of `p` PyTrees shaped
    like `y0` (`p` the degree)."""

    t0: jax.Array
    t1: jax.Array
    y0: object
    coeffs: object

    def _theta(self, t):
        h = self.t1 - self.t0
        return jnp.where(h == 0, 0, (t - self.t0) / jnp.where(h == 0, 1, h)), h

    def evaluate(self, t0, t1=None, left=True):
        del left
        if t1 is not None:
            return jax.tree.map(lambda a, b: b - a, self.evaluate(t0), self.evaluate(t1))
        theta, _ = self._theta(t0)
        return _poly(self.y0, self.coeffs, theta)

    def derivative(self, t, left=True):
        del left
        theta, h = self._theta(t)
        return _poly_derivative(self.coeffs, theta, h)


class DenseInterpolation(eqx.Module):
    """The dense output of a whole solve (`SaveAt(dense=True)`): one polynomial per
    accepted step. `ts` holds the step boundaries (`num_steps + 1` used entries, the
    rest `inf`), in the solver's internal time `direction * t`."""

    ts: jax.Array
    y0s: object
    coeffs: object
    num_steps: jax.Array
    direction: object
    y_start: object  # the initial state: the whole solution when no step was taken

    def _locate(self, t, left):
        tau = t * self.direction
        n = self.num_steps
        ends = self.ts[1:]
        # `left=True`: at a step boundary, use the step that ends there.
        side = "left" if left else "right"
        idx = jnp.searchsorted(ends, tau, side=side)
        idx = jnp.clip(idx, 0, jnp.maximum(n - 1, 0))
        t0 = self.ts[idx]
        t1 = self.ts[idx + 1]
        y0 = jax.tree.map(lambda x: x[idx], self.y0s)
        coeffs = jax.tree.map(lambda x: x[idx], self.coeffs)
        return LocalPolynomialInterpolation(t0, t1, y0, coeffs), tau

    def evaluate(self, t0, t1=None, left=True):
        """The solution at `t0` (or `y(t1) - y(t0)` if `t1` is given)."""
        if t1 is not None:
            a = self.evaluate(t0, left=left)
            b = self.evaluate(t1, left=left)
            return jax.tree.map(lambda x, y: y - x, a, b)
        interp, tau = self._locate(jnp.asarray(t0), left)
        out = interp.evaluate(tau)
        return jax.tree.map(lambda a, b: jnp.where(self.num_steps > 0, a, b), out, self.y_start)

    def derivative(self, t, left=True):
        """dy/dt at `t`."""
        interp, tau = self._locate(jnp.asarray(t), left)
        d = interp.derivative(tau)
        # A solve over an empty interval has no dense output to differentiate.
        d = jax.tree.map(lambda a: jnp.where(self.num_steps > 0, a, jnp.full_like(a, jnp.nan)), d)
        return jax.tree.map(lambda v: jnp.where(jnp.asarray(self.direction) > 0, v, -v), d)
