"""Lotka-Volterra through odejax and diffrax, in one process run.

Problem (issue 2): dx/dt = p0 x + p1 x y, dy/dt = p2 y + p3 x y with
p = (2/3, -4/3, -1, 1), y0 = (0.1, 0.2), t in [0, 19.9], saved at arange(0, 20, 0.1),
Tsit5, PIDController(rtol=1e-8, atol=1e-8), float64.

Reports per library: jaxpr size (equations, nested ones included), compile time
(median over cold compiles of lower + compile of the jitted solve, the libraries
interleaved), median run time, steps, and the max error at the saved times against a reference
(SciPy DOP853 at rtol=atol=1e-13). Prints ratios odejax / diffrax.

Run: python benchmarks/lotka_volterra.py [--repeats N] [--compiles N] [--grad]
[--adjoint checkpoint|backsolve] [--batch N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import odejax  # noqa: E402

P = jnp.array([2 / 3, -4 / 3, -1.0, 1.0])
Y0 = jnp.array([0.1, 0.2])
T0, T1 = 0.0, 19.9
TS = jnp.arange(0.0, 20.0, 0.1)[:-1]  # 0.0 .. 19.9
RTOL = ATOL = 1e-8


def vf(t, y, p):
    x, z = y[0], y[1]
    return jnp.stack([p[0] * x + p[1] * x * z, p[2] * z + p[3] * x * z])


def reference():
    from scipy.integrate import solve_ivp

    sol = solve_ivp(
        lambda t, y: np.asarray(vf(t, jnp.asarray(y), P)),
        (T0, T1),
        np.asarray(Y0),
        method="DOP853",
        t_eval=np.asarray(TS),
        rtol=1e-13,
        atol=1e-13,
    )
    return sol.y.T


ADJOINT = "checkpoint"  # or "backsolve" (--adjoint)


def make(lib, grad, batch=0):
    """The benchmark solve through `lib` (odejax or diffrax: the same API)."""
    adjoint = lib.BacksolveAdjoint() if ADJOINT == "backsolve" else lib.RecursiveCheckpointAdjoint()

    def solve(y0, p):
        sol = lib.diffeqsolve(
            lib.ODETerm(vf),
            lib.Tsit5(),
            T0,
            T1,
            0.01,
            y0,
            p,
            saveat=lib.SaveAt(ts=TS),
            stepsize_controller=lib.PIDController(rtol=RTOL, atol=ATOL),
            max_steps=4096,
            adjoint=adjoint,
        )
        return sol.ys, sol.stats["num_steps"]

    return _wrap(solve, grad, batch)


def make_odejax(grad, batch=0):
    return make(odejax, grad, batch)


def make_diffrax(grad, batch=0):
    import diffrax

    return make(diffrax, grad, batch)


def _wrap(solve, grad, batch=0):
    if batch:
        # vmap over `batch` initial conditions (each takes its own adaptive steps).
        scale = jnp.linspace(0.5, 1.5, batch)[:, None]

        def batched(y0, p):
            return jax.vmap(solve, in_axes=(0, None))(scale * y0, p)

        return _wrap(batched, grad)
    if not grad:
        return solve

    def loss(y0, p):
        ys, steps = solve(y0, p)
        return jnp.mean((ys - 1.0) ** 2), jnp.max(steps)

    def g(y0, p):
        return jax.grad(loss, argnums=(0, 1), has_aux=True)(y0, p)

    return g


def count_eqns(jaxpr):
    """Number of jaxpr equations, counting those inside nested jaxprs (loops, conds)."""
    n = 0
    for eqn in jaxpr.eqns:
        n += 1
        for param in eqn.params.values():
            for sub in param if isinstance(param, (list, tuple)) else [param]:
                if hasattr(sub, "jaxpr") and hasattr(sub.jaxpr, "eqns"):
                    n += count_eqns(sub.jaxpr)
                elif hasattr(sub, "eqns"):
                    n += count_eqns(sub)
    return n


def compile_time(fn, compiles):
    """Median wall time of `jit(fn).lower(...).compile()` from a cold cache."""
    times = []
    for _ in range(compiles):
        jax.clear_caches()
        t = time.perf_counter()
        jax.jit(fn).lower(Y0, P).compile()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def measure(fns, repeats, compiles):
    """Per library: jaxpr size, median cold compile time, median run time, output.
    Run times are measured with the libraries interleaved call by call, so that
    machine noise hits them alike."""
    stats = {}
    compiled = {}
    # Cold compiles interleaved library by library (one each per round), so that the
    # machine's drift hits both alike.
    comp = {name: [] for name in fns}
    for _ in range(compiles):
        for name, fn in fns.items():
            comp[name].append(compile_time(fn, 1))
    for name, fn in fns.items():
        n_eqns = count_eqns(jax.make_jaxpr(fn)(Y0, P).jaxpr)
        stats[name] = [n_eqns, statistics.median(comp[name])]
    for name, fn in fns.items():
        compiled[name] = jax.jit(fn).lower(Y0, P).compile()
        stats[name].append(jax.block_until_ready(compiled[name](Y0, P)))
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, c in compiled.items():
            t = time.perf_counter()
            jax.block_until_ready(c(Y0, P))
            times[name].append(time.perf_counter() - t)
    return {
        name: (n, comp, statistics.median(times[name]), out)
        for name, (n, comp, out) in stats.items()
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--compiles", type=int, default=5, help="cold compiles to time")
    parser.add_argument("--grad", action="store_true", help="time jit(grad(loss)) instead")
    parser.add_argument("--batch", type=int, default=0, help="vmap over this many y0")
    parser.add_argument(
        "--adjoint",
        choices=["checkpoint", "backsolve"],
        default="checkpoint",
        help="with --grad: RecursiveCheckpointAdjoint or BacksolveAdjoint (both libraries)",
    )
    args = parser.parse_args()
    global ADJOINT
    ADJOINT = args.adjoint
    ref = reference()
    rows = {}
    makers = [("odejax", make_odejax), ("diffrax", make_diffrax)]
    fns = {}
    for name, make in makers:
        try:
            fns[name] = make(args.grad, args.batch)
        except ImportError:
            print(f"{name}: not installed, skipped")
    # Warm up JAX itself (first-use costs) before timing anything.
    jax.block_until_ready(jax.jit(lambda x: x + 1)(Y0))
    for name, (n_eqns, comp, run, out) in measure(fns, args.repeats, args.compiles).items():
        if args.grad:
            (g_y0, g_p), steps = out
            err = float("nan")
            extra = f"grad_y0={np.asarray(g_y0)}"
        else:
            ys, steps = out
            if args.batch:  # the middle of the batch is close to the reference y0
                err, extra = float("nan"), "max steps over batch"
                steps = np.max(steps)
            else:
                err = float(np.max(np.abs(np.asarray(ys) - ref)))
                extra = ""
        rows[name] = (n_eqns, comp, run, int(steps), err, extra)
    mode = f"jit(grad(loss)), {args.adjoint}" if args.grad else "jit(solve)"
    if args.batch:
        mode = f"vmap over {args.batch} y0, " + mode
    print(
        f"Lotka-Volterra, Tsit5, rtol=atol={RTOL}, float64, {mode}, device={jax.devices()[0].platform}"
    )
    print(
        f"{'library':<10}{'jaxpr eqns':>12}{'compile s':>12}{'run ms':>12}{'steps':>8}{'max err':>12}"
    )
    for name, (n, c, r, s, e, extra) in rows.items():
        print(f"{name:<10}{n:>12}{c:>12.3f}{r * 1e3:>12.3f}{s:>8}{e:>12.2e}  {extra}")
    if "odejax" in rows and "diffrax" in rows:
        o, d = rows["odejax"], rows["diffrax"]
        print(
            f"ratio odejax/diffrax: jaxpr eqns {o[0] / d[0]:.2f}, compile {o[1] / d[1]:.2f}, "
            f"run {o[2] / d[2]:.2f}"
        )


if __name__ == "__main__":
    main()
