"""ButcherTableau validation, and methods defined outside the library: a tableau and a
small AbstractERK subclass are all an extender needs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import odejax
from helpers import NL_Y0, fit_slope, nonlinear_exact, nonlinear_vf

# Classical RK4 (Kutta 1901): 4 stages, order 4, no embedded error estimate.
RK4 = dict(
    a=[[], [0.5], [0.0, 0.5], [0.0, 0.0, 1.0]],
    b=[1 / 6, 1 / 3, 1 / 3, 1 / 6],
    c=[0.0, 0.5, 0.5, 1.0],
    order=4,
)


def rk4_with(**changes):
    return {**RK4, **changes}


# ---- validation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (rk4_with(c=[0.0, 0.5, 0.4, 1.0]), r"`c_i`.*row"),
        (rk4_with(c=[0.1, 0.5, 0.5, 1.0]), r"`c\[0\]`"),
        (rk4_with(b=[1 / 6, 1 / 3, 1 / 3, 1 / 5]), r"`b` must sum to 1"),
        (
            rk4_with(a=np.array([[0, 0.1, 0, 0], [0.5, 0, 0, 0], [0, 0.5, 0, 0], [0, 0, 1, 0]])),
            r"`a`.*strictly lower triangular",
        ),
        (
            rk4_with(
                a=np.array([[0, 0, 0, 0], [0.5, 0, 0, 0], [0, 0.5, 0, 0], [0, 0, 0.5, 0.5]]),
                c=[0.0, 0.5, 0.5, 1.0],
            ),
            r"`a`.*strictly lower triangular",
        ),
        (rk4_with(c=[0.0, 0.5, 1.0]), r"`c` shape"),
        (rk4_with(b=[[1.0]]), r"`b`.*one-dimensional"),
        (rk4_with(b_error=[0.1, 0.0, 0.0, 0.0], embedded_order=3), r"`b_error` must sum to 0"),
        (rk4_with(b_error=[0.1, -0.1, 0.0], embedded_order=3), r"`b_error` must have shape"),
        (rk4_with(b_error=[0.1, -0.1, 0.0, 0.0]), r"`embedded_order`"),
        (rk4_with(b_dense=np.ones((4, 2)), dense_order=2), r"`b_dense`"),
        (rk4_with(b_dense=np.array([[1 / 6], [1 / 3], [1 / 3], [1 / 6]])), r"`dense_order`"),
        (rk4_with(order=0), r"`order`"),
    ],
    ids=[
        "c-not-row-sums",
        "c0-not-zero",
        "b-sum",
        "a-upper-entry",
        "a-diagonal-entry",
        "c-shape",
        "b-2d",
        "b_error-sum",
        "b_error-shape",
        "b_error-without-order",
        "b_dense-not-b-at-1",
        "b_dense-without-order",
        "order-zero",
    ],
)
def test_tableau_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        odejax.ButcherTableau(**kwargs)


def test_tableau_derived_properties():
    rk4 = odejax.ButcherTableau(**RK4)
    assert rk4.num_stages == 4
    assert not rk4.fsal
    assert rk4.interpolation_order == 3  # cubic Hermite by default
    # Bogacki-Shampine 3(2) is FSAL: derived from its coefficients, not declared.
    assert odejax.Bosh3.tableau.fsal
    assert odejax.Tsit5.tableau.fsal
    assert not odejax.Euler.tableau.fsal


def test_tableau_is_frozen():
    rk4 = odejax.ButcherTableau(**RK4)
    with pytest.raises(AttributeError):
        rk4.order = 5


def test_subclass_needs_a_butcher_tableau():
    with pytest.raises(TypeError, match="ButcherTableau"):

        class Bad(odejax.AbstractERK):
            tableau = RK4  # a dict, not a ButcherTableau


# ---- a user-defined method ---------------------------------------------------------------


class ClassicalRK4(odejax.AbstractERK):
    """Classical RK4, as a user outside the library would write it."""

    tableau = odejax.ButcherTableau(**RK4)


class HeunEuler(odejax.AbstractERK):
    """Heun's method with embedded Euler, written by a user: adaptive."""

    tableau = odejax.ButcherTableau(
        a=[[], [1.0]],
        b=[0.5, 0.5],
        c=[0.0, 1.0],
        order=2,
        b_error=[-0.5, 0.5],
        embedded_order=1,  # b - b_euler
    )


T1 = 1.0


@jax.jit
def _solve_rk4(dt0):
    sol = odejax.diffeqsolve(
        odejax.ODETerm(nonlinear_vf),
        ClassicalRK4(),
        0.0,
        T1,
        dt0,
        jnp.asarray(NL_Y0),
        saveat=odejax.SaveAt(t1=True, ts=jnp.array([0.37])),
        max_steps=256,
    )
    return sol.ys, sol.stats["num_steps"], sol.stats["num_fevals"]


def test_user_rk4_fourth_order():
    dts = [T1 / n for n in (8, 16, 32, 64, 128)]
    errors = []
    for dt in dts:  # dt0 is traced: one compile for every step size
        ys, steps, fevals = _solve_rk4(jnp.asarray(dt))
        n = round(T1 / dt)
        assert int(steps) == n
        # Run in FSAL form: 1 evaluation to start, then 4 per step (the 4th is f(t1, y1),
        # reused as the first stage of the next step).
        assert int(fevals) == 1 + 4 * n
        errors.append(float(np.max(np.abs(np.asarray(ys[-1]) - nonlinear_exact(T1)))))
    slope = fit_slope(dts, errors)
    assert abs(slope - 4) < 0.2, (slope, errors)
    # Its (default Hermite) dense output serves SaveAt(ts) too.
    ys, _, _ = _solve_rk4(jnp.asarray(T1 / 64))
    assert np.max(np.abs(np.asarray(ys[0]) - nonlinear_exact(0.37))) < 1e-7


def test_user_method_without_error_estimate_is_not_adaptive():
    assert ClassicalRK4().error_order(None) is None
    with pytest.raises(ValueError, match="ClassicalRK4.*error estimate"):
        odejax.diffeqsolve(
            odejax.ODETerm(nonlinear_vf),
            ClassicalRK4(),
            0.0,
            T1,
            0.1,
            jnp.asarray(NL_Y0),
            stepsize_controller=odejax.PIDController(rtol=1e-6, atol=1e-6),
        )


def test_user_embedded_method_is_adaptive():
    tol = 1e-6
    sol = odejax.diffeqsolve(
        odejax.ODETerm(nonlinear_vf),
        HeunEuler(),
        0.0,
        T1,
        None,
        jnp.asarray(NL_Y0),
        stepsize_controller=odejax.PIDController(rtol=tol, atol=tol),
        max_steps=4096,
    )
    assert HeunEuler().error_order(None) == 2
    assert np.max(np.abs(np.asarray(sol.ys[0]) - nonlinear_exact(T1))) < 100 * tol
    # The same tableau as the built-in Heun: the same steps, to rounding.
    builtin = odejax.diffeqsolve(
        odejax.ODETerm(nonlinear_vf),
        odejax.Heun(),
        0.0,
        T1,
        None,
        jnp.asarray(NL_Y0),
        stepsize_controller=odejax.PIDController(rtol=tol, atol=tol),
        max_steps=4096,
    )
    assert int(sol.stats["num_steps"]) == int(builtin.stats["num_steps"])
    np.testing.assert_allclose(sol.ys, builtin.ys, rtol=1e-13)
