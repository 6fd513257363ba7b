"""Neural-ODE training step through odejax, diffrax and torchdiffeq, in one process run.

Problem (the adjoint issue): state dimension 32, vector field an MLP 32 -> 128 -> 128
-> 32 (tanh, biases) applied to a batch of 256 initial conditions solved as one
system (one shared step size, as torchdiffeq does), float32, t in [0, 1],
PIDController(rtol=1e-3, atol=1e-6), dt0 chosen automatically, loss = mean squared
error against fixed targets at the saved times (t = 0.25, 0.5, 0.75, 1 by default;
`--nsave 1`: the final state only), optimiser adam(lr=1e-3) (optax for JAX,
torch.optim.Adam for torch). The same initial weights (NumPy, fixed seed) and data for
all three libraries. The weights are drawn N(0, gain^2 / fan_in) with gain 3 (`--gain`)
so that the solve takes ~10 Tsit5 steps; the default init gives 3 steps, where fixed
per-step costs would dominate.

Solvers: Tsit5 for odejax and diffrax. torchdiffeq has no Tsit5; its nearest method is
dopri5, so torchdiffeq runs dopri5, and odejax and diffrax also run Dopri5 as extra
rows (the like-for-like comparison).

Adjoints (`--adjoint checkpoint|backsolve|both`):
- checkpoint: odejax and diffrax RecursiveCheckpointAdjoint; torchdiffeq `odeint`
  (backpropagation through the solver's operations).
- backsolve: odejax and diffrax BacksolveAdjoint; torchdiffeq `odeint_adjoint`. Each
  with its library's default norm for the backward solve (`--seminorm`: the adjoint
  seminorm in all three instead).

Reported per row: compile time of the jitted training step (jit(value_and_grad) plus
the optax update; median over `--compiles` cold `jit(step).lower(...).compile()`; in
brackets its tracing + lowering part, the rest being XLA's compile),
median wall time of a training step (libraries interleaved step by step, after
warm-up), vector-field evaluations in one step (counted at the initial weights, see
below), solver overhead, the initial loss and the gradient's relative difference from
odejax's with the same method and adjoint.

Vector-field evaluations: `fwd` = evaluations in the forward solve, `bwd` = those of
the backward (adjoint) solve (0 for backpropagation through the solver), `executed` =
every primal evaluation run in the step (JAX: counted with a `jax.debug.callback` in a
separately compiled copy of the step; for backpropagation this includes re-running the
forward steps from checkpoints and inside each step's VJP; torch: calls of the module's
forward). Overhead = step time / the MLP work the method needs, in units timed in
the same framework on batch 256: backpropagation, fwd x (one forward+VJP, cotangents
to weights and input); backsolve, fwd x (one forward) + bwd x (one forward+VJP). 1
means the step costs exactly its MLP work (recomputation from checkpoints, the loop,
the optimiser update and dispatch are the rest). JAX's units are timed inside a
compiled loop (as the solver runs them), torch's as eager calls.

Run: python benchmarks/neural_ode.py [--adjoint checkpoint|backsolve|both]
[--solvers tsit5,dopri5] [--steps N] [--warmup N] [--compiles N] [--seminorm]
[--torch-threads 2,1] [--no-torch] [--no-diffrax] [--quick]. `--quick` is
--steps 5 --warmup 1 --solvers tsit5 (a few minutes on 2 cores; the default run ~8).
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import odejax

DIM, WIDTH, DEPTH, BATCH = 32, 128, 2, 256
RTOL, ATOL = 1e-3, 1e-6
T0, T1 = 0.0, 1.0
LR = 1e-3
MAX_STEPS = 4096
NCPU = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()

# --------------------------------------------------------------------------- data


def init_weights(gain, seed=0):
    """[(W (out, in), b (out,))] for 32 -> 128 -> 128 -> 32, float32 (torch's layout)."""
    rng = np.random.default_rng(seed)
    sizes = [DIM] + [WIDTH] * DEPTH + [DIM]
    out = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        w = rng.standard_normal((fan_out, fan_in)) * gain / np.sqrt(fan_in)
        b = rng.standard_normal(fan_out) * 0.1
        out.append((w.astype(np.float32), b.astype(np.float32)))
    return out


def make_data(nsave, seed=1):
    rng = np.random.default_rng(seed)
    y0 = rng.standard_normal((BATCH, DIM)).astype(np.float32)
    targets = rng.standard_normal((nsave, BATCH, DIM)).astype(np.float32)
    ts = np.linspace(T0, T1, nsave + 1)[1:].astype(np.float32)
    return y0, targets, ts


# --------------------------------------------------------------------------- JAX

_COUNT = [0]


def _bump():
    _COUNT[0] += 1


class Field(eqx.Module):
    """y' = MLP(y) for each row of the (batch, 32) state."""

    mlp: eqx.nn.MLP
    count: bool = eqx.field(static=True, default=False)

    def __call__(self, t, y, args):
        if self.count:
            jax.debug.callback(_bump)
        return jax.vmap(self.mlp)(y)


def jax_field(weights, count=False):
    mlp = eqx.nn.MLP(DIM, DIM, WIDTH, DEPTH, activation=jnp.tanh, key=jax.random.PRNGKey(0))
    for i, (w, b) in enumerate(weights):
        mlp = eqx.tree_at(
            lambda m, i=i: (m.layers[i].weight, m.layers[i].bias),
            mlp,
            (jnp.asarray(w), jnp.asarray(b)),
        )
    return Field(mlp, count)


def jax_loss_fn(lib, solver, adjoint, ts, seminorm):
    solver = getattr(lib, solver)()
    if adjoint == "checkpoint":
        adj = lib.RecursiveCheckpointAdjoint()
    elif seminorm:
        ctrl = lib.PIDController(rtol=RTOL, atol=ATOL, norm=lib.adjoint_rms_seminorm)
        adj = lib.BacksolveAdjoint(stepsize_controller=ctrl)
    else:
        adj = lib.BacksolveAdjoint()
    ts = jnp.asarray(ts)

    def loss(field, y0, targets):
        sol = lib.diffeqsolve(
            lib.ODETerm(field),
            solver,
            T0,
            T1,
            None,
            y0,
            saveat=lib.SaveAt(ts=ts),
            stepsize_controller=lib.PIDController(rtol=RTOL, atol=ATOL),
            max_steps=MAX_STEPS,
            adjoint=adj,
        )
        return jnp.mean((sol.ys - targets) ** 2), sol.stats["num_steps"]

    return loss


class JaxRun:
    def __init__(self, lib, solver, adjoint, weights, data, seminorm, compiles):
        y0, targets, ts = data
        self.y0, self.targets = jnp.asarray(y0), jnp.asarray(targets)
        loss = jax_loss_fn(lib, solver, adjoint, ts, seminorm)
        opt = optax.adam(LR)
        field = jax_field(weights)
        params, static = eqx.partition(field, eqx.is_inexact_array)

        def step(params, opt_state, y0, targets):
            def f(p):
                return loss(eqx.combine(p, static), y0, targets)

            (value, nsteps), grads = jax.value_and_grad(f, has_aux=True)(params)
            updates, opt_state = opt.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, value, nsteps

        self.params, self.opt_state = params, opt.init(params)
        args = (self.params, self.opt_state, self.y0, self.targets)
        times = []
        for _ in range(compiles):
            jax.clear_caches()
            t = time.perf_counter()
            lowered = jax.jit(step).lower(*args)
            t_lower = time.perf_counter() - t
            self.compiled = lowered.compile()
            times.append((time.perf_counter() - t, t_lower))
        self.compile_s, self.lower_s = sorted(times)[len(times) // 2]

        # Counting copy (separately compiled; not timed): evaluations in the forward
        # solve alone, and every primal evaluation in a gradient, at the initial weights.
        cfield = jax_field(weights, count=True)
        cparams, cstatic = eqx.partition(cfield, eqx.is_inexact_array)

        def closs(p):
            return loss(eqx.combine(p, cstatic), self.y0, self.targets)

        fwd = jax.jit(closs)
        grad = jax.jit(jax.value_and_grad(closs, has_aux=True))
        jax.block_until_ready((fwd(cparams), grad(cparams)))
        jax.effects_barrier()
        _COUNT[0] = 0
        jax.block_until_ready(fwd(cparams))
        jax.effects_barrier()
        self.n_fwd = _COUNT[0]
        _COUNT[0] = 0
        (value, self.n_steps), g = jax.block_until_ready(grad(cparams))
        jax.effects_barrier()
        self.n_exec = _COUNT[0]
        self.loss0 = float(value)
        self.grad0 = np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree.leaves(g)])
        # the backward solve's evaluations: what the gradient ran beyond the forward solve
        self.n_bwd = self.n_exec - self.n_fwd if adjoint == "backsolve" else 0
        self.nsteps_seen = []

    def step(self):
        self.params, self.opt_state, value, nsteps = self.compiled(
            self.params, self.opt_state, self.y0, self.targets
        )
        jax.block_until_ready(self.params)
        self.nsteps_seen.append(int(nsteps))
        return float(value)


def time_jax_unit(weights, reps=50, repeats=20):
    """Seconds of one batched MLP forward+VJP (cotangents to weights and input) in JAX,
    inside a compiled loop (as the solver runs it), and of one forward."""
    field = jax_field(weights)
    params, static = eqx.partition(field, eqx.is_inexact_array)
    rng = np.random.default_rng(2)
    y = jnp.asarray(rng.standard_normal((BATCH, DIM)).astype(np.float32))
    ct = jnp.asarray(rng.standard_normal((BATCH, DIM)).astype(np.float32))

    def apply(p, y):
        return eqx.combine(p, static)(0.0, y, None)

    @jax.jit
    def many_vjp(p, y, ct):
        def body(i, carry):
            y, acc = carry
            _, vjp = jax.vjp(apply, p, y)
            gp, gy = vjp(ct)
            return y + 1e-6 * gy, jax.tree.map(jnp.add, acc, gp)

        return jax.lax.fori_loop(0, reps, body, (y, jax.tree.map(jnp.zeros_like, p)))

    @jax.jit
    def many_fwd(p, y):
        return jax.lax.fori_loop(0, reps, lambda i, y: y + 1e-6 * apply(p, y), y)

    out = {}
    for name, fn, args in (("vjp", many_vjp, (params, y, ct)), ("fwd", many_fwd, (params, y))):
        jax.block_until_ready(fn(*args))
        ts = []
        for _ in range(repeats):
            t = time.perf_counter()
            jax.block_until_ready(fn(*args))
            ts.append(time.perf_counter() - t)
        out[name] = statistics.median(ts) / reps
    return out


# --------------------------------------------------------------------------- torch


def torch_setup(threads=None):
    import torch

    torch.set_num_threads(threads or NCPU)
    return torch


class TorchRun:
    def __init__(self, adjoint, weights, data, seminorm, threads):
        torch = torch_setup(threads)
        self.threads = threads
        import torchdiffeq

        y0, targets, ts = data
        self.torch = torch
        self.module = torch_module(weights)
        self.y0 = torch.from_numpy(y0)
        self.targets = torch.from_numpy(targets)
        self.t = torch.from_numpy(np.concatenate([[T0], ts]).astype(np.float32))
        self.opt = torch.optim.Adam(self.module.parameters(), lr=LR)
        if adjoint == "checkpoint":
            self.odeint = torchdiffeq.odeint
            self.kw = {}
        else:
            self.odeint = torchdiffeq.odeint_adjoint
            self.kw = {"adjoint_options": {"norm": "seminorm"}} if seminorm else {}
        self.compile_s = self.lower_s = float("nan")
        # Count at the initial weights (the module counts its forward calls).
        self.module.calls = 0
        loss = self._loss()
        self.n_fwd = self.module.calls
        grads = torch.autograd.grad(loss, list(self.module.parameters()))
        self.n_exec = self.module.calls
        self.n_bwd = self.n_exec - self.n_fwd
        self.loss0 = float(loss.detach())
        self.grad0 = np.concatenate([g.detach().numpy().ravel() for g in grads])
        self.nsteps_seen = []

    def _loss(self):
        ys = self.odeint(
            self.module, self.y0, self.t, rtol=RTOL, atol=ATOL, method="dopri5", **self.kw
        )
        return ((ys[1:] - self.targets) ** 2).mean()

    def step(self):
        self.torch.set_num_threads(self.threads)
        self.opt.zero_grad()
        self.module.calls = 0
        loss = self._loss()
        loss.backward()
        self.opt.step()
        self.nsteps_seen.append(self.module.calls)
        return float(loss.detach())


def torch_module(weights):
    import torch

    class Field(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.ModuleList(
                [torch.nn.Linear(w.shape[1], w.shape[0]) for w, _ in weights]
            )
            with torch.no_grad():
                for lin, (w, b) in zip(self.layers, weights):
                    lin.weight.copy_(torch.from_numpy(w))
                    lin.bias.copy_(torch.from_numpy(b))
            self.calls = 0

        def forward(self, t, y):
            self.calls += 1
            for i, lin in enumerate(self.layers):
                y = lin(y)
                if i < len(self.layers) - 1:
                    y = torch.tanh(y)
            return y

    return Field()


def time_torch_unit(weights, threads, repeats=200):
    torch = torch_setup(threads)
    module = torch_module(weights)
    params = list(module.parameters())
    rng = np.random.default_rng(2)
    y = torch.from_numpy(rng.standard_normal((BATCH, DIM)).astype(np.float32))
    ct = torch.from_numpy(rng.standard_normal((BATCH, DIM)).astype(np.float32))

    def vjp():
        yy = y.detach().requires_grad_(True)
        out = module(0.0, yy)
        return torch.autograd.grad(out, [yy] + params, ct)

    def fwd():
        with torch.no_grad():
            return module(0.0, y)

    out = {}
    for name, fn in (("vjp", vjp), ("fwd", fwd)):
        for _ in range(20):
            fn()
        ts = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        out[name] = statistics.median(ts)
    return out


# --------------------------------------------------------------------------- main


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--adjoint", choices=["checkpoint", "backsolve", "both"], default="both")
    parser.add_argument("--solvers", default="tsit5,dopri5", help="JAX solvers (comma list)")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per row")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--compiles", type=int, default=1, help="cold compiles to time (median)")
    parser.add_argument("--gain", type=float, default=3.0, help="weight scale (see docstring)")
    parser.add_argument("--nsave", type=int, default=4, help="saved times in the loss")
    parser.add_argument("--seminorm", action="store_true", help="adjoint seminorm (backsolve)")
    parser.add_argument(
        "--torch-threads",
        default=str(NCPU),
        help="torch intra-op threads, a comma list (one torchdiffeq row each); default: "
        "the CPUs JAX uses",
    )
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--no-diffrax", action="store_true")
    parser.add_argument(
        "--quick", action="store_true", help="--steps 5 --warmup 1 --solvers tsit5 (~3 min)"
    )
    args = parser.parse_args()
    if args.quick:
        args.steps, args.warmup, args.solvers = 5, 1, "tsit5"

    weights = init_weights(args.gain)
    data = make_data(args.nsave)
    adjoints = ["checkpoint", "backsolve"] if args.adjoint == "both" else [args.adjoint]
    solvers = {"tsit5": "Tsit5", "dopri5": "Dopri5"}
    solvers = [solvers[s.strip().lower()] for s in args.solvers.split(",")]
    libs = [("odejax", odejax)]
    if not args.no_diffrax:
        try:
            import diffrax

            libs.append(("diffrax", diffrax))
        except ImportError:
            print("diffrax: not installed, skipped")
    threads = [] if args.no_torch else [int(x) for x in args.torch_threads.split(",")]
    if threads:
        try:
            import torch  # noqa: F401
            import torchdiffeq  # noqa: F401
        except ImportError:
            print("torch/torchdiffeq: not installed, skipped")
            threads = []
    tnames = {th: "torchdiffeq" + (f" {th}t" if len(threads) > 1 else "") for th in threads}

    # Warm up JAX itself before timing anything.
    jax.block_until_ready(jax.jit(lambda x: x + 1)(jnp.zeros(3)))
    runs = {}  # (adjoint, solver, library) -> run
    for adjoint in adjoints:
        for solver in solvers:
            for name, lib in libs:
                t = time.perf_counter()
                runs[adjoint, solver, name] = JaxRun(
                    lib, solver, adjoint, weights, data, args.seminorm, args.compiles
                )
                print(
                    f"  set up {name} {solver} {adjoint} ({time.perf_counter() - t:.1f} s)",
                    flush=True,
                )
        for th in threads:
            runs[adjoint, "dopri5", tnames[th]] = TorchRun(
                adjoint, weights, data, args.seminorm, th
            )

    unit = {"jax": time_jax_unit(weights)}
    for th in threads:
        unit[tnames[th]] = time_torch_unit(weights, th)

    # Training steps, interleaved row by row so that machine noise hits all alike.
    for _ in range(args.warmup):
        for run in runs.values():
            run.step()
    for run in runs.values():
        run.nsteps_seen.clear()
    times = {key: [] for key in runs}
    for _ in range(args.steps):
        for key, run in runs.items():
            t = time.perf_counter()
            run.step()
            times[key].append(time.perf_counter() - t)
    med = {key: statistics.median(v) for key, v in times.items()}

    import importlib.metadata as md

    def ver(p):
        try:
            return md.version(p)
        except md.PackageNotFoundError:
            return "-"

    print()
    print(
        f"Neural ODE training step: MLP {DIM}->{WIDTH}->{WIDTH}->{DIM} tanh (gain {args.gain}), "
        f"batch {BATCH}, float32, t in [{T0}, {T1}], rtol={RTOL}, atol={ATOL}, "
        f"loss at {args.nsave} saved time(s), adam lr={LR}"
    )
    print(
        f"device={jax.devices()[0].platform}, cpus={NCPU}, torch threads="
        f"{','.join(map(str, threads)) or '-'}; "
        f"jax {jax.__version__}, diffrax {ver('diffrax')}, equinox {ver('equinox')}, "
        f"torch {ver('torch')}, torchdiffeq {ver('torchdiffeq')}; "
        f"{args.steps} timed steps after {args.warmup} warm-up"
        + ("; backsolve with the adjoint seminorm" if args.seminorm else "")
    )
    print(
        "torchdiffeq has no Tsit5: its rows are dopri5 (compare them with the Dopri5 rows); "
        "checkpoint = RecursiveCheckpointAdjoint / torchdiffeq odeint (backprop through "
        "the solver); backsolve = BacksolveAdjoint / torchdiffeq odeint_adjoint"
    )
    print(
        "one batched MLP forward+VJP (forward alone): "
        + ", ".join(f"{k} {u['vjp'] * 1e3:.3f} ms ({u['fwd'] * 1e3:.3f})" for k, u in unit.items())
    )
    print(
        f"{'adjoint':<11}{'solver':<8}{'library':<16}{'compile s':>10}{'(lower)':>8}{'step ms':>9}"
        f"{'fwd':>6}{'bwd':>6}{'executed':>9}{'overhead':>9}{'loss0':>10}{'grad diff':>11}"
        f"{'steps':>7}"
    )
    for (adjoint, solver, name), run in runs.items():
        torch_row = name.startswith("torchdiffeq")
        u = unit[name] if torch_row else unit["jax"]
        # The MLP work the method needs: backpropagation pays forward+VJP for each forward
        # evaluation; backsolve pays a forward for each forward-solve evaluation and a
        # forward+VJP for each backward-solve evaluation.
        if adjoint == "checkpoint":
            work = run.n_fwd * u["vjp"]
        else:
            work = run.n_fwd * u["fwd"] + run.n_bwd * u["vjp"]
        overhead = med[adjoint, solver, name] / work
        ref = runs.get((adjoint, "Dopri5" if torch_row else solver, "odejax"))
        diff = (
            np.linalg.norm(run.grad0 - ref.grad0) / np.linalg.norm(ref.grad0)
            if ref is not None and ref is not run
            else float("nan")
        )
        steps = "-" if torch_row else f"{min(run.nsteps_seen)}-{max(run.nsteps_seen)}"
        solver_txt = "dopri5" if torch_row else solver
        print(
            f"{adjoint:<11}{solver_txt:<8}{name:<16}{run.compile_s:>10.2f}{run.lower_s:>8.2f}"
            f"{med[adjoint, solver, name] * 1e3:>9.1f}{run.n_fwd:>6}{run.n_bwd:>6}"
            f"{run.n_exec:>9}{overhead:>9.2f}{run.loss0:>10.5f}{diff:>11.1e}{steps:>7}"
        )
    print("ratios (step time; compile time):")
    for adjoint in adjoints:
        for solver in solvers:
            o = (adjoint, solver, "odejax")
            parts = []
            d = (adjoint, solver, "diffrax")
            if d in runs:
                parts.append(
                    f"odejax/diffrax {med[o] / med[d]:.2f}; compile "
                    f"{runs[o].compile_s / runs[d].compile_s:.2f} "
                    f"({runs[o].compile_s:.1f} s / {runs[d].compile_s:.1f} s)"
                )
            for th in threads:
                tkey = (adjoint, "dopri5", tnames[th])
                parts.append(f"odejax/{tnames[th]} (dopri5) {med[o] / med[tkey]:.2f}")
            print(f"  {adjoint:<11}{solver:<8}" + "; ".join(parts))


if __name__ == "__main__":
    main()
