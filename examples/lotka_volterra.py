"""Lotka-Volterra predator-prey dynamics: solve, inspect, differentiate, plot.

    dx/dt = a x - b x y        (prey)
    dy/dt = -c y + d x y       (predators)

with (a, b, c, d) = (2/3, 4/3, 1, 1), (x, y)(0) = (1, 1), t in [0, 20].

The script solves the system with Tsit5 and an adaptive PIDController, saves the
solution at 400 times, prints a few values and the solver statistics, then takes
the gradient of `mean(x(t_i))` with respect to the four parameters (checked
against finite differences) and saves a plot to examples/lotka_volterra.png.

Run: python examples/lotka_volterra.py   (the plot needs `pip install .[examples]`)
"""

from __future__ import annotations

import pathlib
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402

import odejax  # noqa: E402

PARAMS = jnp.array([2 / 3, 4 / 3, 1.0, 1.0])  # a, b, c, d
Y0 = jnp.array([1.0, 1.0])  # prey, predators
T0, T1 = 0.0, 20.0
TS = jnp.linspace(T0, T1, 400)
PNG = pathlib.Path(__file__).with_suffix(".png")


def vector_field(t, y, params):
    x, z = y[0], y[1]
    a, b, c, d = params[0], params[1], params[2], params[3]
    return jnp.stack([a * x - b * x * z, -c * z + d * x * z])


def solve(params, dense=False):
    return odejax.diffeqsolve(
        odejax.ODETerm(vector_field),
        odejax.Tsit5(),
        T0,
        T1,
        None,  # let the controller pick the first step
        Y0,
        params,
        saveat=odejax.SaveAt(ts=TS, dense=dense),
        stepsize_controller=odejax.PIDController(rtol=1e-8, atol=1e-8),
    )


@jax.jit
def loss(params):
    """The mean prey population over the saved times."""
    return jnp.mean(solve(params).ys[:, 0])


def plot(sol):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(
            "\nmatplotlib is not installed, so no plot was made. "
            "Install the example dependencies with `pip install .[examples]`."
        )
        return
    ts, ys = sol.ts, sol.ys
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.plot(ts, ys[:, 0], label="prey x(t)")
    ax1.plot(ts, ys[:, 1], label="predators y(t)")
    ax1.set_xlabel("t")
    ax1.set_ylabel("population")
    ax1.set_title("Lotka-Volterra, Tsit5 + PIDController")
    ax1.legend()
    a, b, c, d = (float(v) for v in PARAMS)
    ax2.plot(ys[:, 0], ys[:, 1])
    ax2.plot([c / d], [a / b], "k+", markersize=10, label="equilibrium (c/d, a/b)")
    ax2.plot([float(Y0[0])], [float(Y0[1])], "o", label="initial state")
    ax2.set_xlabel("prey x")
    ax2.set_ylabel("predators y")
    ax2.set_title("phase portrait")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(PNG, dpi=120)
    plt.close(fig)
    print(f"\nsaved the plot to {PNG}")


def main():
    solve_jit = jax.jit(solve, static_argnames="dense")
    start = time.perf_counter()
    sol = jax.block_until_ready(solve_jit(PARAMS, dense=True))
    compiled = time.perf_counter()
    sol = jax.block_until_ready(solve_jit(PARAMS, dense=True))
    ran = time.perf_counter()
    print(
        f"solve: {compiled - start:.2f} s (compile + run), then {1e3 * (ran - compiled):.2f} ms (run)"
    )

    print("\n     t        x(t)        y(t)")
    for t in (0.0, 5.0, 10.0, 15.0, 20.0):
        x, y = sol.evaluate(t)  # the dense output, between the saved points too
        print(f"{t:6.1f}  {float(x):10.6f}  {float(y):10.6f}")
    stats = sol.stats
    print(
        f"\nsteps: {int(stats['num_steps'])} ({int(stats['num_accepted_steps'])} accepted, "
        f"{int(stats['num_rejected_steps'])} rejected); "
        f"vector-field evaluations: {int(stats['num_fevals'])}"
    )

    start = time.perf_counter()
    grad = jax.block_until_ready(jax.grad(loss)(PARAMS))
    print(f"gradient: {time.perf_counter() - start:.2f} s (compile + run)")
    eps = 1e-6
    basis = jnp.eye(4)
    fd = jnp.stack([(loss(PARAMS + eps * e) - loss(PARAMS - eps * e)) / (2 * eps) for e in basis])
    print(f"\nloss = mean of x over the saved points = {float(loss(PARAMS)):.6f}")
    print("d loss / d (a, b, c, d):")
    for name, g, f in zip("abcd", grad, fd):
        print(f"  {name}: {float(g):+.6f}   (finite differences: {float(f):+.6f})")

    plot(sol)


if __name__ == "__main__":
    main()
