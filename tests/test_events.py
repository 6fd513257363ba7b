"""Events (`diffeqsolve(..., event=odejax.Event(cond_fn, root_finder, direction))`):
the solve stops at the zero crossing of a float condition (found by root finding on
the step's dense output) or at the end of the first step after which a bool
condition holds; the earliest of several conditions wins, whatever their order in
the PyTree; `direction` filters up- and down-crossings; the event time and the state
at it are differentiable (implicit function theorem) with every adjoint that
supports it; jit, vmap, float32; `steady_state_event`.

Most tests drop a ball: y = (height, velocity), y' = (v, -g), from height h at rest,
so height(t) = h - g t^2 / 2 and the ground is reached at t* = sqrt(2 h / g) with
velocity -sqrt(2 g h). The trajectory is a quadratic in t, which Tsit5 (order 5) and
its order-4 dense output reproduce to rounding, whatever the step: the only error in
the event time is the root finder's. With root-finder tolerances of 1e-12 (on a time
of order 1), t* is right to 1e-10 and its derivatives (implicit function theorem on
the exact interpolant) to 1e-8, whatever the step-size controller; the
PIDController's 1e-10 only keeps the steps few. The harmonic oscillator (sin t, not
a polynomial) checks the crossing times where the dense output is not exact.
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import odejax

G = 9.81
H = 10.0
PID = odejax.PIDController(rtol=1e-10, atol=1e-10)
TIGHT = odejax.RootFinder(rtol=1e-12, atol=1e-12)
RCA = odejax.RecursiveCheckpointAdjoint()
MAX_STEPS = 256
AT_T1 = odejax.SaveAt(t1=True)


def t_ground(h, g=G, level=0.0):
    return math.sqrt(2 * (h - level) / g)


# ---- the falling ball -----------------------------------------------------------------


def fall(t, y, args):
    g = args[0]
    return jnp.stack([y[1], -g])


# args = (g, level, tmax)
def height(t, y, args, **kwargs):
    return y[0]


def above_level(t, y, args, **kwargs):
    return y[0] - args[1]


def timer(t, y, args, **kwargs):
    return t - args[2]


def above(level):
    def cond(t, y, args, **kwargs):
        return y[0] - level

    cond.__name__ = f"above_{level}"
    return cond


ABOVE_3, ABOVE_5 = above(3.0), above(5.0)


def below_5(t, y, args, **kwargs):
    return y[0] < 5.0


def drop(
    h,
    g=G,
    level=0.0,
    tmax=np.inf,
    *,
    event,
    adjoint=RCA,
    saveat=AT_T1,
    controller=PID,
    dt0=None,
    t0=0.0,
    t1=10.0,
    throw=True,
    tdtype=None,
):
    h = jnp.asarray(h)
    dtype = h.dtype
    tdtype = tdtype or (np.float32 if dtype == jnp.float32 else np.float64)
    y0 = jnp.stack([h, jnp.zeros_like(h)])
    args = tuple(jnp.asarray(a, dtype) for a in (g, level, tmax))
    return odejax.diffeqsolve(
        odejax.ODETerm(fall),
        odejax.Tsit5(),
        t0 if isinstance(t0, jax.Array) else tdtype(t0),
        tdtype(t1),
        None if dt0 is None else tdtype(dt0),
        y0,
        args,
        saveat=saveat,
        stepsize_controller=controller,
        adjoint=adjoint,
        event=event,
        max_steps=MAX_STEPS,
        throw=throw,
    )


drop_jit = eqx.filter_jit(drop)


def is_event(result):
    return np.asarray(result == odejax.RESULTS.event_occurred)


def is_success(result):
    return np.asarray(result == odejax.RESULTS.successful)


# ---- 1. the event time and the state at it --------------------------------------------


def test_free_fall_event_time_and_state():
    # throw=True (the default) must not raise on an event: it is a successful end.
    event = odejax.Event(height, root_finder=TIGHT)
    for h in (1.0, 10.0, 20.0):
        sol = drop_jit(jnp.asarray(h), event=event)
        assert is_event(sol.result) and bool(odejax.is_successful(sol.result))
        assert sol.ts.shape == (1,) and sol.ys.shape == (1, 2)
        assert abs(float(sol.ts[-1]) - t_ground(h)) < 1e-10 * t_ground(h), (h, sol.ts)
        np.testing.assert_allclose(sol.ys[-1], [0.0, -math.sqrt(2 * G * h)], rtol=0, atol=1e-9)
        assert bool(sol.event_mask)


class NewtonLike(eqx.Module):
    """An optimistix.Newton-like root finder: `rtol` and `atol`, no `max_steps` (the
    optimistix class itself, when installed, takes the same path)."""

    rtol: float
    atol: float


@pytest.mark.parametrize(
    "root_finder,tol",
    [
        (None, 1e-9),
        (odejax.RootFinder(rtol=1e-12, atol=1e-12), 1e-10),
        (NewtonLike(rtol=1e-12, atol=1e-12), 1e-10),
    ],
    ids=["default", "RootFinder", "optimistix-like"],
)
def test_root_finders(root_finder, tol):
    # The default root finder (None) is tight; any object with rtol and atol is one
    # (e.g. optimistix.Newton, which has no max_steps).
    # A large constant step (0.8, the event in the second step) so that the step's end
    # is far from the root: a finder that stopped at the step's end would fail.
    sol = drop_jit(
        jnp.asarray(H),
        event=odejax.Event(height, root_finder=root_finder),
        controller=odejax.ConstantStepSize(),
        dt0=0.8,
    )
    assert is_event(sol.result)
    assert int(sol.stats["num_steps"]) == 2
    assert abs(float(sol.ts[-1]) - t_ground(H)) < tol * t_ground(H), sol.ts


def test_backwards_in_time():
    # Height(t) = h - g t^2 / 2 is even in t: running from 0 towards -10 it crosses 0 at
    # -sqrt(2 h / g), with velocity +sqrt(2 g h).
    sol = drop_jit(jnp.asarray(H), event=odejax.Event(height, root_finder=TIGHT), t1=-10.0)
    assert is_event(sol.result)
    assert abs(float(sol.ts[-1]) + t_ground(H)) < 1e-10 * t_ground(H), sol.ts
    np.testing.assert_allclose(sol.ys[-1], [0.0, math.sqrt(2 * G * H)], rtol=0, atol=1e-9)


def test_pytree_state_and_keyword_arguments():
    # y a dict; the condition reads the solve's terms from its keyword arguments: the
    # vertical velocity (the height's derivative) crosses 0 at the apex of a throw
    # upwards at 5 m/s from h = 1, t = 5 / g, height 1 + 25 / (2 g).
    def apex(t, y, args, *, terms, solver, stepsize_controller, **kwargs):
        assert isinstance(solver, odejax.Tsit5)
        assert isinstance(stepsize_controller, odejax.PIDController)
        return terms.vf(t, y, args)["h"]

    def throw_up(t, y, args):
        return {"h": y["v"], "v": -jnp.asarray(G)}

    sol = eqx.filter_jit(odejax.diffeqsolve)(
        odejax.ODETerm(throw_up),
        odejax.Tsit5(),
        0.0,
        10.0,
        None,
        {"h": jnp.asarray(1.0), "v": jnp.asarray(5.0)},
        stepsize_controller=PID,
        event=odejax.Event(apex, root_finder=TIGHT),
    )
    assert is_event(sol.result)
    assert abs(float(sol.ts[-1]) - 5 / G) < 1e-10
    np.testing.assert_allclose(sol.ys["h"][-1], 1 + 25 / (2 * G), rtol=1e-12)
    np.testing.assert_allclose(sol.ys["v"][-1], 0.0, atol=1e-9)


# ---- 2. derivatives of the event time and state ---------------------------------------


def _t_event(h):
    return drop(h, event=odejax.Event(height, root_finder=TIGHT)).ts[-1]


def _event_point(p, adjoint):
    """(t*, height*, velocity*) where the height crosses `level + shift`, for
    p = (h, g, level, t0, shift): the drop starts at t0 from height h; g is in the vector
    field's args; `level` is in args too, read by the condition; `shift` is captured by
    the condition's closure (a traced value, not an argument of diffeqsolve)."""
    h, g, level, t0, shift = p[0], p[1], p[2], p[3], p[4]

    def cond(t, y, args, **kwargs):
        return y[0] - args[1] - shift

    event = odejax.Event(cond, root_finder=TIGHT)
    sol = drop(h, g, level, event=event, adjoint=adjoint, t0=t0)
    return jnp.concatenate([sol.ts[-1:], sol.ys[-1]])


def _event_point_jacobian(h, g, level, t0, shift):
    """d (t*, height*, velocity*) / d (h, g, level, t0, shift), in closed form:
    t* = t0 + sqrt(2 d / g), height* = level + shift, velocity* = -sqrt(2 g d), with
    d = h - level - shift."""
    d = h - level - shift
    s = math.sqrt(2 * g * d)  # the speed at impact
    return np.array(
        [
            [1 / s, -math.sqrt(2 * d / g) / (2 * g), -1 / s, 1.0, -1 / s],
            [0.0, 0.0, 1.0, 0.0, 1.0],
            [-g / s, -d / s, g / s, 0.0, g / s],
        ]
    )


@pytest.mark.parametrize(
    "mode,adjoint,batched",
    [
        ("rev", odejax.RecursiveCheckpointAdjoint(), True),
        ("rev", odejax.DirectAdjoint(), False),
        ("fwd", odejax.ForwardMode(), False),
    ],
    ids=["jacrev-RecursiveCheckpoint-vmap", "jacrev-Direct", "jacfwd-ForwardMode"],
)
def test_event_point_jacobian(mode, adjoint, batched):
    # The whole Jacobian of (t*, y*) with respect to the initial height, the vector
    # field's parameter g, a parameter of the condition (in args, and captured by
    # closure: both enter the root directly, not through the state) and t0. Its first
    # entry is jax.grad of sol.ts[-1] with respect to h, 1 / sqrt(2 g h). With the
    # default adjoint also under vmap (each batch element its own event), which costs
    # a compilation of its own (a few seconds) and so is done once.
    jac = jax.jacrev if mode == "rev" else jax.jacfwd
    points = [(10.0, G, 0.0, 0.0, 0.0), (3.0, G, 1.0, 0.5, 0.5)]
    if batched:
        f = jax.jit(jax.vmap(jac(_event_point), in_axes=(0, None)), static_argnums=1)
        got = np.asarray(f(jnp.array(points), adjoint))
    else:
        f = jax.jit(jac(_event_point), static_argnums=1)
        got = np.stack([np.asarray(f(jnp.array(p), adjoint)) for p in points])
    for p, j in zip(points, got):
        np.testing.assert_allclose(j, _event_point_jacobian(*p), rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(got[0, 0, 0], 1 / math.sqrt(2 * G * 10.0), rtol=1e-8)


@pytest.mark.parametrize(
    "adjoint",
    [odejax.BacksolveAdjoint(), odejax.InterpolatingAdjoint(), odejax.QuadratureAdjoint()],
    ids=lambda a: type(a).__name__,
)
def test_adjoints_without_event_support_raise(adjoint):
    with pytest.raises(NotImplementedError, match="event"):
        drop(jnp.asarray(H), event=odejax.Event(height), adjoint=adjoint)


# ---- 3. the harmonic oscillator: crossings of sin t -----------------------------------


def oscillator(t, y, w):
    return jnp.stack([y[1], -(w**2) * y[0]])


def position(t, y, args, **kwargs):
    return y[0]


@eqx.filter_jit
def swing(y0, t0, w, event, t1=20.0, adjoint=RCA):
    return odejax.diffeqsolve(
        odejax.ODETerm(oscillator),
        odejax.Tsit5(),
        t0,
        t1,
        None,
        y0,
        w,
        stepsize_controller=odejax.PIDController(rtol=1e-12, atol=1e-12),
        event=event,
        adjoint=adjoint,
        max_steps=4096,
    )


# From t0 = 1 (not from a zero of sin): x = sin t falls through 0 at pi and rises at 2 pi.
SIN_Y0 = jnp.array([math.sin(1.0), math.cos(1.0)], jnp.float64)
ONE = jnp.asarray(1.0, jnp.float64)  # not weakly typed: as the event times fed back
# The oscillator's dense output is not exact; at rtol = atol = 1e-12 the crossing times
# are right to about 1e-11.
OSC_TOL = 1e-9


@pytest.mark.parametrize(
    "direction,expect",
    [(False, math.pi), (True, 2 * math.pi)],
    ids=["down", "up"],
)
def test_sine_crossing_and_direction(direction, expect):
    event = odejax.Event(position, root_finder=TIGHT, direction=direction)
    sol = swing(SIN_Y0, ONE, ONE, event)
    assert is_event(sol.result)
    assert abs(float(sol.ts[-1]) - expect) < OSC_TOL, (float(sol.ts[-1]), expect)
    np.testing.assert_allclose(sol.ys[-1], [0.0, math.cos(expect)], atol=OSC_TOL)


def test_successive_crossings_restarting_from_the_event():
    # Restart from each event's state (on the zero, to rounding) with the opposite
    # direction: the crossings are pi, 2 pi, 3 pi, 4 pi, 5 pi. (A restart with
    # direction=None could trigger at once on a zero of either sign.) The same solves
    # as test_sine_crossing_and_direction: no new compilation.
    down = odejax.Event(position, root_finder=TIGHT, direction=False)
    up = odejax.Event(position, root_finder=TIGHT, direction=True)
    y, t = SIN_Y0, ONE
    for k in range(1, 6):
        sol = swing(y, t, ONE, down if k % 2 else up)
        assert is_event(sol.result), k
        t, y = sol.ts[-1], sol.ys[-1]
        assert abs(float(t) - k * math.pi) < 5 * OSC_TOL, (k, float(t))
        assert abs(float(y[0])) < OSC_TOL and abs(abs(float(y[1])) - 1) < 5 * OSC_TOL


def test_direction_pytree():
    # The same condition twice, one watching up-crossings only, one both: the second
    # triggers first (pi), and event_mask says so.
    event = odejax.Event([position, position], root_finder=TIGHT, direction=[True, None])
    sol = swing(SIN_Y0, ONE, ONE, event)
    assert abs(float(sol.ts[-1]) - math.pi) < OSC_TOL
    assert isinstance(sol.event_mask, list) and len(sol.event_mask) == 2
    assert [bool(m) for m in sol.event_mask] == [False, True]


def test_crossing_time_gradient_wrt_frequency():
    # x = cos(w t) first crosses 0 at pi / (2 w): d/dw = -pi / (2 w^2). The dense output
    # is not exact here: agreement to the solver's tolerance. (Forward mode: it compiles
    # in half the time of reverse mode, which test_event_point_jacobian covers.)
    def t_cross(w):
        y0 = jnp.array([1.0, 0.0])
        event = odejax.Event(position, root_finder=TIGHT)
        return swing(y0, jnp.asarray(0.0), w, event, 20.0, odejax.ForwardMode()).ts[-1]

    grad = jax.jit(jax.jacfwd(t_cross))
    for w in (1.0, 2.5):
        got = float(grad(jnp.asarray(w)))
        expect = -math.pi / (2 * w**2)
        assert abs(got - expect) < 1e-9 * abs(expect), (w, got, expect)


# ---- 4. several conditions: the earliest wins -----------------------------------------

# One step of 2.0 (t1 = 4): the ball passes height 5 at sqrt(10 / g) = 1.0096 and
# height 3 at sqrt(14 / g) = 1.1946, both inside the first step [0, 2].
ONE_BIG_STEP = {"controller": odejax.ConstantStepSize(), "dt0": 2.0, "t1": 4.0}


def test_two_crossings_in_one_step_the_earlier_wins():
    # (The other order in the PyTree: test_two_crossings_in_one_step_dict.)
    conds = (ABOVE_5, ABOVE_3)
    sol = drop_jit(jnp.asarray(H), event=odejax.Event(conds, root_finder=TIGHT), **ONE_BIG_STEP)
    assert int(sol.stats["num_steps"]) == 1  # both crossings in the one step taken
    assert is_event(sol.result)
    assert abs(float(sol.ts[-1]) - t_ground(H, level=5.0)) < 1e-10, float(sol.ts[-1])
    np.testing.assert_allclose(sol.ys[-1, 0], 5.0, atol=1e-9)
    assert isinstance(sol.event_mask, tuple)
    mask = [bool(m) for m in sol.event_mask]
    assert mask == [True, False], mask


def test_two_crossings_in_one_step_dict():
    conds = {"a": ABOVE_3, "b": ABOVE_5}  # flattened in key order: the later one first
    sol = drop_jit(jnp.asarray(H), event=odejax.Event(conds, root_finder=TIGHT), **ONE_BIG_STEP)
    assert int(sol.stats["num_steps"]) == 1
    assert abs(float(sol.ts[-1]) - t_ground(H, level=5.0)) < 1e-10
    assert {k: bool(v) for k, v in sol.event_mask.items()} == {"a": False, "b": True}


# ---- 5. bool conditions ---------------------------------------------------------------


def test_bool_condition_stops_at_the_end_of_the_step():
    # Steps of 0.1: height 10 - g t^2 / 2 is 5.095 at t = 1.0 and 4.065 at t = 1.1, the
    # end of the 11th step, where the solve stops (no root finding for a bool).
    sol = drop_jit(
        jnp.asarray(H),
        event=odejax.Event(below_5),
        controller=odejax.ConstantStepSize(),
        dt0=0.1,
    )
    assert is_event(sol.result) and bool(sol.event_mask)
    assert int(sol.stats["num_steps"]) == 11
    assert abs(float(sol.ts[-1]) - 1.1) < 1e-12, float(sol.ts[-1])
    np.testing.assert_allclose(sol.ys[-1], [H - G * 1.1**2 / 2, -G * 1.1], rtol=1e-12)


def test_bool_and_float_conditions_in_one_step_the_float_root_is_earlier():
    # In the step [1.0, 1.1]: the bool condition holds at its end (1.1), the float one
    # crosses at 1.0096, earlier: the float one ends the solve, at its root.
    sol = drop_jit(
        jnp.asarray(H),
        event=odejax.Event([below_5, ABOVE_5], root_finder=TIGHT),
        controller=odejax.ConstantStepSize(),
        dt0=0.1,
    )
    assert is_event(sol.result)
    assert abs(float(sol.ts[-1]) - t_ground(H, level=5.0)) < 1e-10, float(sol.ts[-1])
    assert [bool(m) for m in sol.event_mask] == [False, True]


# ---- 6. an event that never triggers changes nothing ----------------------------------

TS = jnp.linspace(0.0, 1.0, 11)


def never_float(t, y, args, **kwargs):
    return y[0] + 100.0


def never_bool(t, y, args, **kwargs):
    return y[0] < -100.0


def test_event_that_never_triggers_changes_nothing():
    cond = [never_float, never_bool]
    saveat = odejax.SaveAt(ts=TS, t1=True)
    plain = drop_jit(jnp.asarray(H), event=None, saveat=saveat, t1=1.0)
    sol = drop_jit(
        jnp.asarray(H), event=odejax.Event(cond, root_finder=TIGHT), saveat=saveat, t1=1.0
    )
    assert is_success(sol.result) and is_success(plain.result)
    np.testing.assert_array_equal(sol.ts, plain.ts)
    np.testing.assert_array_equal(sol.ys, plain.ys)
    assert int(sol.stats["num_steps"]) == int(plain.stats["num_steps"])
    assert jax.tree.structure(sol.event_mask) == jax.tree.structure(cond)
    assert not any(bool(m) for m in jax.tree.leaves(sol.event_mask))


# ---- 7. SaveAt(ts=...) after the event -------------------------------------------------


def test_saved_times_after_the_event_are_inf():
    ts = jnp.linspace(0.0, 3.0, 31)  # the event at 1.4278: entries 15 to 30 after it
    event = odejax.Event(height, root_finder=TIGHT)
    sol = drop_jit(jnp.asarray(H), event=event, saveat=odejax.SaveAt(ts=ts), t1=3.0)
    assert is_event(sol.result)
    assert sol.ts.shape == (31,) and sol.ys.shape == (31, 2)
    assert (np.asarray(ts) <= t_ground(H)).sum() == 15
    np.testing.assert_array_equal(sol.ts[:15], ts[:15])
    exact = np.stack([H - G * np.asarray(ts) ** 2 / 2, -G * np.asarray(ts)], axis=1)
    np.testing.assert_allclose(sol.ys[:15], exact[:15], rtol=1e-10, atol=1e-10)
    assert np.all(np.isinf(np.asarray(sol.ts[15:])))
    assert np.all(np.isinf(np.asarray(sol.ys[15:])))


def test_saved_times_and_t1_after_the_event():
    # SaveAt(ts=..., t1=True): the saved points are ts up to the event, then the event
    # (its time and state), the rest inf. (Where the t1 entry sits, right after the
    # last saved ts or at the end, is left open: only the finite entries are checked.)
    ts = jnp.linspace(0.0, 3.0, 31)
    event = odejax.Event(height, root_finder=TIGHT)
    sol = drop_jit(jnp.asarray(H), event=event, saveat=odejax.SaveAt(ts=ts, t1=True), t1=3.0)
    assert sol.ts.shape == (32,) and sol.ys.shape == (32, 2)
    finite = np.isfinite(np.asarray(sol.ts))
    assert finite.sum() == 16, sol.ts
    assert np.all(np.isfinite(np.asarray(sol.ys)[finite]))
    assert np.all(np.isinf(np.asarray(sol.ys)[~finite]))
    got_ts, got_ys = np.asarray(sol.ts)[finite], np.asarray(sol.ys)[finite]
    np.testing.assert_array_equal(got_ts[:15], ts[:15])
    assert abs(got_ts[15] - t_ground(H)) < 1e-10 * t_ground(H)
    np.testing.assert_allclose(got_ys[15], [0.0, -math.sqrt(2 * G * H)], atol=1e-9)
    # ys[-1] with t1 alone is the event (checked in test_free_fall_event_time_and_state).


# ---- 8. jit, vmap, float32 ------------------------------------------------------------


def test_jit_matches_eager():
    # (The event of test_free_fall_event_time_and_state: its jitted solve is compiled.)
    event = odejax.Event(height, root_finder=TIGHT)
    eager = drop(jnp.asarray(H), event=event)
    jitted = drop_jit(jnp.asarray(H), event=event)
    np.testing.assert_allclose(eager.ts, jitted.ts, rtol=1e-14)
    np.testing.assert_allclose(eager.ys, jitted.ys, rtol=1e-13, atol=1e-13)
    assert bool(eager.event_mask) and bool(jitted.event_mask)
    assert is_event(eager.result) and is_event(jitted.result)


def test_vmap_each_element_stops_at_its_own_event():
    # Ground or timer (t = 1.5), whichever first; t1 = 3. h = 20 reaches the ground at
    # 2.02: the timer wins; h = 100 at 4.5: neither triggers before t1.
    hs = jnp.array([1.0, 5.0, 10.0, 20.0, 100.0])
    tmax = jnp.array([1.5, 1.5, 1.5, 1.5, 10.0])
    event = odejax.Event([height, timer], root_finder=TIGHT)

    @jax.jit
    @jax.vmap
    def solve(h, tm):
        sol = drop(h, G, 0.0, tm, event=event, t1=3.0)
        return sol.ts[-1], sol.ys[-1], sol.result, sol.event_mask

    t_end, y_end, result, mask = solve(hs, tmax)
    expect_t = [t_ground(1.0), t_ground(5.0), t_ground(10.0), 1.5, 3.0]
    np.testing.assert_allclose(t_end, expect_t, rtol=1e-10)
    np.testing.assert_allclose(
        y_end[:, 0],
        [h - G * t**2 / 2 for h, t in zip([1.0, 5.0, 10.0, 20.0, 100.0], expect_t)],
        atol=1e-9,
    )
    assert is_event(result).tolist() == [True, True, True, True, False]
    assert is_success(result).tolist() == [False, False, False, False, True]
    assert np.asarray(mask[0]).tolist() == [True, True, True, False, False]
    assert np.asarray(mask[1]).tolist() == [False, False, False, True, False]


@pytest.mark.parametrize("tdtype", [np.float32, np.float64], ids=["float32", "float64-times"])
def test_float32(tdtype):
    # A float32 state with float32 times, or with float64 times (as in the conformance
    # suite): the condition is float32, the event time has the time dtype.
    event = odejax.Event(height)
    controller = odejax.PIDController(rtol=1e-6, atol=1e-6)
    sol = drop_jit(jnp.asarray(H, jnp.float32), event=event, controller=controller, tdtype=tdtype)
    assert sol.ts.dtype == tdtype and sol.ys.dtype == jnp.float32
    assert is_event(sol.result)
    assert abs(float(sol.ts[-1]) - t_ground(H)) < 1e-5 * t_ground(H), float(sol.ts[-1])
    np.testing.assert_allclose(sol.ys[-1], [0.0, -math.sqrt(2 * G * H)], atol=1e-4)
    if tdtype == np.float64:
        return  # (the derivative once, to keep the suite fast)

    def t_event(h):
        return drop(h, event=event, controller=controller).ts[-1]

    g = jax.jit(jax.grad(t_event))(jnp.asarray(H, jnp.float32))
    assert g.dtype == jnp.float32
    assert abs(float(g) - 1 / math.sqrt(2 * G * H)) < 1e-4 / math.sqrt(2 * G * H)


# ---- 9. steady_state_event ------------------------------------------------------------


def relax(t, y, args):
    return -(y - 1.0)


@eqx.filter_jit
def relax_solve(event):
    return odejax.diffeqsolve(
        odejax.ODETerm(relax),
        odejax.Tsit5(),
        0.0,
        100.0,
        None,
        jnp.array([0.0, 3.0]),
        stepsize_controller=odejax.PIDController(rtol=1e-6, atol=1e-6),
        event=odejax.Event(event),
        max_steps=1024,
    )


def _rms(x):
    return float(np.sqrt(np.mean(np.asarray(x) ** 2)))


def test_steady_state_event_default_tolerances():
    # y - 1 = (-1, 2) e^{-t}: |f| = rms(y - 1) = 1.58 e^{-t} falls below
    # atol + rtol |y| = 2e-6 (the controller's tolerances) at t = 13.6.
    sol = relax_solve(odejax.steady_state_event())
    assert is_event(sol.result) and bool(odejax.is_successful(sol.result))
    t = float(sol.ts[-1])
    assert math.log(_rms([1.0, 2.0]) / 2e-6) - 1e-6 < t < 20.0, t
    assert _rms(sol.ys[-1] - 1) < 2e-6
    np.testing.assert_allclose(sol.ys[-1], [1.0, 1.0], atol=1e-5)


def test_steady_state_event_explicit_tolerances():
    # rms(y - 1) < 1e-3 from t = log(1581) = 7.37 on; the solve stops at the end of the
    # first step after that.
    sol = relax_solve(odejax.steady_state_event(rtol=0.0, atol=1e-3))
    assert is_event(sol.result)
    t = float(sol.ts[-1])
    assert math.log(_rms([1.0, 2.0]) / 1e-3) - 1e-6 < t < 10.0, t
    assert _rms(sol.ys[-1] - 1) < 1e-3


def test_steady_state_to_infinite_t1_through_a_wrapped_controller():
    # t1 = inf is allowed with an event (the solve runs until it); the steady-state
    # condition finds the tolerances inside a ClipStepSizeController; Solution.t1 is
    # the event time.
    ctrl = odejax.ClipStepSizeController(
        odejax.PIDController(rtol=1e-6, atol=1e-6), step_ts=jnp.array([1.0])
    )
    sol = odejax.diffeqsolve(
        odejax.ODETerm(relax),
        odejax.Tsit5(),
        0.0,
        jnp.inf,
        None,
        jnp.array([0.0, 3.0]),
        stepsize_controller=ctrl,
        event=odejax.Event(odejax.steady_state_event()),
        max_steps=1024,
    )
    assert is_event(sol.result)
    assert 13.0 < float(sol.ts[-1]) < 20.0
    assert float(sol.t1) == float(sol.ts[-1])
    with pytest.raises(ValueError, match="infinite t1 needs an `event`"):
        odejax.diffeqsolve(odejax.ODETerm(relax), odejax.Tsit5(), 0.0, jnp.inf, 0.1, jnp.ones(2))


def test_bool_condition_true_at_t0_ends_the_solve_there():
    # As in diffrax: no step is taken.
    sol = odejax.diffeqsolve(
        odejax.ODETerm(relax),
        odejax.Tsit5(),
        0.0,
        10.0,
        0.1,
        jnp.array([0.0, 3.0]),
        saveat=odejax.SaveAt(t0=True, t1=True),
        event=odejax.Event((never_float, lambda t, y, args, **kw: y[1] > 2.0)),
    )
    assert is_event(sol.result)
    assert int(sol.stats["num_steps"]) == 0
    np.testing.assert_array_equal(sol.ts, [0.0, 0.0])
    assert [bool(m) for m in sol.event_mask] == [False, True]
