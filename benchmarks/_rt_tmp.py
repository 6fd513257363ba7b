import sys, time, statistics, jax
jax.config.update("jax_enable_x64", True)
sys.path.insert(0, "benchmarks")
import lotka_volterra as lv
fo = jax.jit(lv.make_odejax(False)); fd = jax.jit(lv.make_diffrax(False))
jax.block_until_ready(fo(lv.Y0, lv.P)); jax.block_until_ready(fd(lv.Y0, lv.P))
to, td = [], []
for _ in range(400):
    t = time.perf_counter(); jax.block_until_ready(fo(lv.Y0, lv.P)); to.append(time.perf_counter() - t)
    t = time.perf_counter(); jax.block_until_ready(fd(lv.Y0, lv.P)); td.append(time.perf_counter() - t)
print(f"odejax {statistics.median(to)*1e3:.3f} ms  diffrax {statistics.median(td)*1e3:.3f} ms ratio {statistics.median(to)/statistics.median(td):.2f}")
