"""The built-in explicit Runge-Kutta methods: each is its tableau plus a name."""

from __future__ import annotations

from . import _tableaux as tab
from ._erk import AbstractERK


class Euler(AbstractERK):
    """The explicit Euler method. Order 1, 1 stage, no error estimate (use with
    `ConstantStepSize`/`StepTo`); cubic Hermite dense output."""

    tableau = tab.EULER


class Heun(AbstractERK):
    """Heun's method (explicit trapezoidal rule). Order 2 with embedded Euler (1),
    2 stages; cubic Hermite dense output. Not for stiff problems."""

    tableau = tab.HEUN


class Midpoint(AbstractERK):
    """The explicit midpoint method. Order 2 with embedded Euler (1), 2 stages;
    cubic Hermite dense output."""

    tableau = tab.MIDPOINT


class Ralston(AbstractERK):
    """Ralston's second-order method (minimum truncation error among 2-stage order-2
    methods; Ralston 1962). Order 2 with embedded Euler (1), 2 stages; cubic Hermite
    dense output."""

    tableau = tab.RALSTON


class Bosh3(AbstractERK):
    """The Bogacki-Shampine 3(2) method (Bogacki & Shampine 1989; MATLAB's ode23).
    Order 3, embedded order 2, 4 stages, FSAL; cubic Hermite dense output."""

    tableau = tab.BOSH3


class Tsit5(AbstractERK):
    """Tsitouras' 5(4) method (Tsitouras 2011). Order 5, embedded order 4, 7 stages,
    FSAL; its own 4th-order continuous extension. A good default for non-stiff
    problems.

    ```python
    import jax.numpy as jnp, odejax
    term = odejax.ODETerm(lambda t, y, args: -y)
    sol = odejax.diffeqsolve(term, odejax.Tsit5(), 0.0, 1.0, None, jnp.ones(2),
                             stepsize_controller=odejax.PIDController(rtol=1e-6, atol=1e-8))
    ```
    """

    tableau = tab.TSIT5


class Dopri5(AbstractERK):
    """The Dormand-Prince 5(4) method (Dormand & Prince 1980; Shampine 1986; the
    DOPRI5 of Hairer, Nørsett & Wanner). Order 5, embedded order 4, 7 stages, FSAL;
    4th-order dense output."""

    tableau = tab.DOPRI5


class Dopri8(AbstractERK):
    """The Dormand-Prince 8(7) method (RK8(7)13M, Prince & Dormand 1981). Order 8,
    embedded order 7, 13 stages plus FSAL. Dense output: the continuous extension
    that diffrax uses (from the same 14 stages), which satisfies the order conditions
    up to order 5 only (its local error is O(h^6)): a 7th-order interpolant needs
    extra stages and is not implemented yet. For tight tolerances on smooth
    problems."""

    tableau = tab.DOPRI8
