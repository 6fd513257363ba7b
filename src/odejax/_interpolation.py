"""Dense output: the polynomial of one step, and the piecewise polynomial of a solve.

Every explicit Runge-Kutta method in odejax writes its continuous extension in one
form (the method's own extension, or cubic Hermite),

    y(t0 + theta h) = y0 + scale * sum_i ks[i] * sum_m weights[i, m] theta^(m+1),

with the stages `ks`, a static weight matrix and `scale = h`; the stored dense output
of a whole solve uses the same class with the polynomial coefficients as `ks`, the
identity as `weights` and `scale = 1`. So one interpolation class serves them all.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._misc import cast_scalar, lincomb


def _weights(weights, theta, derivative):
    """Per-stage scalar weights `sum_m weights[i, m] theta^(m+1)` (or their
    d/dtheta), skipping zero coefficients (static). None where a stage has none."""
    p = len(weights[0])
    powers = [jnp.ones_like(theta), theta]
    for _ in range(p - 1):
        powers.append(powers[-1] * theta)
    out = []
    for row in weights:
        w = None
        for m, c in enumerate(row):
            if c != 0:
                term = (c * (m + 1)) * powers[m] if derivative else float(c) * powers[m + 1]
                w = term if w is None else w + term
        out.append(w)
    return out


def _static_matrix(w):
    """A matrix as a tuple of rows of Python floats: static and hashable."""
    return tuple(map(tuple, np.asarray(w, float).tolist()))


class LocalPolynomialInterpolation(eqx.Module):
    """The dense output of one step on `[t0, t1]`:
    `y0 + scale * sum_i ks[i] sum_m weights[i, m] theta^(m+1)`,
    `theta = (t - t0) / (t1 - t0)`. `ks` is a tuple of PyTrees shaped like `y0` (a
    Runge-Kutta method's stages, with `scale = t1 - t0`, or polynomial coefficients,
    with the identity as `weights` and `scale = 1`); `weights` is a static NumPy
    matrix with one row per entry of `ks`."""

    t0: jax.Array
    t1: jax.Array
    y0: object
    ks: tuple
    weights: tuple = eqx.field(static=True, converter=_static_matrix)
    scale: jax.Array

    def _theta(self, t):
        h = self.t1 - self.t0
        safe = jnp.where(h == 0, 1, h)
        return jnp.where(h == 0, 0, (t - self.t0) / safe), safe

    def evaluate(self, t0, t1=None, left=True):
        """The interpolant at `t0` (or its increment from `t0` to `t1`)."""
        del left
        if t1 is not None:
            return jax.tree.map(lambda a, b: b - a, self.evaluate(t0), self.evaluate(t1))
        theta, _ = self._theta(t0)
        return lincomb(self.y0, self.scale, _weights(self.weights, theta, False), list(self.ks))

    def derivative(self, t, left=True):
        """d/dt of the interpolant at `t`."""
        del left
        theta, h = self._theta(t)
        ws = _weights(self.weights, theta, True)
        d = lincomb(None, self.scale / h, ws, list(self.ks))
        return jax.tree.map(jnp.zeros_like, self.y0) if d is None else d

    def coefficients(self):
        """The polynomial coefficients `c_m` of `y0 + sum_m c_m theta^(m+1)` (a tuple
        of PyTrees shaped like `y0`), for storing the dense output of a solve."""
        out = []
        weights = np.asarray(self.weights)
        for m in range(weights.shape[1]):
            c = lincomb(None, self.scale, weights[:, m], list(self.ks))
            out.append(jax.tree.map(jnp.zeros_like, self.y0) if c is None else c)
        return tuple(out)


# The cubic Hermite interpolant through y0, y1, f0 = f(t0, y0), f1 = f(t1, y1) as a
# `LocalPolynomialInterpolation`: entries `hermite_entries(...)` = (h f0, h f1, y1 - y0),
# these weights and scale 1 (the implicit solvers' dense output).
HERMITE_WEIGHTS = np.array([[1.0, -2.0, 1.0], [0.0, -1.0, 1.0], [0.0, 3.0, -2.0]])


def hermite_entries(h, y0, y1, f0, f1):
    """`(h f0, h f1, y1 - y0)`, PyTrees shaped like `y0`: with `HERMITE_WEIGHTS`, the
    entries of the cubic Hermite interpolant."""

    def scaled(f):
        return jax.tree.map(lambda v: cast_scalar(h, v.dtype) * v, f)

    return scaled(f0), scaled(f1), jax.tree.map(jnp.subtract, y1, y0)


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
        # Steps meet a jump one ULP either side of it (see ClipStepSizeController): look
        # one ULP to the requested side, so that at a jump time `left` chooses the
        # step before it (in user time t; internal time tau = direction * t runs the
        # other way in a backward solve) and `left=False` the step after it.
        inf = jnp.asarray(jnp.inf, tau.dtype)
        # (The step is located without derivatives: stop_gradient before nextafter,
        # which has no derivative rule, so that d/dt of the output works.)
        tau_c = jax.lax.stop_gradient(tau)
        below = jnp.searchsorted(ends, jnp.nextafter(tau_c, -inf), side="left")
        above = jnp.searchsorted(ends, jnp.nextafter(tau_c, inf), side="right")
        forward = jnp.asarray(self.direction) > 0
        idx = jnp.where(forward == left, below, above)
        idx = jnp.clip(idx, 0, jnp.maximum(n - 1, 0))
        t0 = self.ts[idx]
        t1 = self.ts[idx + 1]
        y0 = jax.tree.map(lambda x: x[idx], self.y0s)
        coeffs = tuple(jax.tree.map(lambda x: x[idx], c) for c in self.coeffs)
        identity = np.eye(len(coeffs))
        one = jnp.ones((), t0.dtype)
        return LocalPolynomialInterpolation(t0, t1, y0, coeffs, identity, one), tau

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
