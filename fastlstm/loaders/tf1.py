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

Checkpoints (``LSTM.from_tf1_checkpoint``) are read with TensorFlow's checkpoint reader,
only the chosen cells' variables. A cell is a scope named ``lstm_cell`` (LSTMCell, and
contrib's LSTMBlockCell, whose variables have the same names and i, c, f, o layout) or
``basic_lstm_cell`` holding ``kernel`` and ``bias`` (under ``scope=``, a cell built with
another ``name=`` is found by its kernel's and bias's shapes). The scope path above a cell
says how cells stack: ``.../multi_rnn_cell/cell_k/...`` is layer k of a MultiRNNCell,
``.../fw/...`` and
``.../bw/...`` the directions of ``bidirectional_dynamic_rnn`` (``cell_k/bidirectional_rnn``
above them: layer k of ``stack_bidirectional_dynamic_rnn``). The stack's scope is what is
left, e.g. ``rnn`` or ``bidirectional_rnn``; optimizer slots (``kernel/Adam``) are ignored.
"""
import os
import re
from dataclasses import dataclass, field

import numpy as np

from .._checks import check_memory
from .._spec import CellOptions, Layer, check_sizes, make_layer
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
    with np.errstate(invalid="ignore"):  # signalling NaNs: refused by make_layer
        arr = arr.astype(np.float64)
    if np.any(np.abs(arr) > np.finfo(np.float32).max):
        raise ValueError(f"variable {name!r} holds values beyond float32's range")
    return arr


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


# --- checkpoints ------------------------------------------------------------------------------

# Scope names tf.compat.v1 gives its LSTM cells: LSTMCell (and contrib's LSTMBlockCell, which
# uses the same variable names) "lstm_cell", BasicLSTMCell "basic_lstm_cell". A cell built
# with another name= is found when ``scope`` names it.
_CELL_NAMES = ("lstm_cell", "basic_lstm_cell")
_CHECKPOINT_OPTIONS = ("cell_clip", "proj_clip", "activation")
_DATA_SUFFIX = re.compile(r"\.data-\d{5}-of-\d{5}$")


@dataclass
class _Stack:
    """The cells of one dynamic_rnn-like call: {layer: {direction: cell scope}}, direction
    None (one direction), "fw" or "bw"; ``reason`` says why fastlstm cannot run it."""
    scope: str
    cells: dict = field(default_factory=dict)
    reason: str = ""
    nested: bool = False   # MultiRNNCell inside fw/bw: each direction is a whole stack

    @property
    def bidirectional(self):
        return any(d is not None for layer in self.cells.values() for d in layer)

    def ordered(self):
        """Per layer, the cell scopes in direction order (forward, then backward)."""
        return [[cells[d] for d in (None, "fw", "bw") if d in cells]
                for _, cells in sorted(self.cells.items())]


def _checkpoint_prefix(path):
    """The checkpoint prefix of a prefix, its .index or .data file, or a folder holding a
    ``checkpoint`` file."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"expected the path of a TF1 checkpoint (prefix, .index file or "
                        f"folder), got {type(path).__name__}")
    path = os.fspath(path)
    if os.path.isdir(path):
        state = os.path.join(path, "checkpoint")
        if not os.path.isfile(state):
            raise ValueError(f"{path!r} is a folder without a 'checkpoint' file; pass the "
                             f"checkpoint's prefix (the path before .index)")
        try:
            with open(state, encoding="utf-8", errors="replace") as fh:
                text = fh.read(1 << 16)
        except OSError as exc:
            raise ValueError(f"{state!r} cannot be read: {exc}") from None
        found = re.search(r'^model_checkpoint_path:\s*"([^"\n]*)"', text, re.M)
        if not found:
            raise ValueError(f"{state!r} names no model_checkpoint_path")
        name = found.group(1)
        path = name if os.path.isabs(name) else os.path.join(path, name)
    elif path.endswith(".index"):
        path = path[:-len(".index")]
    else:
        path = _DATA_SUFFIX.sub("", path)
    if not os.path.isfile(path + ".index"):
        raise ValueError(f"TF1 checkpoint {path!r} does not exist (no {path + '.index'!r})")
    return path


def _reader(path):
    try:
        import tensorflow as tf
    except ImportError as exc:
        raise ImportError(f"reading a TF1 checkpoint needs TensorFlow (pip install "
                          f"tensorflow-cpu): {exc}") from None
    prefix = _checkpoint_prefix(path)
    try:
        reader = tf.train.load_checkpoint(prefix)
        shapes = reader.get_variable_to_shape_map()
        dtypes = reader.get_variable_to_dtype_map()
    except Exception as exc:  # TensorFlow's DataLossError, NotFoundError... for bad files
        raise ValueError(f"{prefix!r} is not a readable TF1 checkpoint: "
                         f"{type(exc).__name__}: {str(exc).strip()[:300]}") from None
    return prefix, reader, shapes, dtypes


def _cell_scopes(shapes, scope=None):
    """Every cell scope of the checkpoint: a kernel with a bias beside it, under one of the
    names tf.compat.v1 gives LSTM cells, or, under ``scope`` when it is given, any name whose
    kernel (rows, 4H) and bias (4H,) have an LSTM cell's shapes (cells built with name=)."""
    scope = scope.strip("/") if isinstance(scope, str) else None
    found = []
    for name in shapes:
        if not name.endswith("/kernel") or name.endswith("/projection/kernel"):
            continue
        cell = name[:-len("/kernel")]
        if cell + "/bias" not in shapes:
            continue
        kernel, bias = list(shapes[name]), list(shapes[cell + "/bias"])
        named = cell.rsplit("/", 1)[-1] in _CELL_NAMES
        chosen = scope is not None and (cell == scope or cell.startswith(scope + "/"))
        projection = list(shapes.get(cell + "/projection/kernel", []))
        out = projection[-1] if projection else kernel[-1] // 4 if kernel else 0
        shaped = len(kernel) == 2 and kernel[1] % 4 == 0 and bias == kernel[1:] and \
            kernel[0] > out   # rows: input + output
        if named or (chosen and shaped):
            found.append(cell)
    return sorted(found)


def _stacks(cells):
    """Group cell scopes into stacks: MultiRNNCell's ``multi_rnn_cell/cell_k`` are layers,
    ``fw``/``bw`` the directions of bidirectional_dynamic_rnn, ``cell_k/bidirectional_rnn/fw``
    the layers of stack_bidirectional_dynamic_rnn."""
    stacks = {}
    for cell in cells:
        parts = cell.split("/")[:-1]
        layer, direction, nested = 0, None, False
        multi = len(parts) >= 2 and parts[-2] == "multi_rnn_cell" and \
            re.fullmatch(r"cell_\d+", parts[-1])
        if multi:
            layer, parts = int(parts[-1][5:]), parts[:-2]
        if parts and parts[-1] in ("fw", "bw"):
            direction, parts = parts[-1], parts[:-1]
            nested = bool(multi)
            if len(parts) >= 2 and parts[-1] == "bidirectional_rnn" and \
                    re.fullmatch(r"cell_\d+", parts[-2]) and not multi:
                layer, parts = int(parts[-2][5:]), parts[:-2]
        stack = stacks.setdefault("/".join(parts), _Stack("/".join(parts)))
        stack.nested |= nested
        if direction in stack.cells.setdefault(layer, {}):
            stack.reason = f"two cells for layer {layer} {direction or ''}".rstrip()
        stack.cells[layer][direction] = cell
    for stack in stacks.values():
        layers = sorted(stack.cells)
        kinds = {frozenset(c) for c in stack.cells.values()}
        if stack.reason:
            continue
        if layers != list(range(len(layers))):
            stack.reason = f"its layers {layers} are not numbered 0..{len(layers) - 1}"
        elif stack.bidirectional and kinds != {frozenset(("fw", "bw"))}:
            stack.reason = "it does not have both a fw and a bw cell in every layer"
        elif stack.nested and len(layers) > 1:
            stack.reason = ("bidirectional_dynamic_rnn over MultiRNNCells runs each direction's "
                            "whole stack before joining them; fastlstm joins the directions "
                            "after every layer (as stack_bidirectional_dynamic_rnn does)")
    return stacks


def _choose(stacks, scope, prefix):
    listed = sorted(stacks)
    if not stacks:
        raise ValueError(f"TF1 checkpoint {prefix!r} holds no LSTM cell variables (a kernel "
                         f"and a bias under a scope named {' or '.join(_CELL_NAMES)}; pass "
                         f"scope= to name a cell scope of another name)")
    if scope is None:
        if len(stacks) > 1:
            raise ValueError(f"TF1 checkpoint {prefix!r} holds {len(stacks)} LSTM stacks, "
                             f"scopes {listed}; choose one with scope=...")
        return next(iter(stacks.values()))
    if not isinstance(scope, str):
        raise TypeError(f"scope must be a variable scope name (str), got {type(scope).__name__}")
    scope = scope.strip("/")
    if scope in stacks:
        return stacks[scope]
    inside = [s for s in listed if s.startswith(scope + "/")]
    if len(inside) == 1:
        return stacks[inside[0]]
    raise ValueError(f"scope={scope!r} " + (f"holds {len(inside)} LSTM stacks {inside}"
                                            if inside else "names no LSTM stack")
                     + f" of TF1 checkpoint {prefix!r}; LSTM stacks: {listed}")


def _cell_variables(reader, shapes, dtypes, cell, prefix):
    """The cell's variables by full name, read from the checkpoint (only those)."""
    folder, base = os.path.split(prefix)
    data_bytes = sum(os.path.getsize(os.path.join(folder or ".", f))
                     for f in os.listdir(folder or ".")
                     if f.startswith(base + ".data-") and _DATA_SUFFIX.search(f))
    variables = {}
    for suffix in _ROLES:
        name = f"{cell}/{suffix}"
        if name not in shapes:
            continue
        if not getattr(dtypes[name], "is_floating", False):
            raise ValueError(f"variable {name!r} of TF1 checkpoint {prefix!r} is "
                             f"{dtypes[name]!r}, not a float tensor")
        count = int(np.prod(shapes[name], dtype=object))
        if count * dtypes[name].size > data_bytes:
            raise ValueError(f"variable {name!r} of TF1 checkpoint {prefix!r} declares shape "
                             f"{shapes[name]} but the data files hold only {data_bytes} bytes")
        check_memory(8 * count, f"variable {name!r} of shape {shapes[name]}")
        try:
            variables[name] = reader.get_tensor(name)
        except Exception as exc:  # DataLossError and others for damaged data files
            raise ValueError(f"variable {name!r} of TF1 checkpoint {prefix!r} cannot be read: "
                             f"{type(exc).__name__}: {str(exc).strip()[:300]}") from None
    return variables


def checkpoint_layers(path, *, scope=None, forget_bias=1.0, **options):
    """The layers of the LSTM stack under ``scope`` in a TF1 checkpoint, and whether it is
    bidirectional (see ``LSTM.from_tf1_checkpoint``)."""
    unknown = sorted(set(options) - set(_CHECKPOINT_OPTIONS))
    if unknown:
        raise TypeError(f"from_tf1_checkpoint got unexpected options {unknown}; a checkpoint "
                        f"takes {list(_CHECKPOINT_OPTIONS)} (and forget_bias)")
    prefix, reader, shapes, dtypes = _reader(path)
    stack = _choose(_stacks(_cell_scopes(shapes, scope)), scope, prefix)
    if stack.reason:
        raise ValueError(f"the LSTM stack {stack.scope!r} of TF1 checkpoint {prefix!r} cannot "
                         f"be loaded: {stack.reason}")
    layers = []
    for k, cells in enumerate(stack.ordered()):
        parts = []
        for cell in cells:
            variables = _cell_variables(reader, shapes, dtypes, cell, prefix)
            cell_options = dict(options)
            if f"{cell}/projection/kernel" not in shapes:
                cell_options.pop("proj_clip", None)  # clips the projection of cells that have one
            try:
                parts.append(cell_layer(variables, forget_bias=forget_bias, **cell_options))
            except (ValueError, TypeError) as exc:
                raise type(exc)(f"cell {cell!r} of TF1 checkpoint {prefix!r}: {exc}") from None
        first = parts[0]
        for other in parts[1:]:
            if (other.input_size, other.hidden_size, other.options) != \
                    (first.input_size, first.hidden_size, first.options):
                raise ValueError(f"the fw and bw cells {cells} of TF1 checkpoint {prefix!r} "
                                 f"differ in sizes or options")
        layers.append(Layer(first.input_size, first.hidden_size, first.options,
                            tuple(p.directions[0] for p in parts)))
    return layers, stack.bidirectional


def find(source):
    """The LSTM stacks of a TF1 checkpoint, from its variables' names and shapes (no tensor
    is read), with ``scope`` the name to pass."""
    from .found import Found

    prefix, _, shapes, _ = _reader(source)
    found = []
    for scope, stack in sorted(_stacks(_cell_scopes(shapes)).items()):
        ordered = stack.ordered()
        names = sorted({c.rsplit("/", 1)[-1] for cells in ordered for c in cells})
        kind = ("fw/bw " if stack.bidirectional else "") + \
            ("MultiRNNCell " if len(ordered) > 1 else "") + "/".join(names)
        first, last = ordered[0][0], ordered[-1][0]
        proj = shapes.get(f"{last}/projection/kernel", [0, 0])[1]
        hidden = shapes[f"{last}/kernel"][1] // 4
        first_out = shapes.get(f"{first}/projection/kernel", [0, 0])[1] or \
            shapes[f"{first}/kernel"][1] // 4
        options = {}
        if any(f"{c}/w_i_diag" in shapes for cells in ordered for c in cells):
            options["peepholes"] = True
        found.append(Found("tf1", scope, "scope", kind,
                           input_size=shapes[f"{first}/kernel"][0] - first_out,
                           hidden_size=hidden, num_layers=len(ordered),
                           bidirectional=stack.bidirectional, proj_size=proj, options=options,
                           reason=stack.reason))
    return found
