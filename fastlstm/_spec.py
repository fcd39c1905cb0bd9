"""What a model is, independent of how it is run: per layer, its options and the weights of
each direction, in PyTorch's names and layouts (gate order i, f, g, o).

Both the NumPy reference and the native kernels read this; loaders produce it.
"""
from dataclasses import dataclass

import numpy as np

from . import activations
from ._checks import MAX_SIZE, check_bool, check_int, check_real


@dataclass(frozen=True)
class CellOptions:
    proj_size: int = 0
    forget_bias: float = 0.0
    activation: tuple = ("tanh", 1.0, 0.0)
    recurrent_activation: tuple = ("sigmoid", 1.0, 0.0)
    output_activation: tuple = ("tanh", 1.0, 0.0)
    peepholes: bool = False
    cell_clip: float = None
    gate_clip: float = None
    proj_clip: float = None
    input_forget: bool = False

    @classmethod
    def make(cls, hidden_size, *, proj_size=0, forget_bias=0.0, activation="tanh",
             recurrent_activation="sigmoid", output_activation=None, peepholes=False,
             cell_clip=None, gate_clip=None, proj_clip=None, input_forget=False):
        proj_size = check_int(proj_size, "proj_size", minimum=0)
        if proj_size >= hidden_size and proj_size:
            raise ValueError(f"proj_size must be smaller than hidden_size ({hidden_size}), "
                             f"got {proj_size}")
        act = activations.resolve(activation, "activation")
        out_act = act if output_activation is None else activations.resolve(
            output_activation, "output_activation")
        proj_clip = check_real(proj_clip, "proj_clip", positive=True, allow_none=True)
        if proj_clip is not None and not proj_size:
            raise ValueError("proj_clip needs a projection (proj_size > 0), got proj_size=0")
        return cls(
            proj_size=proj_size,
            forget_bias=check_real(forget_bias, "forget_bias"),
            activation=act,
            recurrent_activation=activations.resolve(recurrent_activation,
                                                     "recurrent_activation"),
            output_activation=out_act,
            peepholes=check_bool(peepholes, "peepholes"),
            cell_clip=check_real(cell_clip, "cell_clip", positive=True, allow_none=True),
            gate_clip=check_real(gate_clip, "gate_clip", positive=True, allow_none=True),
            proj_clip=proj_clip,
            input_forget=check_bool(input_forget, "input_forget"),
        )

    def to_dict(self):
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, d, hidden_size):
        return cls.make(hidden_size, **d)


PARAM_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr", "peephole")


@dataclass(frozen=True)
class Layer:
    """One layer: sizes, options and a params dict per direction (forward, then backward).
    ``reverse``: the layer's one direction runs backward over each sequence's valid steps,
    each output stored at its own time step (an ONNX ``direction="reverse"`` node)."""
    input_size: int
    hidden_size: int
    options: CellOptions
    directions: tuple
    reverse: bool = False
    # "float32", or "int8" / "bfloat16" (fastlstm.precision): then ``codes`` holds, per
    # direction, each quantized weight's (codes, scales) and ``directions`` the float32
    # values they stand for
    precision: str = "float32"
    codes: tuple = ()

    @property
    def output_size(self):
        return self.options.proj_size or self.hidden_size

    def expected_shapes(self):
        H, I, O = self.hidden_size, self.input_size, self.output_size
        shapes = {"weight_ih": (4 * H, I), "weight_hh": (4 * H, O),
                  "bias_ih": (4 * H,), "bias_hh": (4 * H,)}
        if self.options.proj_size:
            shapes["weight_hr"] = (O, H)
        if self.options.peepholes:
            shapes["peephole"] = (3, H)
        return shapes


def check_sizes(input_size, hidden_size):
    input_size = check_int(input_size, "input_size", minimum=1, maximum=MAX_SIZE)
    hidden_size = check_int(hidden_size, "hidden_size", minimum=1, maximum=MAX_SIZE)
    return input_size, hidden_size


def make_layer(input_size, hidden_size, options, directions, where="weights", reverse=False):
    """Build a Layer from per-direction dicts of arrays, checking names, shapes and values."""
    reverse = check_bool(reverse, "reverse")
    if reverse and len(directions) != 1:
        raise ValueError(f"{where}: a reverse layer has one direction, got {len(directions)}")
    layer = Layer(input_size, hidden_size, options, ())
    shapes = layer.expected_shapes()
    frozen = []
    for d, params in enumerate(directions):
        suffix = "_reverse" if d else ""
        missing = set(shapes) - set(params)
        extra = set(params) - set(shapes)
        if missing or extra:
            raise ValueError(f"{where}{suffix}: expected parameters {sorted(shapes)}, "
                             f"missing {sorted(missing)}, unexpected {sorted(extra)}")
        out = {}
        for name, shape in shapes.items():
            arr = np.asarray(params[name])
            if arr.dtype.kind not in "fiu":
                raise TypeError(f"{where} {name}{suffix} must be a real array, got {arr.dtype}")
            if arr.shape != shape:
                raise ValueError(f"{where} {name}{suffix} must have shape {shape}, "
                                 f"got {arr.shape}")
            arr = np.array(arr, dtype=np.float32, order="C")
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"{where} {name}{suffix} contains NaN or Inf")
            arr.flags.writeable = False
            out[name] = arr
        frozen.append(out)
    return Layer(input_size, hidden_size, options, tuple(frozen), reverse)


def init_params(rng, input_size, hidden_size, options):
    """PyTorch's init: every parameter uniform in +-1/sqrt(hidden_size)."""
    k = 1.0 / np.sqrt(hidden_size)
    layer = Layer(input_size, hidden_size, options, ())
    return {name: rng.uniform(-k, k, size=shape).astype(np.float32)
            for name, shape in layer.expected_shapes().items()}
