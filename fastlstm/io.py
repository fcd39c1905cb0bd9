"""The file format of ``model.save(path)`` and ``fastlstm.load(path)``: ``save`` writes a
model's parts, ``read`` gives them back as specs, from which ``fastlstm.load`` builds it.

The file is a NumPy ``.npz`` (a zip of ``.npy`` arrays) that needs nothing but NumPy to read
and is always opened with ``allow_pickle=False``, so loading never executes code:

- ``__fastlstm__``: a 0-d unicode array holding a JSON object::

      {"format": "fastlstm", "version": 1 | 2, "kind": "LSTM" | "LSTMCell",
       "batch_first": bool, "bidirectional": bool,
       "layers": [{"input_size": int, "hidden_size": int,
                   "options": {"proj_size", "forget_bias", "activation",
                               "recurrent_activation", "output_activation", "peepholes",
                               "cell_clip", "gate_clip", "proj_clip", "input_forget"},
                   "reverse": true (only for a reverse layer)}, ...],
       "initial_state": true (only when the model holds one),
       "precision": "int8" | "bfloat16" (only for a quantized model, version 2),
       "sha256": hex digest of the arrays (float32 bytes, by sorted name)}

  activations are ``[name, alpha, beta]`` lists as in ``fastlstm.activations``.
- one float32 array per weight, under its name in ``model.weights`` (PyTorch's names and
  layouts: ``weight_ih_l0``, ``bias_hh_l1_reverse``, ...; no ``_l{k}`` for an LSTMCell).
- in a quantized model (``fastlstm.quantize``), each of ``weight_ih``, ``weight_hh`` and
  ``weight_hr`` holds its codes instead: int8 with a float32 ``{name}_scale`` (one scale per
  row, e.g. ``weight_ih_l0_scale``) beside it, and W_ih's second part as ``weight_ih_lo_l0``
  with ``weight_ih_lo_l0_scale``, or bfloat16 bit patterns as uint16 (see ``fastlstm.precision``). Such files
  have version 2, which versions that read only version 1 refuse rather than misread.
- with ``initial_state``, the state the model holds (``LSTM.initial_state``): ``initial_h_{k}``
  and ``initial_c_{k}``, one (batch, width) array per (layer, direction) k.

``load`` checks everything (format, version, config, the exact set of arrays, their shapes,
finiteness and the digest) before it builds the model; any problem is a ``ValueError`` that
names the file and says what is wrong. The file is written to a temporary name and renamed
over ``path``, so an interrupted save never leaves a half-written file under ``path``.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
import zipfile
import zlib
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.lib import format as npformat

from . import precision as prec
from ._spec import CellOptions, Layer, check_sizes, make_layer
from ._typing import PathLike

if TYPE_CHECKING:
    from .models import LSTM, LSTMCell

FORMAT = "fastlstm"
VERSION = 1
VERSION_QUANTIZED = 2   # a quantized model's codes in place of float32 weights
CONFIG_KEY = "__fastlstm__"


def _digest(weights):
    h = hashlib.sha256()
    for name in sorted(weights):
        arr = np.ascontiguousarray(weights[name], dtype=np.float32)
        h.update(name.encode() + b"\0" + str(arr.shape).encode() + b"\0" + arr.tobytes())
    return h.hexdigest()


def save(model: LSTM | LSTMCell, path: PathLike) -> None:
    """Write ``model`` (an LSTM or LSTMCell) to ``path`` exactly (no suffix is added)."""
    kind = getattr(model, "file_kind", None)
    if kind == "LSTM":
        batch_first, bidirectional = model.batch_first, model.bidirectional
    elif kind == "LSTMCell":
        batch_first, bidirectional = True, False
    else:
        raise TypeError(f"model must be a fastlstm LSTM or LSTMCell, got {type(model).__name__}")
    path = os.fspath(path)
    weights = model.weights
    quantized = model.precision != "float32"
    if quantized:
        for k, layer in enumerate(model.layers):
            for d, coded in enumerate(layer.codes):
                suffix = ("_l%d" % k if kind == "LSTM" else "") + ("_reverse" if d else "")
                for name, (codes, scales) in coded.items():
                    weights[name + suffix] = codes
                    if scales is not None:
                        weights[name + suffix + "_scale"] = scales
    held = model.engine.held_state
    if held is not None:
        for k, (h, c) in enumerate(zip(*held)):
            weights[f"initial_h_{k}"], weights[f"initial_c_{k}"] = h, c
    config = {
        "format": FORMAT, "version": VERSION_QUANTIZED if quantized else VERSION, "kind": kind,
        "batch_first": batch_first,
        "bidirectional": bidirectional,
        "layers": [dict({"input_size": l.input_size, "hidden_size": l.hidden_size,
                         "options": l.options.to_dict()}, **({"reverse": True} if l.reverse
                                                            else {}))
                   for l in model.layers],
        "sha256": _digest(weights),
    }
    if held is not None:
        config["initial_state"] = True
    if quantized:
        config["precision"] = model.precision
    arrays = {CONFIG_KEY: np.array(json.dumps(config))}
    arrays.update(weights)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".fastlstm-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


class _Bad(Exception):
    """What is wrong with a file; ``load`` turns it into a ValueError naming the file."""


def _config(files):
    if CONFIG_KEY not in files:
        raise _Bad(f"it is an .npz file but not a fastlstm model (no {CONFIG_KEY!r} entry)")
    raw = files[CONFIG_KEY]
    if raw.dtype.kind != "U" or raw.shape != ():
        raise _Bad(f"{CONFIG_KEY!r} must be a JSON string, got a {raw.dtype} array {raw.shape}")
    try:
        config = json.loads(str(raw))
    except (json.JSONDecodeError, RecursionError) as exc:
        raise _Bad(f"its config is not valid JSON ({exc})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise _Bad("its config does not say format 'fastlstm'")
    if config.get("version") not in (VERSION, VERSION_QUANTIZED):
        raise _Bad(f"it has format version {config.get('version')!r}; this fastlstm reads "
                   f"versions {VERSION} and {VERSION_QUANTIZED}")
    precision = config.get("precision", "float32")
    if (config["version"] == VERSION_QUANTIZED) != (precision in ("int8", "bfloat16")):
        raise _Bad(f"its config has version {config['version']} and precision {precision!r}: "
                   f"version {VERSION_QUANTIZED} goes with precision 'int8' or 'bfloat16'")
    expected = {"format": str, "version": int, "kind": str, "batch_first": bool,
                "bidirectional": bool, "layers": list, "sha256": str}
    for key, typ in expected.items():
        if not isinstance(config.get(key), typ):
            raise _Bad(f"its config entry {key!r} must be a {typ.__name__}, got "
                       f"{config.get(key)!r}")
    if config["kind"] not in ("LSTM", "LSTMCell"):
        raise _Bad(f"its config has kind {config['kind']!r}, expected 'LSTM' or 'LSTMCell'")
    if not config["layers"] or (config["kind"] == "LSTMCell" and len(config["layers"]) != 1):
        raise _Bad(f"its config lists {len(config['layers'])} layers")
    return config


def _layers(config, files):
    D = 2 if config["bidirectional"] else 1
    cell = config["kind"] == "LSTMCell"
    if cell and D == 2:
        raise _Bad("its config says a bidirectional LSTMCell")
    layers, used = [], set()
    for k, entry in enumerate(config["layers"]):
        if not isinstance(entry, dict) or not {"input_size", "hidden_size", "options"} <= \
                set(entry) <= {"input_size", "hidden_size", "options", "reverse"} \
                or not isinstance(entry["options"], dict) \
                or entry.get("reverse", True) is not True \
                or (entry.get("reverse") and (D == 2 or cell)):
            raise _Bad(f"its config entry for layer {k} is malformed: {entry!r}")
        try:
            input_size, hidden_size = check_sizes(entry["input_size"], entry["hidden_size"])
            options = CellOptions.from_dict(entry["options"], hidden_size)
        except (TypeError, ValueError) as exc:
            raise _Bad(f"its config for layer {k} is invalid: {exc}") from None
        shapes = Layer(input_size, hidden_size, options, ()).expected_shapes()
        precision = config.get("precision", "float32")
        # the coded weights, each with its shape (a second part has its first's)
        coded_shapes = {} if precision == "float32" else {
            n: shapes[prec.SECOND_PART.get(n, n)]
            for n in prec.QUANTIZED + (tuple(prec.SECOND_PART) if precision == "int8" else ())
            if prec.SECOND_PART.get(n, n) in shapes}
        dirs, codes = [], []
        for d in range(D):
            suffix = ("" if cell else f"_l{k}") + ("_reverse" if d else "")
            names = [n + suffix for n in shapes] + [n + suffix for n in coded_shapes
                                                     if n not in shapes]
            if precision == "int8":
                names += [n + suffix + "_scale" for n in coded_shapes]
            missing = [n for n in names if n not in files]
            if missing:
                raise _Bad(f"it lacks the weights {missing}")
            params = {n: files[n + suffix] for n in shapes}
            used.update(names)
            coded = {}
            try:
                for n, shape in coded_shapes.items():
                    coded[n] = prec.check_codes(precision, n + suffix, files[n + suffix],
                                                files.get(n + suffix + "_scale"), shape, "its")
                for n in coded:
                    if n in shapes:
                        params[n] = prec.weight_values(precision, coded, n)
            except ValueError as exc:
                raise _Bad(str(exc)) from None
            dirs.append(params)
            codes.append(coded)
        try:
            layer = make_layer(input_size, hidden_size, options, dirs, where=f"layer {k}",
                               reverse=entry.get("reverse", False))
        except (TypeError, ValueError) as exc:
            raise _Bad(str(exc)) from None
        layers.append(prec.with_codes(layer, precision, codes))
    held = None
    if config.get("initial_state") is True and not cell:
        entries = sum(len(l.directions) for l in layers)
        names = [[f"initial_{which}_{k}" for k in range(entries)] for which in "hc"]
        missing = [n for part in names for n in part if n not in files]
        if missing:
            raise _Bad(f"it lacks the initial state arrays {missing}")
        held = tuple([files[n] for n in part] for part in names)
        used.update(n for part in names for n in part)
        widths = [(l.output_size, l.hidden_size) for l in layers for _ in l.directions]
        batch = held[0][0].shape[0] if held[0][0].ndim == 2 else -1
        for which, part in enumerate(held):
            for k, arr in enumerate(part):
                if arr.dtype != np.float32 or arr.shape != (batch, widths[k][which]) \
                        or not np.all(np.isfinite(arr)):
                    raise _Bad(f"its initial state array {names[which][k]!r} must be finite "
                               f"float32 of shape {(batch, widths[k][which])}, got "
                               f"{arr.dtype} {arr.shape}")
    elif "initial_state" in config:
        raise _Bad(f"its config entry 'initial_state' must be true, got "
                   f"{config['initial_state']!r}")
    extra = sorted(set(files) - used - {CONFIG_KEY})
    if extra:
        raise _Bad(f"it holds arrays that are not weights of the model: {extra}")
    return layers, held


def _check_members(shown):
    """Every member of the archive is a .npy whose header declares no more data than the
    member holds, so a crafted header cannot make ``np.load`` allocate a huge array."""
    with zipfile.ZipFile(shown) as archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                raise _Bad(f"it holds {info.filename!r}, which is not a .npy array")
            with archive.open(info) as member:
                try:
                    version = npformat.read_magic(member)
                    read_header = {(1, 0): npformat.read_array_header_1_0,
                                   (2, 0): npformat.read_array_header_2_0}.get(version)
                    if read_header is None:
                        raise ValueError(f".npy format version {version}")
                    shape, _, dtype = read_header(member)
                except (ValueError, TypeError, SyntaxError, EOFError) as exc:
                    raise _Bad(f"its member {info.filename!r} is not a valid .npy "
                               f"({exc})") from None
                declared = dtype.itemsize * int(np.prod(shape, dtype=object))
                if declared > info.file_size:
                    raise _Bad(f"its member {info.filename!r} declares shape {shape} of "
                               f"{dtype} ({declared} bytes) but holds only {info.file_size} "
                               f"bytes")


def read(path: PathLike) -> dict[str, Any]:
    """Read a file written by ``save`` into what the model is: a dict of ``kind`` ("LSTM" or
    "LSTMCell"), ``layers`` (``_spec.Layer``), ``bidirectional``, ``batch_first`` and
    ``initial_state`` (None, or the per-(layer, direction) h and c arrays);
    ``fastlstm.load`` builds the model from it."""
    try:
        shown = os.fspath(path)
    except TypeError:
        raise TypeError(f"fastlstm.load: path must be a str or os.PathLike, got "
                        f"{type(path).__name__} {path!r}") from None
    if isinstance(shown, bytes):
        shown = os.fsdecode(shown)
    if not os.path.isfile(shown):
        raise ValueError(f"fastlstm.load: {shown!r} does not exist or is not a file")
    try:
        if not zipfile.is_zipfile(shown):
            raise _Bad("it is not a complete .npz (zip) file: truncated, or another kind of file")
        _check_members(shown)
        with np.load(shown, allow_pickle=False) as npz:
            files = {name: npz[name] for name in npz.files}
        config = _config(files)
        layers, held = _layers(config, files)
        weights = {k: v for k, v in files.items() if k != CONFIG_KEY}
        if _digest(weights) != config["sha256"]:
            raise _Bad("its weights do not match the digest in its config (the file was "
                       "altered after saving)")
        return {"kind": config["kind"], "layers": layers,
                "bidirectional": config["bidirectional"], "batch_first": config["batch_first"],
                "initial_state": held}
    except _Bad as exc:
        raise ValueError(f"fastlstm.load: {shown!r}: {exc}") from None
    except (OSError, EOFError, zipfile.BadZipFile, ValueError, KeyError, struct.error,
            zlib.error, NotImplementedError, RuntimeError) as exc:
        raise ValueError(f"fastlstm.load: {shown!r} is damaged or not a fastlstm model "
                         f"({type(exc).__name__}: {exc})") from None
