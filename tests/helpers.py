"""Shared problems and solver lists for the test suite."""

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

import odejax

# (solver, order, dense-output order)
EXPLICIT_SOLVERS = [
    (odejax.Euler(), 1, 3),
    (odejax.Heun(), 2, 3),
    (odejax.Midpoint(), 2, 3),
    (odejax.Ralston(), 2, 3),
    (odejax.Bosh3(), 3, 3),
    (odejax.Tsit5(), 5, 4),
    (odejax.Dopri5(), 5, 4),
    # Dopri8's continuous extension (the one diffrax uses) satisfies the order
    # conditions up to order 5 only, not 7 (checked against all rooted trees).
    (odejax.Dopri8(), 8, 5),
]
ADAPTIVE_SOLVERS = [s for s in EXPLICIT_SOLVERS if s[0].error_order(None) is not None]


def solver_id(entry):
    return type(entry[0]).__name__


# A damped rotation y' = A y, exact solution expm(A t) y0.
A = np.array([[-0.3, 2.0], [-2.0, -0.3]])
Y0 = np.array([1.0, 0.5])


def linear_vf(t, y, args):
    return jnp.asarray(A, y.dtype) @ y


def linear_exact(t):
    return scipy.linalg.expm(A * t) @ Y0


def fit_slope(dts, errors):
    dts, errors = np.asarray(dts), np.asarray(errors)
    return np.polyfit(np.log(dts), np.log(errors), 1)[0]


def rel_error(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(np.asarray(b))))


# A non-autonomous problem for the order tests (Tsit5 is tuned so that its error on
# linear autonomous problems is pre-asymptotically smaller than its order says):
# y' = cos(t) y, with y = y0 exp(sin t).
NL_Y0 = np.array([1.0, 0.5])


def nonlinear_vf(t, y, args):
    return jnp.cos(t).astype(y.dtype) * y


def nonlinear_exact(t):
    return NL_Y0 * np.exp(np.sin(t))


def decay_vf(t, y, args):
    """y' = -args * y, for scalar or array args."""
    return jax.tree.map(lambda v: -jnp.asarray(args, v.dtype) * v, y)


def pid(tol):
    # Tolerances as arrays: they are traced, so one compile serves every tolerance.
    return odejax.PIDController(rtol=jnp.asarray(tol), atol=jnp.asarray(tol))


# Lotka-Volterra with the parameters of the benchmarks and the SciPy-bridge issue.
LV_P = jnp.array([2 / 3, -4 / 3, -1.0, 1.0], jnp.float64)
LV_Y0 = jnp.array([0.1, 0.2], jnp.float64)


def lv_vf(t, y, p):
    x, z = y[0], y[1]
    return jnp.stack([p[0] * x + p[1] * x * z, p[2] * z + p[3] * x * z])
