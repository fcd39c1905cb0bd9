"""TF1 cells: the variables of ``tf.compat.v1.nn.rnn_cell.BasicLSTMCell`` / ``LSTMCell``.

A cell's variables, by name (a trailing ``:0`` and any scope prefix are ignored):

- ``kernel`` ``(input + out, 4H)``: x and h stacked on rows (``concat([x, h]) @ kernel``),
  gate blocks i, j, f, o on columns (j is fastlstm's g);
- ``bias`` ``(4H,)``, same gate order;
- ``w_i_diag``, ``w_f_diag``, ``w_o_diag`` ``(H,)`` with ``use_peepholes=True``;
- ``projection/kernel`` ``(H, num_proj)`` with ``num_proj``.

Options the variables do not carry are arguments, with the TF defaults: ``forget_bias``
(added inside the forget sigmoid; 1.0 in TF), ``cell_clip``, ``proj_clip``, ``activation``
(used for both the candidate and the output, as TF does). ``LSTM.from_cells`` stacks the
cells like ``MultiRNNCell``; ``bidirectional=True`` with (forward, backward) pairs is
``bidirectional_dynamic_rnn``. ``dynamic_rnn(sequence_length=...)`` is fastlstm's ``lengths``.
"""
import numpy as np

from .._spec import CellOptions, check_sizes, make_layer
from ._layouts import reorder_gates

_ROLES = {"kernel": "kernel", "bias": "bias", "w_i_diag": "w_i_diag", "w_f_diag": "w_f_diag",
          "w_o_diag": "w_o_diag", "projection/kernel": "projection"}


def _role(name):
    """(scope, role) of a TF variable name, or None for a name that is not a cell variable."""
    name = name[:-2] if name.endswith(":0") else name
    for suffix in ("projection/kernel", "w_i_diag", "w_f_diag", "w_o_diag", "kernel", "bias"):
        if name == suffix or name.endswith("/" + suffix):
            return name[:len(name) - len(suffix)], _ROLES[suffix]
    return None


def _to_numpy(value, name):
    if hasattr(value, "numpy") and not isinstance(value, np.ndarray):
        value = value.numpy()  # an eager tf.Variable / tensor
    arr = np.asarray(value)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"variable {name!r} must be a real array, got {arr.dtype}")
    return arr.astype(np.float64)


def cell_layer(variables, *, forget_bias=1.0, cell_clip=None, proj_clip=None,
               activation="tanh"):
    """Read one TF1 LSTM cell's variables into a one-direction layer."""
    if not hasattr(variables, "items"):
        raise TypeError(f"variables must be a mapping of TF variable names to arrays, "
                        f"got {type(variables).__name__}")
    scopes = {}
    for name, value in variables.items():
        found = _role(str(name))
        if found is None:
            raise ValueError(f"variables: {name!r} is not a TF1 LSTM cell variable (expected "
                             f"names ending in {sorted(_ROLES)})")
        scope, role = found
        scopes.setdefault(scope, {})
        if role in scopes[scope]:
            raise ValueError(f"variables: two {role!r} variables in scope {scope!r}")
        scopes[scope][role] = (name, value)
    if len(scopes) > 1:
        raise ValueError(f"variables hold several cells, scopes {sorted(scopes)}; pass one "
                         f"cell's variables (LSTM.from_cells stacks cells)")
    found = next(iter(scopes.values()), {})
    if "kernel" not in found or "bias" not in found:
        raise ValueError(f"variables need 'kernel' and 'bias', got {sorted(variables)}")
    kernel = _to_numpy(found["kernel"][1], found["kernel"][0])
    bias = _to_numpy(found["bias"][1], found["bias"][0])
    if kernel.ndim != 2 or kernel.shape[1] % 4 or bias.shape != (kernel.shape[1],):
        raise ValueError(f"kernel must be (input + out, 4*hidden) and bias (4*hidden,), "
                         f"got {kernel.shape} and {bias.shape}")
    H = kernel.shape[1] // 4
    params = {"bias_ih": reorder_gates(bias, "tf1", "fastlstm"), "bias_hh": np.zeros(4 * H)}
    proj_size = 0
    if "projection" in found:
        proj = _to_numpy(*reversed(found["projection"]))
        if proj.ndim != 2 or proj.shape[0] != H:
            raise ValueError(f"projection/kernel must be (hidden={H}, num_proj), "
                             f"got {proj.shape}")
        proj_size = proj.shape[1]
        params["weight_hr"] = proj.T
    out = proj_size or H
    input_size, H = check_sizes(kernel.shape[0] - out, H)
    diags = [r for r in ("w_i_diag", "w_f_diag", "w_o_diag") if r in found]
    if diags and len(diags) != 3:
        raise ValueError(f"peepholes need w_i_diag, w_f_diag and w_o_diag, got only {diags}")
    if diags:
        peep = [_to_numpy(*reversed(found[r])) for r in ("w_i_diag", "w_f_diag", "w_o_diag")]
        if any(p.shape != (H,) for p in peep):
            raise ValueError(f"w_i_diag, w_f_diag and w_o_diag must each have shape ({H},), "
                             f"got {[p.shape for p in peep]}")
        params["peephole"] = np.stack(peep)
    gates = reorder_gates(kernel, "tf1", "fastlstm", axis=1).T  # (4H, input + out)
    params["weight_ih"] = gates[:, :input_size]
    params["weight_hh"] = gates[:, input_size:]
    opts = CellOptions.make(H, proj_size=proj_size, forget_bias=forget_bias,
                            activation=activation, peepholes=bool(diags), cell_clip=cell_clip,
                            proj_clip=proj_clip)
    return make_layer(input_size, H, opts, [params], where="TF1 cell")
