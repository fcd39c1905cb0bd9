"""Type aliases of the public API's annotations (py.typed: fastlstm is checked by mypy --strict
users; the compiled core has its stub, _core.pyi)."""
import os
from typing import Any, Tuple, Union

import numpy as np
from numpy.typing import ArrayLike, NDArray

Array = NDArray[np.float32]
"""Every output: a float32 NumPy array."""

StateArray = Any
"""h or c of an LSTM: one (num_layers * D, batch, size) float32 array, or a tuple of per-layer
(batch, size) arrays for a stack of cells of different sizes (``LSTM.from_cells``). A type
checker cannot tell the two apart from the call, so this is left open."""

State = Tuple[StateArray, StateArray]
"""(h, c), as calls return them and ``initial_state`` takes them (a list works too)."""

CellState = Tuple[Array, Array]
"""(h, c) of one cell: (batch, output) and (batch, hidden)."""

PathLike = Union[str, "os.PathLike[str]"]

__all__ = ["Array", "ArrayLike", "CellState", "PathLike", "State", "StateArray"]
