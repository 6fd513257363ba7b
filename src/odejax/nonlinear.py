"""The nonlinear and linear algebra shared by the implicit solvers.

The implicit methods (ESDIRK, IMEX, Radau) solve, at every step, equations of the
form `r(z) = 0` whose Jacobian is close to `I - h gamma J`, with `J` the Jacobian of
the vector field. They share:

- `Newton`: the settings of the simplified Newton iteration (tolerances, `kappa`);
- `ravel`: a PyTree state as one flat vector (the linear algebra works on that);
- `jacobian`: the dense Jacobian of the vector field, from the term's own `jac` when
  it has one, else by forward-mode AD (it is square: n forward passes);
- `newton`: the simplified Newton iteration with Hairer's convergence test (rate
  estimate, divergence detection, predicted failure), over any linear solve; the
  iteration matrix is factorised once by the caller and reused across stages and,
  while convergence stays good, across steps;
- `implicit_solve`: `newton` whose result is differentiable (forward and reverse
  mode, to any order) by the implicit function theorem, not through the iterations.

References: E. Hairer, G. Wanner, *Solving Ordinary Differential Equations II*,
2nd ed., Springer 1996, Section IV.8 (the convergence test, eqs. (8.10)-(8.12)).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
from jax.flatten_util import ravel_pytree

from ._misc import widest

__all__ = ["Newton", "NewtonResult", "implicit_solve", "jacobian", "newton", "ravel"]


class Newton(eqx.Module):
    """Settings of the simplified Newton iteration of the implicit solvers (the
    `root_finder` argument of `Kvaerno5`, `RadauIIA5`, ...).

    **Arguments:**

    - `rtol`, `atol`: the tolerances of the iteration. An iteration has converged
      when its estimated distance to the solution, in the RMS norm scaled by
      `atol + rtol |y|`, is below `kappa`. `None` (the default) takes them from the
      step-size controller (`PIDController(rtol, atol)`), as diffrax does; with a
      constant step size they default to a tight `max(1e-10, 100 eps)`.
    - `kappa`: the fraction of the tolerance the iteration must reach (Hairer & Wanner
      suggest 1e-1 to 1e-2).
    - `max_steps`: iterations per stage before the step is rejected and retried
      shorter.
    - `jac_rate`: after an accepted step, the Jacobian is recomputed for the next
      step only if the iteration's contraction rate was above this (Hairer's RADAU5
      uses 1e-3); 0 recomputes it every step.

    Any object with `rtol` and `atol` attributes (e.g. `optimistix.VeryChord`) is
    accepted where a `Newton` is, with the other settings at their defaults.
    """

    rtol: float | None = None
    atol: float | None = None
    kappa: float = 1e-2
    max_steps: int = eqx.field(static=True, default=10)
    jac_rate: float = 1e-3

    def __check_init__(self):
        _check_iterations(self.max_steps, "Newton: `max_steps`")


def _check_iterations(n, name):
    """Raise, naming the argument `name`, unless `n` is an int of at least 1."""
    if isinstance(n, bool) or int(n) < 1:
        raise ValueError(f"{name} must be at least 1, got {n!r}.")


def newton_settings(root_finder, max_steps=None, tolerances=None) -> Newton:
    """A `Newton` from any object with `rtol`/`atol` (duck typing), with `max_steps`
    (the solver's `root_find_max_steps`) if given, and tolerances left as None taken
    from `tolerances = (rtol, atol)` if given."""
    if isinstance(root_finder, Newton):
        out = root_finder
    else:
        if not (hasattr(root_finder, "rtol") and hasattr(root_finder, "atol")):
            raise TypeError(
                "`root_finder` must be an odejax.Newton (or an object with `rtol` and "
                f"`atol`, e.g. optimistix.VeryChord); got {type(root_finder).__name__}."
            )
        out = Newton(rtol=root_finder.rtol, atol=root_finder.atol)
        kappa = getattr(root_finder, "kappa", None)
        if kappa is not None:
            out = eqx.tree_at(lambda n: n.kappa, out, kappa)
    if max_steps is not None:
        _check_iterations(max_steps, "`root_find_max_steps`")
        out = dataclasses.replace(out, max_steps=int(max_steps))
    if tolerances is not None:
        rtol, atol = tolerances
        out = dataclasses.replace(
            out,
            rtol=rtol if out.rtol is None else out.rtol,
            atol=atol if out.atol is None else out.atol,
        )
    return out


def default_tolerance(dtype) -> float:
    """The Newton tolerance used with a constant step size: tight, short of rounding."""
    return max(1e-10, 100 * float(jnp.finfo(dtype).eps))


def ravel(y):
    """`y` (any PyTree of arrays) as one flat vector, and the function that undoes it.
    Leaves of different floating dtypes are cast to the widest (explicitly: strict
    promotion refuses mixing them), and cast back by the inverse."""
    dtypes = [jnp.result_type(leaf) for leaf in jax.tree.leaves(y)]
    if len(set(dtypes)) <= 1:
        return ravel_pytree(y)
    wide = widest(dtypes)
    flat, unravel_wide = ravel_pytree(jax.tree.map(lambda leaf: leaf.astype(wide), y))
    treedef = jax.tree.structure(y)

    def unravel(v):
        leaves = treedef.flatten_up_to(unravel_wide(v))
        return jax.tree.unflatten(treedef, [x.astype(d) for x, d in zip(leaves, dtypes)])

    return flat, unravel


def flat_vf(term, t, z, args, unravel):
    """The vector field of `term` at `(t, unravel(z))`, as a flat vector."""
    return ravel(term.vf(t, unravel(z), args))[0].astype(z.dtype)


def jacobian(term, t, z, args, unravel):
    """The dense Jacobian `d f / d y` of `term` at `(t, unravel(z))`, w.r.t. the flat
    state: the term's `jac(t, y, args)` if it has one, else by AD."""
    user = getattr(term, "jac", None)
    if user is not None:
        n = z.shape[0]
        jac = jnp.asarray(user(t, unravel(z), args))
        if jac.size != n * n:
            raise ValueError(
                f"The term's `jac` returned an array of shape {jac.shape}; it must be the "
                f"Jacobian of the vector field w.r.t. the flattened state: {n * n} "
                f"entries, shape ({n}, {n}) (or y.shape + y.shape)."
            )
        return jac.reshape(n, n).astype(z.dtype)
    return jax.jacfwd(lambda x: flat_vf(term, t, x, args, unravel))(z)


def time_derivative(term, t, z, args, unravel):
    """`d f / d t` at `(t, unravel(z))` as a flat vector (one forward-mode pass)."""
    return jax.jvp(lambda s: flat_vf(term, s, z, args, unravel), (t,), (jnp.ones_like(t),))[1]


def lu_factor(m):
    """The LU factorisation of a square matrix (reused by `lu_solve`)."""
    return jsl.lu_factor(m)


def lu_solve(lu, b):
    """Solve `m x = b` given `lu = lu_factor(m)`."""
    return jsl.lu_solve(lu, b)


def rms(x, scale):
    """The RMS norm of `x / scale`."""
    return jnp.sqrt(jnp.mean(jnp.square(x / scale)))


class NewtonResult(NamedTuple):
    """The outcome of `newton`: the solution `z`, whether it converged (`ok`), the last
    contraction rate estimate, the estimate `eta` to seed the next solve with, and the
    number of iterations (= evaluations of the residual)."""

    z: jax.Array
    ok: jax.Array
    rate: jax.Array
    eta: jax.Array
    num_iters: jax.Array


def newton(residual, z0, solve, scale, settings: Newton, eta0):
    """Simplified Newton: `z <- z - solve(residual(z))` until converged.

    `solve` applies an approximate inverse of the residual's Jacobian (a factorised
    iteration matrix, possibly from an earlier step). The norm is the RMS norm scaled
    by `scale` (`atol + rtol |y|`). With `theta_k = |dz_k| / |dz_{k-1}|` the
    contraction rate and `eta = theta / (1 - theta)`, the iteration has converged when
    `eta |dz_k| <= kappa` (the first iteration uses `eta0`, the last solve's `eta`); it
    has failed when `theta >= 1` (divergence), when the rate predicts it cannot
    converge within `max_steps`, when a value is not finite, or after `max_steps`.
    """
    kappa = jnp.asarray(settings.kappa, z0.dtype)
    max_steps = settings.max_steps
    eps = jnp.finfo(z0.dtype).eps
    eta0 = jnp.maximum(jnp.asarray(eta0, z0.dtype), eps) ** 0.8

    def cond(carry):
        i, _, _, _, _, done, _ = carry
        return (i < max_steps) & ~done

    def body(carry):
        i, z, prev, _, eta, _, _ = carry
        dz = solve(residual(z))
        z = z - dz
        size = rms(dz, scale)
        theta = jnp.where(i == 0, 0.0, size / jnp.where(prev == 0, 1, prev)).astype(z.dtype)
        eta = jnp.where(i == 0, eta, theta / jnp.maximum(1 - theta, eps))
        converged = (eta * size <= kappa) | (size == 0)
        remaining = (max_steps - 1 - i).astype(z.dtype)
        hopeless = (i > 0) & (
            (theta >= 1) | (theta**remaining / jnp.maximum(1 - theta, eps) * size > kappa)
        )
        finite = jnp.isfinite(size)
        failed = ~finite | (hopeless & ~converged) | (~converged & (i + 1 >= max_steps))
        return i + 1, z, size, theta, eta, converged | failed, converged & finite

    init = (
        jnp.asarray(0),
        z0,
        jnp.asarray(jnp.inf, z0.dtype),
        jnp.asarray(0, z0.dtype),
        eta0,
        jnp.asarray(False),
        jnp.asarray(False),
    )
    i, z, _, theta, eta, _, ok = jax.lax.while_loop(cond, body, init)
    return NewtonResult(z, ok, theta, eta, i)


def wants_new_jacobian(result: NewtonResult, settings: Newton):
    """Whether the Jacobian should be recomputed before the next step, after a Newton
    solve that used it: when the iteration failed, or needed more than two iterations
    at a contraction rate above `settings.jac_rate` (SciPy's rule; radau5.f also
    counts two-iteration solves, which on stiff problems recomputes it nearly every
    step); always when `jac_rate` is 0."""
    jac_rate = jnp.asarray(settings.jac_rate, result.rate.dtype)
    slow = (result.num_iters > 2) & (result.rate > jac_rate)
    return ~result.ok | (jac_rate <= 0) | slow


@eqx.filter_custom_jvp
def _implicit(fn, params, z0, solve, scale, settings, eta0):
    return newton(lambda z: fn(z, params), z0, solve, scale, settings, eta0)


@_implicit.def_jvp
def _implicit_jvp(primals, tangents):
    fn, params, z0, solve, scale, settings, eta0 = primals
    t_params = tangents[1]
    out = _implicit(fn, params, z0, solve, scale, settings, eta0)
    if t_params is None:
        return out, NewtonResult(None, None, None, None, None)
    # r(z*(p), p) = 0  =>  dz* = -(dr/dz)^-1 (dr/dp . dp), with dr/dz exact at z*
    # (the iteration matrix the iterations used may be stale: the derivative is that
    # of the solution, not of the iterations).
    z = out.z
    dr = eqx.filter_jvp(lambda p: fn(z, p), (params,), (t_params,))[1]
    drdz = jax.jacfwd(lambda x: fn(x, params))(z)
    dz = -jnp.linalg.solve(drdz, dr)
    return out, NewtonResult(dz, None, None, None, None)


def implicit_solve(fn, params, z0, solve, scale, settings: Newton, eta0) -> NewtonResult:
    """Solve `fn(z, params) = 0` for `z` by `newton` from `z0`.

    `fn` must be a function of its two arguments only (everything traced that it uses,
    e.g. the term, `args`, the step size, goes in `params`), and `solve` a PyTree
    callable (a `jax.tree_util.Partial` or an `equinox.Module`). The solution is
    differentiable w.r.t. `params` by the implicit function theorem, in forward and
    reverse mode and to any order; `z0`, `solve`, `scale` and `eta0` only steer the
    iterations and are not differentiated.
    """
    stop = jax.lax.stop_gradient
    return _implicit(fn, params, stop(z0), stop(solve), stop(scale), settings, stop(eta0))
