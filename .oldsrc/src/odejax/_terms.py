"""Terms: what is being integrated."""

from __future__ import annotations

import abc
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp


class AbstractTerm(eqx.Module):
    """Base class of terms. A term says how to evaluate the right-hand side of an ODE.

    Contract: `vf(t, y, args)` returns a PyTree with the same structure, shapes and
    dtypes as `y`.
    """

    @abc.abstractmethod
    def vf(self, t, y, args):
        """Evaluate the vector field at `(t, y)`."""


class ODETerm(AbstractTerm):
    """The ODE `dy/dt = vector_field(t, y, args)`.

    **Arguments:**

    - `vector_field`: a callable `(t, y, args) -> dy/dt`, where `y` is any PyTree of
      arrays and the output has the same structure. It may be an `equinox.Module`
      holding parameters (a neural network): gradients flow to them.

    ```python
    term = odejax.ODETerm(lambda t, y, args: -args * y)
    ```
    """

    vector_field: Callable

    def vf(self, t, y, args):
        return self.vector_field(t, y, args)


class _Directed(AbstractTerm):
    """`term` in the time variable tau = direction * t (direction = -1 for backward
    solves): dy/dtau = direction * f(direction * tau, y)."""

    term: AbstractTerm
    direction: object

    def vf(self, t, y, args):
        out = self.term.vf(self.direction * t, y, args)
        return jax.tree.map(lambda v: jnp.where(self.direction > 0, v, -v), out)
