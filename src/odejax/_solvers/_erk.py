"""The explicit Runge-Kutta engine: one generic step driven by a `ButcherTableau`."""

from __future__ import annotations

from typing import ClassVar

import jax

from .._interpolation import LocalPolynomialInterpolation
from .._misc import cast_scalar, lincomb
from .._solution import RESULTS
from ._base import AbstractSolver
from ._tableau import ButcherTableau


class AbstractERK(AbstractSolver):
    """An explicit Runge-Kutta method defined by its `tableau` (a class attribute).

    To add a method, write its `ButcherTableau` and a small subclass:

    ```python
    class MyRK(odejax.AbstractERK):
        tableau = odejax.ButcherTableau(a=[[], [0.5]], b=[0.0, 1.0], c=[0.0, 0.5], order=2)
    ```

    Every method runs in FSAL form (see `ButcherTableau`): the solver state is
    `f(t0, y0)`, and each step ends with `f(t1, y1)`, which seeds the next step.
    """

    tableau: ClassVar[ButcherTableau]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        tab = cls.__dict__.get("tableau")
        if tab is not None:
            if not isinstance(tab, ButcherTableau):
                raise TypeError(f"{cls.__name__}.tableau must be a ButcherTableau.")
            a, c, _, b_error, b_dense = tab.fsal_form()
            cls._a, cls._c, cls._b_error, cls._b_dense = a, c, b_error, b_dense
            cls.fevals_per_step = a.shape[0] - 1
            cls.init_fevals = 1

    def order(self, terms) -> int:
        """The order of the method (from its tableau)."""
        return self.tableau.order

    def error_order(self, terms) -> int | None:
        """One more than the embedded order (the exponent the controller uses), or
        None without an error estimate."""
        tab = self.tableau
        return None if tab.b_error is None else tab.embedded_order + 1

    def init(self, terms, t0, t1, y0, args):
        return terms.vf(t0, y0, args)

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        a, c, b_error = self._a, self._c, self._b_error
        if made_jump is False:
            f0 = solver_state
        else:
            f0 = jax.lax.cond(made_jump, lambda: terms.vf(t0, y0, args), lambda: solver_state)
        h = t1 - t0
        ks = [f0]
        num_stages = a.shape[0]
        yi = y0
        for i in range(1, num_stages):
            yi = lincomb(y0, h, a[i, :i], ks)
            ti = t1 if i == num_stages - 1 else t0 + cast_scalar(c[i], h.dtype) * h
            ks.append(terms.vf(ti, yi, args))
        y1 = yi  # the last stage is evaluated at (t1, y1)
        y_error = None if b_error is None else lincomb(None, h, b_error, ks)
        # The interpolation is built from the stages only where it is used (saving
        # at `SaveAt.ts`, dense output): cheaper to compile than coefficients made
        # every step.
        dense_info = {"y0": y0, "ks": tuple(ks)}
        return y1, y_error, dense_info, ks[-1], RESULTS.successful

    def interpolation(self, t0, t1, dense_info):
        return LocalPolynomialInterpolation(
            t0, t1, dense_info["y0"], dense_info["ks"], self._b_dense, t1 - t0
        )
