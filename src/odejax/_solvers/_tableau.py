"""Butcher tableaux: the data that defines an explicit Runge-Kutta method."""

from __future__ import annotations

import dataclasses

import numpy as np


def _as_1d(x, name):
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"ButcherTableau: `{name}` must be one-dimensional, got shape {x.shape}.")
    return x


@dataclasses.dataclass(frozen=True, eq=False)
class ButcherTableau:
    """The coefficients of an explicit Runge-Kutta method.

    A method with `s` stages computes, for a step of size `h` from `(t0, y0)`,

    ```
    k_i = f(t0 + c_i h, y0 + h sum_{j<i} a_ij k_j),   i = 0..s-1   (c_0 = 0)
    y1  = y0 + h sum_i b_i k_i
    err = h sum_i b_error_i k_i                     (b_error = b - b_embedded)
    y(t0 + theta h) = y0 + h sum_i k_i sum_m b_dense[i, m] theta^(m + 1)
    ```

    **Arguments:**

    - `a`: the `(s, s)` strictly lower-triangular stage matrix (row `i` holds
      `a_i0 .. a_i(i-1)`). A list of rows of increasing length is accepted too.
    - `b`: the `s` weights of the solution.
    - `c`: the `s` nodes; `c[0]` must be 0 and each `c_i` must equal the row sum of `a`.
    - `order`: the order of the method.
    - `b_error`: optional `s` weights of the error estimate (`b - b_embedded`); they
      must sum to 0. Without them the method has no error estimate and can only be
      used with `ConstantStepSize`/`StepTo`.
    - `embedded_order`: the order of the embedded method (required with `b_error`).
    - `b_dense`: optional `(s, p)` matrix of the continuous extension
      `b_i(theta) = sum_m b_dense[i, m] theta^(m+1)`, with `b_i(1) = b_i`. Without it
      odejax uses the cubic Hermite interpolant through `y0, y1, f(t0, y0), f(t1, y1)`.
    - `dense_order`: the order of the continuous extension (3 for the Hermite default).

    Whether the method is FSAL (first same as last: the last stage is `f(t1, y1)`) is
    derived from the coefficients, never declared. odejax runs every method in FSAL
    form: `f(t1, y1)` becomes the first stage of the next step, so non-FSAL methods
    evaluate it at the end of the step instead of the start of the next one (the
    same count for accepted steps; one more on a rejected step).
    """

    a: np.ndarray
    b: np.ndarray
    c: np.ndarray
    order: int
    b_error: np.ndarray | None = None
    embedded_order: int | None = None
    b_dense: np.ndarray | None = None
    dense_order: int | None = None

    def __post_init__(self):
        b = _as_1d(self.b, "b")
        s = b.shape[0]
        c = _as_1d(self.c, "c")
        a = self.a
        if isinstance(a, (list, tuple)):
            full = np.zeros((s, s))
            for i, row in enumerate(a):
                row = np.asarray(row, dtype=np.float64)
                full[i, : row.shape[0]] = row
            a = full
        a = np.asarray(a, dtype=np.float64)
        if a.shape != (s, s) or c.shape != (s,):
            raise ValueError(
                f"ButcherTableau: `a` must have shape ({s}, {s}) and `c` shape ({s},) "
                f"to match `b`; got {a.shape} and {c.shape}."
            )
        if np.any(np.triu(a) != 0):
            raise ValueError(
                "ButcherTableau: `a` must be strictly lower triangular (explicit method)."
            )
        if c[0] != 0:
            raise ValueError("ButcherTableau: `c[0]` must be 0.")
        if not np.allclose(a.sum(axis=1), c, rtol=0, atol=1e-12):
            raise ValueError("ButcherTableau: each `c_i` must equal the sum of row i of `a`.")
        if not np.isclose(b.sum(), 1, rtol=0, atol=1e-12):
            raise ValueError(f"ButcherTableau: `b` must sum to 1, got {b.sum()!r}.")
        if int(self.order) < 1:
            raise ValueError("ButcherTableau: `order` must be a positive integer.")
        object.__setattr__(self, "a", a)
        object.__setattr__(self, "b", b)
        object.__setattr__(self, "c", c)
        if self.b_error is not None:
            b_error = _as_1d(self.b_error, "b_error")
            if b_error.shape != (s,):
                raise ValueError(f"ButcherTableau: `b_error` must have shape ({s},).")
            if not np.isclose(b_error.sum(), 0, rtol=0, atol=1e-12):
                raise ValueError(f"ButcherTableau: `b_error` must sum to 0, got {b_error.sum()!r}.")
            if self.embedded_order is None:
                raise ValueError("ButcherTableau: give `embedded_order` with `b_error`.")
            object.__setattr__(self, "b_error", b_error)
        if self.b_dense is not None:
            b_dense = np.asarray(self.b_dense, dtype=np.float64)
            if b_dense.ndim != 2 or b_dense.shape[0] != s:
                raise ValueError(f"ButcherTableau: `b_dense` must have shape ({s}, p).")
            if not np.allclose(b_dense.sum(axis=1), b, rtol=0, atol=1e-10):
                raise ValueError(
                    "ButcherTableau: the continuous extension must equal `b` at theta=1 "
                    "(rows of `b_dense` must sum to `b`)."
                )
            if self.dense_order is None:
                raise ValueError("ButcherTableau: give `dense_order` with `b_dense`.")
            object.__setattr__(self, "b_dense", b_dense)

    # ---- derived data -------------------------------------------------------------

    @property
    def num_stages(self) -> int:
        return self.b.shape[0]

    @property
    def fsal(self) -> bool:
        """The last stage is `f(t1, y1)`: its row of `a` equals `b` and its node is 1."""
        s = self.num_stages
        return (
            s > 1
            and self.c[-1] == 1
            and np.array_equal(self.a[-1, : s - 1], self.b[: s - 1])
            and self.b[-1] == 0
        )

    def fsal_form(self):
        """The tableau extended (if needed) so that its last stage is `f(t1, y1)`.

        Returns `(a, c, b, b_error, b_dense)` as NumPy arrays over the extended stages,
        where `b_dense` is the method's own continuous extension or the cubic Hermite
        interpolant written in the same form.
        """
        a, b, c = self.a, self.b, self.c
        b_error = self.b_error
        b_dense = self.b_dense
        if not self.fsal:
            s = self.num_stages
            a_ext = np.zeros((s + 1, s + 1))
            a_ext[:s, :s] = a
            a_ext[s, :s] = b
            a, c = a_ext, np.append(c, 1.0)
            b = np.append(b, 0.0)
            if b_error is not None:
                b_error = np.append(b_error, 0.0)
            if b_dense is not None:
                b_dense = np.concatenate([b_dense, np.zeros((1, b_dense.shape[1]))])
        if b_dense is None:
            # Cubic Hermite through y0, y1 = y0 + h sum b_i k_i, f0 = k_0, f1 = k_last:
            # y(theta) = y0 + h[theta f0 + theta^2 (3 sum b k - 2 f0 - f1)
            #                  + theta^3 (-2 sum b k + f0 + f1)]
            e0 = np.zeros_like(b)
            e0[0] = 1.0
            e1 = np.zeros_like(b)
            e1[-1] = 1.0
            b_dense = np.stack([e0, 3 * b - 2 * e0 - e1, -2 * b + e0 + e1], axis=1)
        return a, c, b, b_error, b_dense

    @property
    def interpolation_order(self) -> int:
        return 3 if self.b_dense is None else int(self.dense_order)
