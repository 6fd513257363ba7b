"""RecursiveCheckpointAdjoint's checkpointing: the level plan, the same exact gradient
whatever the number of checkpoints (also of every saved output kind, under vmap, and
forward-over-reverse), and memory that grows with the checkpoints, not the steps."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import odejax
from helpers import LV_P, LV_Y0, lv_vf
from odejax._adjoints._checkpoint import checkpoint_levels

P, Y0 = LV_P, LV_Y0
TS = jnp.linspace(0.0, 6.0, 13)
MAX_STEPS = 256


# ---- the plan ------------------------------------------------------------------------


@pytest.mark.parametrize("max_steps", [1, 2, 7, 64, 65, 256, 1000, 4096, 10**5, 10**6])
@pytest.mark.parametrize("checkpoints", [None, 1, 8, 16, 40, 100, 10**6])
def test_levels_cover_max_steps_within_the_checkpoints(max_steps, checkpoints):
    try:
        sizes = checkpoint_levels(max_steps, checkpoints)
    except ValueError as e:
        assert checkpoints is not None and f"checkpoints={checkpoints}" in str(e)
        # Too few for even the deepest plan (levels of 2): about 2 * log2(max_steps).
        assert checkpoints < 2 * np.log2(max_steps) + 4
        return
    if len(sizes) == 1:
        assert sizes == (max_steps,)  # every state stored: nothing recomputed
    else:
        # Level 0 keeps s_0 states at a doubling stride: its segments are at most
        # K_max steps, the least power of two with s_0 * K_max >= max_steps...
        k_max = 1
        while sizes[0] * k_max < max_steps:
            k_max *= 2
        # ...and the static levels below cover such a segment.
        assert np.prod(sizes[1:], dtype=object) >= k_max
    if checkpoints is not None:
        assert sum(sizes) <= max(checkpoints, 1) or sizes == (max_steps,)
        if checkpoints >= max_steps:
            assert sizes == (max_steps,)
    else:
        assert len(sizes) <= 2  # the default costs at most one recomputation
        assert sum(sizes) <= max(max_steps if max_steps <= 64 else 0, 3 * np.sqrt(max_steps))


def test_bad_checkpoints_are_rejected_before_tracing():
    with pytest.raises(ValueError, match="positive int"):
        odejax.RecursiveCheckpointAdjoint(checkpoints=0)
    with pytest.raises(ValueError, match="too few"):
        odejax.diffeqsolve(
            odejax.ODETerm(lv_vf),
            odejax.Tsit5(),
            0.0,
            1.0,
            0.1,
            Y0,
            P,
            max_steps=10**4,
            adjoint=odejax.RecursiveCheckpointAdjoint(checkpoints=5),
        )


# ---- one exact gradient, whatever the checkpoints ------------------------------------


PID = odejax.PIDController(rtol=1e-6, atol=1e-6)


def _solve(y0, p, adjoint, controller=PID, saveat=None):
    return odejax.diffeqsolve(
        odejax.ODETerm(lv_vf),
        odejax.Tsit5(),
        0.0,
        6.0,
        0.05,
        y0,
        p,
        saveat=saveat or odejax.SaveAt(t1=True),
        stepsize_controller=controller,
        max_steps=MAX_STEPS,
        adjoint=adjoint,
    )


def _adjoint(checkpoints):
    """RecursiveCheckpointAdjoint(checkpoints), or DirectAdjoint (the reference) for 0."""
    if checkpoints == 0:
        return odejax.DirectAdjoint()
    return odejax.RecursiveCheckpointAdjoint(checkpoints=checkpoints)


def _loss(y0, p, adjoint):
    """Every kind of output at once: saved times, every step, dense output off-grid."""
    subs = [odejax.SubSaveAt(ts=TS), odejax.SubSaveAt(steps=True)]
    sol = _solve(y0, p, adjoint, saveat=odejax.SaveAt(subs=subs, dense=True))
    at_ts, at_steps = sol.ys
    steps = jnp.where(jnp.isfinite(at_steps), at_steps, 0.0)
    off_grid = sol.evaluate(jnp.asarray(2.345)) + sol.derivative(jnp.asarray(4.321))
    return jnp.sum((at_ts - 1) ** 2) + 1e-3 * jnp.sum(steps**2) + jnp.sum(off_grid**2)


_grad = jax.jit(jax.grad(_loss, argnums=(0, 1)), static_argnums=2)

# None: two levels (16 + 16 states); 16: four levels of 4; MAX_STEPS: every state.
CHECKPOINTS = [None, 16, MAX_STEPS]


@functools.cache
def _direct():
    return np.concatenate(_grad(Y0, P, odejax.DirectAdjoint()))


@pytest.mark.parametrize("checkpoints", CHECKPOINTS, ids=lambda c: f"checkpoints={c}")
def test_gradient_equals_direct_adjoint_to_rounding(checkpoints):
    adjoint = odejax.RecursiveCheckpointAdjoint(checkpoints=checkpoints)
    got = np.concatenate(_grad(Y0, P, adjoint))
    np.testing.assert_allclose(got, _direct(), rtol=1e-11, atol=1e-13)
    # The solve takes enough steps that every level is used.
    assert int(_solve(Y0, P, adjoint).stats["num_steps"]) > 16


def _final_y(y0, p, checkpoints):
    return jnp.sum(_solve(y0, p, _adjoint(checkpoints)).ys[-1] ** 2)


def test_gradient_matches_finite_differences():
    got = jax.jit(jax.grad(_final_y, argnums=1), static_argnums=2)(Y0, P, 16)
    f = jax.jit(_final_y, static_argnums=2)
    eps = 1e-6
    fd = np.array(
        [(f(Y0, P + eps * e, 16) - f(Y0, P - eps * e, 16)) / (2 * eps) for e in np.eye(4)]
    )
    # Finite differences also see the controller move the steps: agreement to the
    # solver tolerance, not to rounding.
    np.testing.assert_allclose(got, fd, rtol=1e-4, atol=1e-7)


def test_vmap_of_grad_with_different_steps_per_element():
    # Initial conditions far apart take different numbers of steps; the batch runs
    # until the last one finishes, and each element's gradient is its own.
    y0s = jnp.array([[0.1, 0.2], [0.5, 0.1], [0.05, 0.4]])
    grad = jax.grad(_final_y, argnums=(0, 1))
    batched = jax.jit(jax.vmap(grad, in_axes=(0, None, None)), static_argnums=2)(y0s, P, 16)
    for i in range(3):
        one = jax.jit(grad, static_argnums=2)(y0s[i], P, 0)
        np.testing.assert_allclose(batched[0][i], one[0], rtol=1e-11, atol=1e-14)
        np.testing.assert_allclose(batched[1][i], one[1], rtol=1e-11, atol=1e-14)


def _final_y_constant_steps(p, checkpoints):
    # Constant steps: the discrete solution is a smooth function of p, so that finite
    # differences of its gradient approach the Hessian-vector product.
    sol = _solve(Y0, p, _adjoint(checkpoints), controller=odejax.ConstantStepSize())
    return jnp.sum(sol.ys[-1] ** 2)


def test_hessian_vector_product_through_three_levels():
    # Forward-over-reverse through the whole checkpointed backward pass (checkpoints=20
    # for 120 steps of max_steps=256: three levels, 4 + 8 + 8).
    assert len(checkpoint_levels(MAX_STEPS, 20)) == 3
    v = jnp.array([0.3, -0.2, 1.0, 0.5])

    def grad(checkpoints):
        return jax.grad(lambda p: _final_y_constant_steps(p, checkpoints))

    def hvp(checkpoints):
        return jax.jit(lambda p: jax.jvp(grad(checkpoints), (p,), (v,))[1])(P)

    direct, rca = hvp(0), hvp(20)
    np.testing.assert_allclose(rca, direct, rtol=1e-10, atol=1e-13)
    g = jax.jit(grad(20))
    eps = 1e-5
    fd = (g(P + eps * v) - g(P - eps * v)) / (2 * eps)
    np.testing.assert_allclose(rca, fd, rtol=1e-6, atol=1e-6)


# ---- memory grows with the checkpoints, not the steps --------------------------------


def _temp_bytes(checkpoints, max_steps, n=2000):
    def loss(y0):
        sol = odejax.diffeqsolve(
            odejax.ODETerm(lambda t, y, a: -a * jnp.sin(y)),
            odejax.Tsit5(),
            0.0,
            1.0,
            1.0 / max_steps,
            y0,
            1.0,
            max_steps=max_steps,
            adjoint=odejax.RecursiveCheckpointAdjoint(checkpoints=checkpoints),
        )
        return jnp.sum(sol.ys**2)

    y0 = jnp.ones(n)
    compiled = jax.jit(jax.grad(loss)).lower(y0).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def test_backward_pass_memory_is_linear_in_the_checkpoints_not_the_steps():
    # A stored state of Tsit5 is y and f(t, y): 2 vectors of 2000 float64.
    state = 2 * 2000 * 8
    stored = {k: sum(checkpoint_levels(2**14, k)) for k in (40, 400)}  # 35 and 256
    few, more = _temp_bytes(40, 2**14), _temp_bytes(400, 2**14)
    longer = _temp_bytes(40, 2**16)
    # The stored states plus a few for the step itself...
    assert few < (stored[40] + 30) * state, few / state
    assert more < (stored[400] + 30) * state, more / state
    # ...each stored state costing its size...
    assert more - few > 0.9 * (stored[400] - stored[40]) * state, (more - few) / state
    # ...and not growing with the number of steps (max_steps 2**16 states would be 2 GB).
    assert longer < (sum(checkpoint_levels(2**16, 40)) + 30) * state, longer / state
