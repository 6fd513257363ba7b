"""A bouncing ball: events, restarts, and the derivative of an event time.

A ball is dropped from height h at rest; in flight y = (height, velocity) obeys

    d height / dt = velocity,    d velocity / dt = -g.

Each flight is one `diffeqsolve` that stops at an event: the height crossing 0
downwards (`odejax.Event(height, direction=False)`, its time found by root finding
on the dense output). At the impact the velocity is reversed and scaled by the
coefficient of restitution e, and the next flight starts from there.

Closed form: the first impact is at T1 = sqrt(2 h / g), with speed sqrt(2 g h). Each
bounce leaves with e times the impact speed, so flight k >= 2 takes e^(k-1) times the
2 T1 that a full up-and-down flight at the first impact speed would take, and the
impacts are at

    t_1 = T1,   t_k = T1 (1 + 2 e + 2 e^2 + ... + 2 e^(k-1)),

in particular t_3 = sqrt(2 h / g) (1 + 2 e + 2 e^2), with

    d t_3 / dh = t_3 / (2 h),   d t_3 / de = sqrt(2 h / g) (2 + 4 e).

The script prints the impact times against the closed form, differentiates t_3 with
respect to h and e through three event solves (reverse mode with the default
adjoint, and forward mode with ForwardMode), exits non-zero if anything disagrees
with the closed form beyond 1e-6 relative, and saves a plot of the trajectory to
examples/bouncing_ball.png.

Run: python examples/bouncing_ball.py   (the plot needs `pip install .[examples]`)
"""

from __future__ import annotations

import math
import pathlib

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp

import odejax

G = 9.81
H0, E0 = 10.0, 0.8  # drop height (m), coefficient of restitution
N_BOUNCES = 5
FLIGHT_MAX = 20.0  # an upper bound on one flight's duration (here at most 2 T1 = 2.9 s)
PNG = pathlib.Path(__file__).with_suffix(".png")

# The ground: the height crossing zero downwards. (direction=False: after a bounce the
# height starts at zero, to rounding, and rises; that up-crossing is not an impact.)
GROUND = odejax.Event(
    lambda t, y, args, **kwargs: y[0],
    root_finder=odejax.RootFinder(rtol=1e-12, atol=1e-12),
    direction=False,
)


def vector_field(t, y, g):
    return jnp.stack([y[1], -g])


AT_EVENT = odejax.SaveAt(t1=True)
CHECKPOINT = odejax.RecursiveCheckpointAdjoint()


def flight(t0, y0, adjoint, saveat=AT_EVENT):
    """One flight from (t0, y0) until the ball hits the ground."""
    return odejax.diffeqsolve(
        odejax.ODETerm(vector_field),
        odejax.Tsit5(),
        t0,
        t0 + FLIGHT_MAX,
        None,
        y0,
        jnp.asarray(G),
        saveat=saveat,
        stepsize_controller=odejax.PIDController(rtol=1e-10, atol=1e-10),
        adjoint=adjoint,
        event=GROUND,
    )


def bounces(h, e, n, adjoint=CHECKPOINT):
    """The first n impacts: their times, the states just after each bounce, and
    whether each of the n solves ended at an event."""
    t, y = jnp.zeros_like(h), jnp.stack([h, jnp.zeros_like(h)])
    times, states, hit = [], [], []
    for _ in range(n):
        sol = flight(t, y, adjoint)
        t, y = sol.ts[-1], sol.ys[-1]
        y = jnp.stack([y[0], -e * y[1]])  # the bounce
        times.append(t)
        states.append(y)
        hit.append(sol.result == odejax.RESULTS.event_occurred)
    return jnp.stack(times), jnp.stack(states), jnp.stack(hit)


def closed_form_times(h, e, n):
    t1 = math.sqrt(2 * h / G)
    return [t1 * (1 + 2 * sum(e**j for j in range(1, k))) for k in range(1, n + 1)]


def closed_form_t3_gradient(h, e):
    t1 = math.sqrt(2 * h / G)
    t3 = t1 * (1 + 2 * e + 2 * e**2)
    return [t3 / (2 * h), t1 * (2 + 4 * e)]


def rel(a, b):
    return abs(a - b) / abs(b)


def main():
    h, e = jnp.asarray(H0), jnp.asarray(E0)
    times, states, hit = jax.jit(bounces, static_argnums=2)(h, e, N_BOUNCES)
    failures = []
    if not bool(jnp.all(hit)):
        failures.append(f"not every flight ended at the ground: {hit}")

    print(f"ball dropped from h = {H0} m, restitution e = {E0}, g = {G} m/s^2")
    print(" impact   t (odejax)          t (closed form)     rel. error")
    for k, (got, want) in enumerate(zip(times.tolist(), closed_form_times(H0, E0, N_BOUNCES))):
        err = rel(got, want)
        print(f"   {k + 1}     {got:.15f}   {want:.15f}   {err:.1e}")
        if not err < 1e-6:
            failures.append(f"impact {k + 1} at {got}, closed form {want}")

    # d t_3 / d(h, e): reverse mode through three event solves (the default adjoint,
    # RecursiveCheckpointAdjoint) and forward mode (ForwardMode).
    def t3(p, adjoint):
        return bounces(p[0], p[1], 3, adjoint)[0][2]

    p = jnp.array([H0, E0])
    grads = {
        "jax.grad, RecursiveCheckpointAdjoint": jax.jit(jax.grad(t3), static_argnums=1)(
            p, odejax.RecursiveCheckpointAdjoint()
        ),
        "jax.jacfwd, ForwardMode": jax.jit(jax.jacfwd(t3), static_argnums=1)(
            p, odejax.ForwardMode()
        ),
    }
    want = closed_form_t3_gradient(H0, E0)
    print(f"d t_3 / d(h, e), closed form: ({want[0]:.12f}, {want[1]:.12f})")
    for name, g in grads.items():
        g = g.tolist()
        err = max(rel(g[0], want[0]), rel(g[1], want[1]))
        print(f"  {name:38s} ({g[0]:.12f}, {g[1]:.12f})  rel. error {err:.1e}")
        if not err < 1e-6:
            failures.append(f"d t_3 / d(h, e) by {name} is {g}, closed form {want}")

    if failures:
        raise SystemExit("disagreement with the closed form:\n  " + "\n  ".join(failures))
    print("all impact times and derivatives agree with the closed form")
    plot(times, states)


def plot(times, states):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed, so no plot was made (pip install .[examples])")
        return
    fig, ax = plt.subplots(figsize=(7, 3.5))
    t, y = jnp.asarray(0.0), jnp.array([H0, 0.0])
    for k in range(N_BOUNCES):
        # Saved on a grid; the points after the impact come back as inf.
        grid = t + jnp.linspace(0.0, 3.0, 301)
        sol = flight(t, y, odejax.RecursiveCheckpointAdjoint(), odejax.SaveAt(ts=grid))
        keep = jnp.isfinite(sol.ts)
        t, y = times[k], states[k]
        # ... and the flight ends at the impact itself.
        ax.plot(jnp.append(sol.ts[keep], t), jnp.append(sol.ys[keep, 0], y[0]), "C0-")
    ax.plot(times, jnp.zeros_like(times), "C3o", label="impacts (events)")
    ax.set_xlabel("t (s)")
    ax.set_ylabel("height (m)")
    ax.set_title(f"bouncing ball, h = {H0} m, e = {E0}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(PNG, dpi=100)
    print(f"plot saved to {PNG}")


if __name__ == "__main__":
    main()
