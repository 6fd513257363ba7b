import jax
import pytest

# The suite runs in float64 with strict dtype promotion, so that any silent dtype
# promotion inside the library is an error (float32 is tested explicitly).
jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")


@pytest.fixture(autouse=True)
def _strict_promotion():
    with jax.numpy_dtype_promotion("strict"):
        yield
