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
    w_ih_packed: Optional[NDArray[np.float32]]
    w_hh_packed: Optional[NDArray[np.float32]]
    w_hr_packed: Optional[NDArray[np.float32]]
    quantized: dict[str, tuple[Any, Any, Any]]
    input_size: int
    hidden_size: int
    output_size: int
    reverse: bool
    precision: str
    def __init__(self, w_ih: Any, w_hh: Any, bias: Any, w_hr: Any, peephole: Any, *,
                 gate_act: _Activation, cell_act: _Activation, out_act: _Activation,
                 gate_clip: Optional[float], cell_clip: Optional[float],
                 proj_clip: Optional[float], input_forget: bool,
                 reverse: bool = False, precision: str = "float32",
                 codes: Optional[dict[str, tuple[Any, Any]]] = None) -> None: ...

PRECISION_CODES: dict[str, int]

class Plan:
    batch: int
    steps: int
    lengths: bool
    stepwise: bool
    uses_blas: bool
    compact: bool
    threads: int
    floats: tuple[int, ...]
    nbytes: int
    projected_rows: int
    gates: int
    cells: tuple[tuple[tuple[int, int, int, int], ...], ...]
    @property
    def decisions(self) -> list[dict[str, int]]: ...

def plan(layers: list[list[CellKernel]], batch: int, steps: int, lengths: bool,
         stepwise: bool, threads: int) -> Plan: ...

class Workspace:
    def __init__(self, plan: Plan, at_least: Optional[Workspace] = ...) -> None: ...
    qx: NDArray[np.float32]
    qh: NDArray[np.float32]
    gx: NDArray[np.float32]
    pre: NDArray[np.float32]
    hs: NDArray[np.float32]
    hs2: NDArray[np.float32]
    cs: NDArray[np.float32]
    hfull: NDArray[np.float32]
    buf_a: NDArray[np.float32]
    buf_b: NDArray[np.float32]
    xc: NDArray[np.float32]
    floats: tuple[int, ...]
    nbytes: int
    def __init__(self, plan: Plan) -> None: ...
    def fits(self, plan: Plan) -> bool: ...

class Runner:
    plan: Plan
    workspace: Workspace
    def __init__(self, layers: list[list[CellKernel]], plan: Plan, batch_first: bool,
                 ws: Workspace) -> None: ...
    def bind_state(self, h: list[NDArray[np.float32]], c: list[NDArray[np.float32]]) -> None: ...
    def run(self, x: NDArray[np.float32], y: Optional[NDArray[np.float32]], h0: Any, c0: Any,
            hn: Any, cn: Any, lengths: Optional[NDArray[np.int32]]) -> None: ...
    def step_rows(self, x: NDArray[np.float32], y: NDArray[np.float32],
                  h: list[NDArray[np.float32]], c: list[NDArray[np.float32]],
                  rows: NDArray[np.int32]) -> None: ...
    def step(self, x_t: object, threads: int) -> Optional[NDArray[np.float32]]: ...

def executions() -> int: ...
def gather_rows(values: Any, out: NDArray[np.float32]) -> int: ...
def runtime_facts() -> dict[str, Any]: ...
