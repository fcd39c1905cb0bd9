"""Gate orders of the frameworks and the one function that moves between them.

fastlstm (like PyTorch) stacks the four gate blocks of every 4H axis as i, f, g, o.
Keras uses i, f, c, o (c is our g); TF1 cells i, j, f, o (j is our g); ONNX i, o, f, c.
ONNX peepholes are stacked i, o, f; ours (``peephole``) are i, f, o.
"""
import numpy as np

GATE_ORDERS = {
    "fastlstm": "ifgo",
    "torch": "ifgo",
    "keras": "ifgo",
    "tf1": "igfo",
    "onnx": "iofg",
}


def reorder_gates(arr, src, dst, axis=0):
    """Permute the gate blocks of ``arr`` along ``axis`` from order ``src`` to ``dst``
    (orders are strings over "ifgo", or names from GATE_ORDERS)."""
    src = GATE_ORDERS.get(src, src)
    dst = GATE_ORDERS.get(dst, dst)
    arr = np.asarray(arr)
    n = len(src)
    if arr.shape[axis] % n:
        raise ValueError(f"axis {axis} of length {arr.shape[axis]} does not split into "
                         f"{n} gate blocks")
    blocks = np.split(arr, n, axis=axis)
    return np.concatenate([blocks[src.index(g)] for g in dst], axis=axis)
