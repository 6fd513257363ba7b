"""Where the compile time of the Lotka-Volterra benchmark goes, odejax and diffrax.

Cold compile times on a shared 2-core machine vary by 15-20% from one compile to the
next, which hides the effect of most changes. This script prints, besides the times
(median over cold compiles, the libraries interleaved), two counts of the compiled
program that do not vary: its kernels (fusions and other instructions that run in the
loop bodies and at the top level) and the HLO instructions inside its fusions (what
LLVM compiles). Judge a structural change by the counts first, and by the times only
from interleaved runs.

Run: python benchmarks/compile_profile.py [--grad] [--adjoint checkpoint|backsolve]
[--compiles N]. For XLA's own split (HLO passes / LLVM code generation), run with
`TF_CPP_MIN_LOG_LEVEL=0 TF_CPP_VMODULE=cpu_compiler=1`: XLA then logs both times.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time

import jax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lotka_volterra as lv  # (switches on float64)

# Instructions of a non-fused computation that are no work of their own.
_FREE = {"get-tuple-element", "parameter", "tuple", "constant", "bitcast"}


def hlo_counts(hlo_text):
    """(kernels, instructions inside fusions) of a compiled program's HLO text."""
    comps, current = {}, None
    for line in hlo_text.split("\n"):
        m = re.match(r"^(ENTRY )?%?([\w.\-]+) .*\{$", line)
        if m:
            current = m.group(2)
            comps[current] = []
        elif line.startswith("}"):
            current = None
        elif current is not None:
            comps[current].append(line)
    kernels = fused = 0
    for name, lines in comps.items():
        if name.startswith(("fused", "wrapped")):
            fused += len(lines)
            continue
        for line in lines:
            m = re.search(r"= \S+ ([a-z\-]+)\(", line)
            if m and m.group(1) not in _FREE:
                kernels += 1
    return kernels, fused


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--grad", action="store_true", help="jit(grad(loss)) instead of jit(solve)")
    parser.add_argument("--adjoint", choices=["checkpoint", "backsolve"], default="checkpoint")
    parser.add_argument("--compiles", type=int, default=5)
    args = parser.parse_args()
    lv.ADJOINT = args.adjoint
    fns = {"odejax": lv.make_odejax(args.grad)}
    try:
        fns["diffrax"] = lv.make_diffrax(args.grad)
    except ImportError:
        print("diffrax: not installed, skipped")
    jax.block_until_ready(jax.jit(lambda x: x + 1)(lv.Y0))  # JAX's first-use costs
    times = {name: ([], []) for name in fns}
    texts = {}
    for _ in range(args.compiles):
        for name, fn in fns.items():
            jax.clear_caches()
            t = time.perf_counter()
            lowered = jax.jit(fn).trace(lv.Y0, lv.P).lower()
            t_lower = time.perf_counter()
            compiled = lowered.compile()
            t_end = time.perf_counter()
            times[name][0].append(t_lower - t)
            times[name][1].append(t_end - t_lower)
            texts[name] = compiled.as_text()
    mode = f"jit(grad(loss)), {args.adjoint}" if args.grad else "jit(solve)"
    print(f"Lotka-Volterra, {mode}, device={jax.devices()[0].platform}, {args.compiles} compiles")
    print(
        f"{'library':<10}{'trace+lower s':>15}{'XLA s':>10}{'total s':>10}"
        f"{'kernels':>10}{'fused instrs':>14}"
    )
    rows = {}
    for name in fns:
        tl, xla = statistics.median(times[name][0]), statistics.median(times[name][1])
        kernels, fused = hlo_counts(texts[name])
        rows[name] = (tl, xla, tl + xla, kernels, fused)
        print(f"{name:<10}{tl:>15.3f}{xla:>10.3f}{tl + xla:>10.3f}{kernels:>10}{fused:>14}")
    if len(rows) == 2:
        o, d = rows["odejax"], rows["diffrax"]
        print(
            "ratio odejax/diffrax: "
            + ", ".join(
                f"{k} {a / b:.2f}"
                for k, a, b in zip(["trace+lower", "XLA", "total", "kernels", "fused"], o, d)
            )
        )


if __name__ == "__main__":
    main()
