# Stub of the compiled core (fastlstm/_core.pyx) for type checkers and editors. The core is
# private: fastlstm's Python modules validate every argument before they call it.
from typing import Any, Optional

import numpy as np
from numpy.typing import NDArray

_Activation = tuple[str, float, float]   # (name, alpha, beta), as fastlstm.activations gives

ACTIVATION_CODES: dict[str, int]

def set_blas_thread_control(setter: int, getter: int) -> None: ...
def apply_activation(spec: _Activation, values: NDArray[np.float32]) -> None: ...

class CellKernel:
    w_ih: NDArray[np.float32]
    w_hh: NDArray[np.float32]
    bias: NDArray[np.float32]
    w_hr: Optional[NDArray[np.float32]]
    peephole: Optional[NDArray[np.float32]]
    w_ih_packed: NDArray[np.float32]
    w_hh_packed: NDArray[np.float32]
    w_hr_packed: Optional[NDArray[np.float32]]
    input_size: int
    hidden_size: int
    output_size: int
    def __init__(self, w_ih: Any, w_hh: Any, bias: Any, w_hr: Any, peephole: Any, *,
                 gate_act: _Activation, cell_act: _Activation, out_act: _Activation,
                 gate_clip: Optional[float], cell_clip: Optional[float],
                 proj_clip: Optional[float], input_forget: bool) -> None: ...

class Workspace:
    gx: NDArray[np.float32]
    pre: NDArray[np.float32]
    hs: NDArray[np.float32]
    hs2: NDArray[np.float32]
    cs: NDArray[np.float32]
    hfull: NDArray[np.float32]
    buf_a: NDArray[np.float32]
    buf_b: NDArray[np.float32]
    xc: NDArray[np.float32]
    rows: int
    batch: int
    nbytes: int
    def __init__(self, layers: list[list[CellKernel]], rows: int, batch: int,
                 compact: bool = False) -> None: ...
    def fits(self, layers: list[list[CellKernel]], rows: int, batch: int,
             compact: bool = False) -> bool: ...

class Plan:
    def __init__(self, layers: list[list[CellKernel]], batch: int, steps: int,
                 batch_first: bool, h0: list[Any], c0: list[Any], hn: list[Any],
                 cn: list[Any], lengths: Optional[NDArray[np.int32]],
                 order: Optional[NDArray[np.int32]], ws: Workspace, stepwise: bool,
                 gx_start: Optional[NDArray[np.int64]] = None) -> None: ...
    def run(self, x: NDArray[np.float32], y: Optional[NDArray[np.float32]],
            num_threads: int) -> None: ...
    def step(self, x_t: object, num_threads: int) -> Optional[NDArray[np.float32]]: ...

def run_stack(layers: list[list[CellKernel]], x: NDArray[np.float32], batch_first: bool,
              h0: list[Any], c0: list[Any], hn: list[Any], cn: list[Any],
              lengths: Optional[NDArray[np.int32]], order: Optional[NDArray[np.int32]],
              y: Optional[NDArray[np.float32]], ws: Workspace, num_threads: int,
              stepwise: bool = False, gx_start: Optional[NDArray[np.int64]] = None) -> None: ...
def projects_by_step(batch: int) -> bool: ...
def runtime_facts() -> dict[str, Any]: ...
