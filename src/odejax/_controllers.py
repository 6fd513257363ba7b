"""Step-size controllers: `ConstantStepSize`, `StepTo`, `PIDController`,
`ClipStepSizeController`.

All controllers work in the solver's internal time, which always increases (a
backward solve is run in `tau = -t`; `diffeqsolve` converts `StepTo.ts`,
`step_ts` and `jump_ts` for it).
"""

from __future__ import annotations

import abc
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp

from ._misc import cast_scalar, nextafter, widest
from ._solution import RESULTS


def rms_norm(x):
    """The root-mean-square norm of a PyTree of arrays (complex values by modulus),
    with a zero (not NaN) derivative at 0."""
    leaves = jax.tree.leaves(x)
    if not leaves:
        return jnp.asarray(0.0)
    size = sum(leaf.size for leaf in leaves)
    sums = [jnp.sum(jnp.real(leaf * jnp.conj(leaf))) for leaf in leaves]
    dtype = widest(s.dtype for s in sums)  # leaves may mix float32/float64
    sumsq = sum(s.astype(dtype) for s in sums)
    safe = jnp.where(sumsq == 0, 1, sumsq)
    return jnp.where(sumsq == 0, 0, jnp.sqrt(safe / size))


def max_norm(x):
    """The maximum absolute value over a PyTree of arrays."""
    leaves = jax.tree.leaves(x)
    if not leaves:
        return jnp.asarray(0.0)
    maxes = [jnp.max(jnp.abs(leaf)) for leaf in leaves]
    dtype = widest(m.dtype for m in maxes)
    return jnp.max(jnp.stack([m.astype(dtype) for m in maxes]))


class AbstractStepSizeController(eqx.Module):
    """Base class of step-size controllers.

    Contract with the loop:

    - `init(t0, t1, y0, dt0, args, func, f0, error_order) -> (tnext, state)` gives the
      end of the first step (`func(t, y)` evaluates the vector field; `f0` is its
      value at `(t0, y0)`).
    - `adapt_step_size(t0, t1, y0, y1, args, y_error, error_order, state)` returns
      `(keep_step, next_t0, next_t1, made_jump, state, result)`: whether to accept
      the step just taken, the next step's interval (from `t1` if accepted, else from
      `t0`), whether the next step starts at a discontinuity, the new state, and a
      result code (non-successful ends the solve). The loop clips `next_t1` to the
      end of the interval.
    """

    @property
    def adaptive(self) -> bool:
        """Whether this controller needs an error estimate from the solver."""
        return False

    @property
    def never_rejects(self) -> bool:
        """True if every step is accepted (lets the loop skip the reject branch)."""
        return False

    @property
    def may_jump(self) -> bool:
        """True if `made_jump` can ever be True."""
        return False

    def to_internal(self, direction):
        """This controller in internal time `direction * t`."""
        return self

    @abc.abstractmethod
    def init(self, t0, t1, y0, dt0, args, func, f0, error_order): ...

    @abc.abstractmethod
    def adapt_step_size(self, t0, t1, y0, y1, args, y_error, error_order, state): ...


class ConstantStepSize(AbstractStepSizeController):
    """Steps of the fixed size `dt0` (the last step is shortened to end at `t1`).

    ```python
    import jax.numpy as jnp, odejax
    term = odejax.ODETerm(lambda t, y, args: -y)
    sol = odejax.diffeqsolve(term, odejax.Euler(), 0.0, 1.0, 0.01, jnp.ones(2),
                             stepsize_controller=odejax.ConstantStepSize())
    ```
    """

    @property
    def never_rejects(self):
        return True

    def init(self, t0, t1, y0, dt0, args, func, f0, error_order):
        dt0 = jnp.asarray(dt0, t0.dtype)
        # Step k ends at t0 + k dt0, computed afresh (not by adding dt0 k times): the
        # steps do not drift, so N steps of (t1 - t0) / N end on t1, not a rounding
        # error short of it with a sliver of a step left.
        return t0 + dt0, (t0, dt0, jnp.asarray(1, jnp.int32))

    def adapt_step_size(self, t0, t1, y0, y1, args, y_error, error_order, state):
        origin, dt, k = state
        k = k + 1
        end = origin + k.astype(dt.dtype) * dt
        # Off the grid (a solve continued with this state from elsewhere): restart it.
        stale = (end <= t1) | (end > t1 + 2 * dt)
        origin = jnp.where(stale, t1, origin)
        k = jnp.where(stale, 1, k)
        end = jnp.where(stale, t1 + dt, end)
        return True, t1, end, False, (origin, dt, k), RESULTS.successful


class StepTo(AbstractStepSizeController):
    """Steps exactly to the times `ts` (which must start at `t0` and end at `t1`);
    pass `dt0=None`.

    ```python
    import jax.numpy as jnp, odejax
    ctrl = odejax.StepTo(ts=jnp.linspace(0.0, 1.0, 101))
    sol = odejax.diffeqsolve(odejax.ODETerm(lambda t, y, args: -y), odejax.Tsit5(),
                             0.0, 1.0, None, jnp.ones(2), stepsize_controller=ctrl)
    ```
    """

    ts: jax.Array = eqx.field(converter=jnp.asarray)

    def __check_init__(self):
        if self.ts.ndim != 1 or self.ts.shape[0] < 2:
            raise ValueError("StepTo: `ts` must be a one-dimensional array of at least two times.")

    @property
    def never_rejects(self):
        return True

    def to_internal(self, direction):
        return StepTo(self.ts * direction)

    def init(self, t0, t1, y0, dt0, args, func, f0, error_order):
        ts = self.ts.astype(t0.dtype)
        return ts[1], jnp.asarray(2, jnp.int32)

    def adapt_step_size(self, t0, t1, y0, y1, args, y_error, error_order, state):
        ts = self.ts.astype(t1.dtype)
        idx = jnp.minimum(state, ts.shape[0] - 1)
        return True, t1, ts[idx], False, state + 1, RESULTS.successful


class PIDController(AbstractStepSizeController):
    """Adaptive step sizes from the embedded error estimate (a PID controller on the
    scaled error, Söderlind 2003; with the defaults it is the classical I controller
    of Hairer, Nørsett & Wanner).

    A step is accepted when `norm(y_error / (atol + rtol * max(|y0|, |y1|))) <= 1`;
    the next step is `dt * clip(safety * e_n^(-beta1) e_(n-1)^(-beta2) e_(n-2)^(-beta3),
    factormin, factormax)` with `beta1 = (pcoeff + icoeff + dcoeff) / k`,
    `beta2 = -(pcoeff + 2 dcoeff) / k`, `beta3 = dcoeff / k` and `k` the error order
    (the solver's, unless `error_order` is given). After a rejection the step never
    grows. With `dt0=None` the first step is chosen by Hairer & Wanner's algorithm
    (Solving ODEs I, II.4).

    **Arguments:**

    - `rtol`, `atol`: relative and absolute tolerances (scalars).
    - `pcoeff=0`, `icoeff=1`, `dcoeff=0`: the PID coefficients.
    - `dtmin`, `dtmax`: bounds on the step size (None for no bound).
    - `force_dtmin=True`: at `dtmin`, accept the step anyway; with False the solve
      ends with `RESULTS.dt_min_reached`.
    - `factormin=0.2`, `factormax=10.0`: bounds on the factor by which the step
      changes; `safety=0.9`.
    - `error_order=None`: override the solver's error order.
    - `norm=rms_norm`: the norm of the scaled error (`rms_norm` or `max_norm`, or any
      function of a PyTree returning a scalar).

    ```python
    import jax.numpy as jnp, odejax
    ctrl = odejax.PIDController(rtol=1e-6, atol=1e-8)
    sol = odejax.diffeqsolve(odejax.ODETerm(lambda t, y, args: -y), odejax.Tsit5(),
                             0.0, 1.0, None, jnp.ones(2), stepsize_controller=ctrl)
    ```
    """

    rtol: float | jax.Array
    atol: float | jax.Array
    pcoeff: float | jax.Array = 0.0
    icoeff: float | jax.Array = 1.0
    dcoeff: float | jax.Array = 0.0
    dtmin: float | jax.Array | None = None
    dtmax: float | jax.Array | None = None
    force_dtmin: bool = eqx.field(default=True, static=True)
    factormin: float | jax.Array = 0.2
    factormax: float | jax.Array = 10.0
    safety: float | jax.Array = 0.9
    error_order: int | None = eqx.field(default=None, static=True)
    norm: Callable = rms_norm

    def __check_init__(self):
        for name in ("rtol", "atol", "dtmin", "dtmax", "factormax", "safety"):
            value = getattr(self, name)
            if value is None or isinstance(value, jax.core.Tracer):
                continue
            try:
                v = float(value)
            except TypeError:
                continue
            if v < 0 or (name in ("factormax", "safety") and v <= 0):
                raise ValueError(f"PIDController: `{name}` must be positive, got {v}.")

    @property
    def adaptive(self):
        return True

    def _error_order(self, error_order):
        return self.error_order if self.error_order is not None else error_order

    def _tolerance(self, magnitude):
        """`atol + rtol * magnitude`, in the state's precision (a float64 rtol with a
        float32 state must not promote, nor fail under strict promotion)."""
        dtype = magnitude.dtype
        return cast_scalar(self.atol, dtype) + cast_scalar(self.rtol, dtype) * magnitude

    def _scaled_error(self, y0, y1, y_error):
        def leaf(e, a, b):
            scale = self._tolerance(jnp.maximum(jnp.abs(a), jnp.abs(b)))
            return e / scale.astype(e.dtype)

        return self.norm(jax.tree.map(leaf, y_error, y0, y1))

    def init(self, t0, t1, y0, dt0, args, func, f0, error_order):
        state = (jnp.ones((), t0.dtype), jnp.ones((), t0.dtype))
        if dt0 is not None:
            return t0 + self._clamp(jnp.asarray(dt0, t0.dtype)), state
        # Hairer, Nørsett & Wanner, Solving ODEs I, Section II.4 (starting step size).
        k = self._error_order(error_order)

        def scaled(x):
            def leaf(v, y):
                return v / self._tolerance(jnp.abs(y)).astype(v.dtype)

            return self.norm(jax.tree.map(leaf, x, y0)).astype(t0.dtype)

        d0, d1 = scaled(y0), scaled(f0)
        small = (d0 < 1e-5) | (d1 < 1e-5)
        h0 = jnp.where(small, 1e-6, 0.01 * d0 / jnp.where(small, 1, d1)).astype(t0.dtype)
        y_probe = jax.tree.map(lambda y, f: y + cast_scalar(h0, f.dtype) * f, y0, f0)
        f_probe = func(t0 + h0, y_probe)
        d2 = scaled(jax.tree.map(lambda a, b: a - b, f_probe, f0)) / h0
        dmax = jnp.maximum(d1, d2).astype(t0.dtype)
        h1 = jnp.where(
            dmax <= 1e-15,
            jnp.maximum(1e-6, h0 * 1e-3),
            (0.01 / jnp.where(dmax <= 1e-15, 1, dmax)) ** (1.0 / k),
        )
        dt = jnp.minimum(100 * h0, h1).astype(t0.dtype)
        # Never below the resolution of time at t0 (a zero-length first step).
        dt = jnp.maximum(dt, 8 * jnp.finfo(t0.dtype).eps * jnp.abs(t0))
        # Not differentiated through, like the later step sizes (see adapt_step_size).
        return t0 + self._clamp(jax.lax.stop_gradient(dt)), state

    def _clamp(self, dt):
        """`dt` within [dtmin, dtmax] (where given)."""
        if self.dtmax is not None:
            dt = jnp.minimum(dt, self.dtmax)
        if self.dtmin is not None:
            dt = jnp.maximum(dt, self.dtmin)
        return dt

    def adapt_step_size(self, t0, t1, y0, y1, args, y_error, error_order, state):
        prev_inv, prev_prev_inv = state
        tdtype = t0.dtype
        k = self._error_order(error_order)
        err = self._scaled_error(y0, y1, y_error).astype(tdtype)
        finite = jnp.isfinite(err)
        dt = t1 - t0
        keep = err <= 1
        at_dtmin = None
        if self.dtmin is not None and self.force_dtmin:
            at_dtmin = dt <= self.dtmin * (1 + 4 * jnp.finfo(tdtype).eps)
            keep = keep | (at_dtmin & finite)
        inv = jnp.where(err == 0, jnp.inf, 1 / jnp.where(err == 0, 1, err))
        beta1 = (self.pcoeff + self.icoeff + self.dcoeff) / k
        beta2 = -(self.pcoeff + 2 * self.dcoeff) / k
        beta3 = self.dcoeff / k
        factor = self.safety * inv**beta1
        if not (isinstance(beta2, (int, float)) and beta2 == 0):
            factor = factor * prev_inv**beta2
        if not (isinstance(beta3, (int, float)) and beta3 == 0):
            factor = factor * prev_prev_inv**beta3
        factor = jnp.where(finite & ~jnp.isnan(factor), factor, self.factormin)
        factormax = jnp.where(keep, self.factormax, 1.0)
        factor = jnp.clip(factor, self.factormin, factormax).astype(tdtype)
        # Step sizes are not differentiated through (as in diffrax and torchdiffeq):
        # the derivative of the solution with respect to where the controller puts the
        # steps is an artefact of the discretisation, and can dwarf the derivative of
        # the solution itself (it made neural-ODE training fail). The gradient is that
        # of the discrete solve with the steps it took held fixed.
        new_dt = dt * jax.lax.stop_gradient(factor)
        if self.dtmax is not None:
            new_dt = jnp.minimum(new_dt, self.dtmax)
        result = RESULTS.successful
        if self.dtmin is not None:
            if self.force_dtmin:
                new_dt = jnp.maximum(new_dt, self.dtmin)
            else:
                result = jnp.where(new_dt < self.dtmin, RESULTS.dt_min_reached, RESULTS.successful)
        next_t0 = jnp.where(keep, t1, t0)
        next_t1 = next_t0 + new_dt.astype(tdtype)
        state = (
            jnp.where(keep, inv, prev_inv).astype(tdtype),
            jnp.where(keep, prev_inv, prev_prev_inv).astype(tdtype),
        )
        return keep, next_t0, next_t1, False, state, result


def _next_in(ts, t):
    """The first entry of sorted `ts` strictly after `t` (inf if none)."""
    idx = jnp.searchsorted(ts, t, side="right")
    return jnp.where(idx < ts.shape[0], ts[jnp.minimum(idx, ts.shape[0] - 1)], jnp.inf)


class ClipStepSizeController(AbstractStepSizeController):
    """Wraps a controller so that no step crosses a time in `step_ts` or `jump_ts`.

    `step_ts`: times at which a step must end (e.g. where the vector field changes
    quickly). `jump_ts`: times where the vector field is discontinuous; a step ends
    exactly there and the next step re-evaluates the vector field (FSAL is restarted).

    ```python
    import jax.numpy as jnp, odejax
    ctrl = odejax.ClipStepSizeController(odejax.PIDController(rtol=1e-6, atol=1e-8),
                                         jump_ts=jnp.array([1.0]))
    f = lambda t, y, args: jnp.where(t < 1.0, -y, y)  # discontinuous at t = 1
    sol = odejax.diffeqsolve(odejax.ODETerm(f), odejax.Tsit5(), 0.0, 2.0, None,
                             jnp.ones(2), stepsize_controller=ctrl)
    ```
    """

    controller: AbstractStepSizeController
    step_ts: jax.Array | None = None
    jump_ts: jax.Array | None = None

    def __check_init__(self):
        for name in ("step_ts", "jump_ts"):
            value = getattr(self, name)
            if value is not None and jnp.ndim(value) != 1:
                raise ValueError(f"ClipStepSizeController: `{name}` must be a 1-d array of times.")

    @property
    def adaptive(self):
        return self.controller.adaptive

    @property
    def never_rejects(self):
        return self.controller.never_rejects

    @property
    def may_jump(self):
        return self.jump_ts is not None or self.controller.may_jump

    def to_internal(self, direction):
        def conv(ts):
            return None if ts is None else jnp.sort(jnp.asarray(ts) * direction)

        return ClipStepSizeController(
            self.controller.to_internal(direction), conv(self.step_ts), conv(self.jump_ts)
        )

    def _clip(self, t0, t1):
        """Clip the step `[t0, t1]` to the first step/jump time inside it. A step that
        meets a jump ends one ULP before it, so that no stage sees the far side of the
        discontinuity; the next step starts one ULP after it (see `adapt_step_size`)."""
        if self.step_ts is not None:
            t1 = jnp.minimum(t1, _next_in(self.step_ts.astype(t0.dtype), t0))
        if self.jump_ts is not None:
            t1 = jnp.minimum(t1, jnp.maximum(self._before_jump(t0), t0))
        return t1

    def _before_jump(self, t0):
        """One ULP before the first jump time after `t0` (inf if none)."""
        tj = _next_in(self.jump_ts.astype(t0.dtype), t0)
        return nextafter(tj, jnp.asarray(-jnp.inf, tj.dtype))

    def init(self, t0, t1, y0, dt0, args, func, f0, error_order):
        tnext, state = self.controller.init(t0, t1, y0, dt0, args, func, f0, error_order)
        return self._clip(t0, tnext), state

    def adapt_step_size(self, t0, t1, y0, y1, args, y_error, error_order, state):
        keep, next_t0, next_t1, made_jump, state, result = self.controller.adapt_step_size(
            t0, t1, y0, y1, args, y_error, error_order, state
        )
        if self.jump_ts is not None:
            # Whether the step ended at a jump is read off the times (no state to keep
            # in sync): then step over it, from one ULP before to one ULP after.
            jumped = keep & (t1 >= self._before_jump(t0))
            inf = jnp.asarray(jnp.inf, next_t0.dtype)
            after = nextafter(nextafter(next_t0, inf), inf)
            next_t1 = jnp.where(jumped, next_t1 + (after - next_t0), next_t1)
            next_t0 = jnp.where(jumped, after, next_t0)
            made_jump = jumped | made_jump
        return keep, next_t0, self._clip(next_t0, next_t1), made_jump, state, result
