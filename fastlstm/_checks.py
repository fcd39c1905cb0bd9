"""Argument checks shared by the public API. Each raises TypeError/ValueError naming the
argument, what was expected and what was given."""
import numbers
import os

import numpy as np

MAX_SIZE = 1 << 24  # a hidden or input size past this is a mistake, not a model
# The kernel counts batch rows and time steps in C ints (and lengths are int32).
MAX_INDEX = (1 << 31) - 1
FLOAT32_MAX = float(np.finfo(np.float32).max)
# Requests smaller than this are never checked against free memory (reading /proc/meminfo
# costs more than a small call); larger ones are refused before anything is allocated when
# they would not fit.
_MEMORY_CHECK_FROM = 1 << 28


def available_memory():
    """Bytes this process can still allocate: Linux's MemAvailable, else physical memory."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return 1 << 62


def check_memory(nbytes, what):
    """Raise MemoryError before allocating ``nbytes`` for ``what`` (a string, or a function
    that makes it, for hot paths) when it cannot fit."""
    if nbytes < _MEMORY_CHECK_FROM:
        return
    free = available_memory()
    if nbytes > free:
        what = what() if callable(what) else what
        raise MemoryError(f"{what} needs {nbytes / 2**30:.4g} GiB but only "
                          f"{free / 2**30:.4g} GiB of memory is available")


def check_int(value, name, *, minimum=None, maximum=None):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def check_real(value, name, *, positive=False, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number{' or None' if allow_none else ''}, "
                        f"got {type(value).__name__} {value!r}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if abs(value) > FLOAT32_MAX:
        raise ValueError(f"{name} must be within float32 range (|{name}| <= {FLOAT32_MAX:.4g}), "
                         f"got {value}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def check_bool(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return bool(value)


def float_array(value, name):
    """Any real floating array (or nested list of numbers) as a C-contiguous float32 array.

    Values are rounded to float32; finite values past float32's range are refused (they would
    become +-inf). A masked array is refused (its mask would be ignored; pass ``lengths``)."""
    if value is None or isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be a real floating array, got {type(value).__name__}")
    if isinstance(value, np.ma.MaskedArray):
        raise TypeError(f"{name} must be a plain array, got a masked array (fastlstm would "
                        f"ignore its mask; pass lengths= for padded sequences)")
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise TypeError(f"{name} must be a real floating array, got {type(value).__name__} "
                        f"that NumPy cannot read as one ({exc})") from None
    if arr.dtype.kind != "f":
        if arr.dtype.kind in "iu" and isinstance(value, (list, tuple)):
            arr = arr.astype(np.float64)  # a nested list of Python ints is numbers, not labels
        else:
            raise TypeError(f"{name} must have a real floating dtype (float16/32/64), "
                            f"got {arr.dtype}")
    # aligned too: the kernel loads whole floats (an unaligned view of a byte buffer is not)
    if arr.dtype == np.float32 and arr.flags.c_contiguous and arr.flags.aligned:
        return arr
    check_memory(arr.size * 4, f"{name} of shape {arr.shape} (as float32)")
    if arr.dtype.itemsize <= 4:  # float16 and float32 always fit
        # a copy (asarray would hand back an unaligned float32 array as it is); np.array,
        # not ascontiguousarray, which makes a 0-d array 1-d
        return np.array(arr, dtype=np.float32, order="C")
    try:
        with np.errstate(over="raise"):
            return np.asarray(arr, dtype=np.float32, order="C")  # (ascontiguousarray: 0-d -> 1-d)
    except FloatingPointError:
        raise ValueError(f"{name} holds finite values beyond float32's range (|v| > "
                         f"{FLOAT32_MAX:.5g}, largest {np.nanmax(np.abs(arr[np.isfinite(arr)])):.5g}"
                         f"); fastlstm computes in float32: scale or clip the input") from None


def check_shape(arr, name, expected, what):
    """expected: tuple with None for free dims; what: names of the dims for the message."""
    if arr.ndim != len(expected):
        raise ValueError(f"{name} must have {len(expected)} dimensions {what}, "
                         f"got shape {arr.shape}")
    for got, want in zip(arr.shape, expected):
        if want is not None and got != want:
            pattern = ", ".join("*" if w is None else str(w) for w in expected)
            raise ValueError(f"{name} must have shape {what} = ({pattern}), got {arr.shape}")
    return arr


def lengths_array(value, batch, steps, name="lengths"):
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be an integer array of shape ({batch},), "
                        f"got {type(value).__name__}")
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise TypeError(f"{name} must be an integer array of shape ({batch},), got "
                        f"{type(value).__name__} ({exc})") from None
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must have an integer dtype, got {arr.dtype}")
    if arr.shape != (batch,):
        raise ValueError(f"{name} must have shape ({batch},) (one length per sequence), "
                         f"got {arr.shape}")
    if batch:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > steps:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{name} must lie in [0, {steps}] (the time steps of x), "
                             f"got {bad}")
    return np.require(arr, np.int32, ["C", "A"])   # the kernel reads them as C ints
