"""Fit a neural ODE to the spiral of the Neural ODE paper (Chen et al. 2018).

Data: the true dynamics y' = (y**3) @ A with A = [[-0.1, 2.0], [-2.0, -0.1]],
y(0) = (2, 0), observed at 30 times in [0, 1.5]. Model: y' = MLP(y**3), an equinox
MLP (width 64, depth 2), trained with optax's adam on the mean squared error of the
whole trajectory. The loss is printed as it falls and a plot of data against
prediction is saved to examples/neural_ode.png.

How the solve is differentiated is one line: ADJOINT below (or `--adjoint backsolve`).

Run: python examples/neural_ode.py [--adjoint checkpoint|backsolve|interpolating|quadrature]
[--steps N]
(needs `pip install .[examples]` for optax and the plot)
"""

from __future__ import annotations

import argparse
import pathlib
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

import odejax

ADJOINT = odejax.RecursiveCheckpointAdjoint()  # or odejax.BacksolveAdjoint()

A = jnp.array([[-0.1, 2.0], [-2.0, -0.1]])
Y0 = jnp.array([2.0, 0.0])
TS = jnp.linspace(0.0, 1.5, 30)


def true_data():
    sol = odejax.diffeqsolve(
        odejax.ODETerm(lambda t, y, args: (y**3) @ A),
        odejax.Tsit5(),
        0.0,
        1.5,
        None,
        Y0,
        saveat=odejax.SaveAt(ts=TS),
        stepsize_controller=odejax.PIDController(rtol=1e-7, atol=1e-7),
    )
    return sol.ys


class Field(eqx.Module):
    """The learned vector field y' = MLP(y**3) (the paper's spiral model)."""

    mlp: eqx.nn.MLP

    def __init__(self, key):
        self.mlp = eqx.nn.MLP(2, 2, 64, 2, activation=jnp.tanh, key=key)

    def __call__(self, t, y, args):
        return self.mlp(y**3)


def predict(field, adjoint):
    sol = odejax.diffeqsolve(
        odejax.ODETerm(field),
        odejax.Tsit5(),
        0.0,
        1.5,
        0.05,
        Y0,
        saveat=odejax.SaveAt(ts=TS),
        stepsize_controller=odejax.PIDController(rtol=1e-4, atol=1e-6),
        max_steps=1024,
        adjoint=adjoint,
    )
    return sol.ys


def main():
    parser = argparse.ArgumentParser()
    choices = ["checkpoint", "backsolve", "interpolating", "quadrature"]
    parser.add_argument("--adjoint", choices=choices, default=None)
    parser.add_argument("--steps", type=int, default=1500)
    args = parser.parse_args()
    adjoint = {
        None: ADJOINT,
        "checkpoint": odejax.RecursiveCheckpointAdjoint(),
        "backsolve": odejax.BacksolveAdjoint(),
        "interpolating": odejax.InterpolatingAdjoint(),
        "quadrature": odejax.QuadratureAdjoint(),
    }[args.adjoint]

    data = true_data()
    field = Field(jax.random.PRNGKey(0))
    optimiser = optax.adam(1e-3)
    opt_state = optimiser.init(eqx.filter(field, eqx.is_inexact_array))

    @eqx.filter_jit
    def train_step(field, opt_state):
        def loss(field):
            return jnp.mean((predict(field, adjoint) - data) ** 2)

        value, grads = eqx.filter_value_and_grad(loss)(field)
        updates, opt_state = optimiser.update(grads, opt_state, field)
        return eqx.apply_updates(field, updates), opt_state, value

    print(f"neural ODE on the spiral, adjoint={type(adjoint).__name__}")
    start = time.perf_counter()
    first = None
    for step in range(args.steps + 1):
        field, opt_state, value = train_step(field, opt_state)
        first = float(value) if first is None else first
        if step % 50 == 0:
            print(f"step {step:4d}  loss {float(value):.5f}  ({time.perf_counter() - start:.1f} s)")
    final = float(jnp.mean((predict(field, adjoint) - data) ** 2))
    print(f"loss {first:.4f} -> {final:.5f}")
    if not final < 0.2 * first:
        raise SystemExit("the loss did not fall: training failed")

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed, so no plot was made (pip install .[examples])")
        return
    pred = predict(field, adjoint)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(data[:, 0], data[:, 1], "o", label="data")
    ax.plot(pred[:, 0], pred[:, 1], "-", label="neural ODE")
    ax.set_xlabel("y0")
    ax.set_ylabel("y1")
    ax.legend()
    out = pathlib.Path(__file__).with_suffix(".png")
    fig.savefig(out, dpi=100)
    print(f"plot saved to {out}")


if __name__ == "__main__":
    main()
