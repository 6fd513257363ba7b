"""Memory of a long solve's gradient, per adjoint, from XLA's compiled memory analysis.

Problem: a 10-dimensional linear ODE y' = A y (A a fixed random rotation generator
plus a little damping, passed as `args`), y0 fixed, Tsit5 with ConstantStepSize
dt = 2^-10 on t in [0, N dt] for N = 10,000 and 100,000 steps (`--steps`),
max_steps = N, float64; loss = sum of the squared final state; gradient with respect
to (y0, A) under `jax.jit(jax.grad(loss))`.

For each adjoint the gradient is lowered and compiled and
`compiled.memory_analysis()` read: `temp` = temp_size_in_bytes (XLA's scratch:
checkpoints, stored steps, loop buffers; what grows with N), `total` = temp +
arguments + outputs - aliased. Printed as bytes and as multiples of the state's bytes
(10 x 8 = 80). Also: compile time (one cold lower + compile) and, unless `--no-run`,
the gradient's median run time (the adjoints interleaved call by call) and its
relative difference from odejax's RecursiveCheckpointAdjoint with every step stored.

Adjoints: odejax RecursiveCheckpointAdjoint (default checkpoints, and checkpoints =
40, 100, 1000, N), BacksolveAdjoint, DirectAdjoint; diffrax RecursiveCheckpointAdjoint
(default), BacksolveAdjoint and DirectAdjoint for comparison (`--no-diffrax` skips
them). The column `ckpts` gives the number of checkpoints used: odejax's default is two
levels of about sqrt(N) states each (one recomputation of the forward solve); diffrax's
(equinox's online treeverse) about sqrt(2 N).

Run: python benchmarks/memory.py [--steps 10000,100000] [--no-run] [--no-diffrax]
[--repeats N]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import odejax  # noqa: E402

DIM = 10
T0, DT = 0.0, 2.0**-10


def problem():
    rng = np.random.default_rng(0)
    m = rng.standard_normal((DIM, DIM))
    a = (m - m.T) / np.sqrt(DIM) - 0.01 * np.eye(DIM)
    y0 = rng.standard_normal(DIM)
    return jnp.asarray(y0), jnp.asarray(a)


def vf(t, y, a):
    return a @ y


def odejax_checkpoints(n, checkpoints):
    """States odejax's RecursiveCheckpointAdjoint(checkpoints) stores for max_steps = n
    (as few levels as fit: a larger budget than that needs is not used)."""
    from odejax._adjoints._checkpoint import checkpoint_levels

    return sum(checkpoint_levels(n, checkpoints))


def default_checkpoints(n):
    """equinox's default for checkpointed_while_loop with max_steps = n."""
    if n == 1:
        return 1
    return min(math.floor(-1.5 + math.sqrt(2 * n + 0.25)) + 1, n)


def make_grad(lib, adjoint, n):
    def loss(y0, a):
        sol = lib.diffeqsolve(
            lib.ODETerm(vf),
            lib.Tsit5(),
            T0,
            T0 + n * DT,
            DT,
            y0,
            a,
            stepsize_controller=lib.ConstantStepSize(),
            max_steps=n,
            adjoint=adjoint,
        )
        return jnp.sum(sol.ys[-1] ** 2)

    return jax.grad(loss, argnums=(0, 1))


def configs(n, with_diffrax):
    out = []
    for c in dict.fromkeys((None, 40, 100, 1000, n)):
        if c is not None and c > n:
            continue
        label = "default" if c is None else ("N (all)" if c == n else str(c))
        ck = odejax_checkpoints(n, c)
        out.append(
            ("odejax", f"RecursiveCheckpoint {label}", odejax.RecursiveCheckpointAdjoint(c), ck)
        )
    out.append(("odejax", "Backsolve", odejax.BacksolveAdjoint(), "-"))
    out.append(("odejax", "Direct", odejax.DirectAdjoint(), "-"))
    if with_diffrax:
        try:
            import diffrax
        except ImportError:
            print("diffrax: not installed, skipped")
            return out
        out.append(
            (
                "diffrax",
                "RecursiveCheckpoint default",
                diffrax.RecursiveCheckpointAdjoint(),
                default_checkpoints(n),
            )
        )
        out.append(("diffrax", "Backsolve", diffrax.BacksolveAdjoint(), "-"))
        out.append(("diffrax", "Direct", diffrax.DirectAdjoint(), "-"))
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", default="10000,100000", help="comma list of N")
    parser.add_argument("--no-run", action="store_true", help="memory and compile only")
    parser.add_argument("--no-diffrax", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    y0, a = problem()
    state_bytes = DIM * y0.dtype.itemsize
    import importlib.metadata as md

    try:
        dv = md.version("diffrax")
    except md.PackageNotFoundError:
        dv = "-"
    print(
        f"Gradient memory: y' = A y, dim {DIM}, float64 (state {state_bytes} bytes), Tsit5, "
        f"ConstantStepSize dt=2^-10 over N steps, loss = sum(y(t1)^2), grad wrt (y0, A); "
        f"device={jax.devices()[0].platform}, jax {jax.__version__}, diffrax {dv}"
    )
    head = (
        f"{'N':>7}  {'library':<8}{'adjoint':<32}{'ckpts':>7}{'temp bytes':>14}"
        f"{'temp/state':>12}{'total/state':>12}{'compile s':>10}{'run ms':>10}{'grad diff':>11}"
    )
    print(head, flush=True)
    for n in [int(s) for s in args.steps.split(",")]:
        rows = configs(n, not args.no_diffrax)
        # the reference gradient first: every step stored
        rows.sort(key=lambda r: r[1] != "RecursiveCheckpoint N (all)")
        done = []
        for lib_name, name, adjoint, ck in rows:
            lib = odejax if lib_name == "odejax" else __import__("diffrax")
            g = make_grad(lib, adjoint, n)
            jax.clear_caches()
            t = time.perf_counter()
            try:
                compiled = jax.jit(g).lower(y0, a).compile()
            except Exception as e:  # noqa: BLE001 (report and go on)
                print(f"{n:>7}  {lib_name:<8}{name:<32}  failed: {type(e).__name__}: {e}"[:300])
                continue
            comp = time.perf_counter() - t
            mem = compiled.memory_analysis()
            done.append((lib_name, name, ck, compiled, comp, mem))
        # Run times with the adjoints interleaved call by call (noise hits all alike).
        times = {i: [] for i in range(len(done))}
        if not args.no_run:
            for *_, compiled, _, _ in done:
                jax.block_until_ready(compiled(y0, a))
            for _ in range(args.repeats):
                for i, (*_, compiled, _, _) in enumerate(done):
                    t = time.perf_counter()
                    jax.block_until_ready(compiled(y0, a))
                    times[i].append(time.perf_counter() - t)
        ref = None
        for i, (lib_name, name, ck, compiled, comp, mem) in enumerate(done):
            temp = mem.temp_size_in_bytes
            total = (
                temp
                + mem.argument_size_in_bytes
                + mem.output_size_in_bytes
                - mem.alias_size_in_bytes
            )
            if args.no_run:
                run, diff = float("nan"), float("nan")
            else:
                run = statistics.median(times[i])
                gy0, ga = compiled(y0, a)
                vec = np.concatenate([np.ravel(gy0), np.ravel(ga)])
                if ref is None:
                    ref = vec
                diff = float(np.linalg.norm(vec - ref) / np.linalg.norm(ref))
            print(
                f"{n:>7}  {lib_name:<8}{name:<32}{ck!s:>7}{temp:>14,}{temp / state_bytes:>12.1f}"
                f"{total / state_bytes:>12.1f}{comp:>10.2f}{run * 1e3:>10.1f}{diff:>11.1e}",
                flush=True,
            )


if __name__ == "__main__":
    main()
