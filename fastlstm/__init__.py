"""fastlstm: fast, exact LSTM inference on the CPU.

Public API (see the README and shared/API.md): LSTMCell, LSTM, Stream, StreamPool, load,
quantize (int8 and bfloat16 weights), set_num_threads, get_num_threads, show_config and the
float64 oracle ``fastlstm.reference``.
Importing fastlstm imports no deep-learning framework; each loader imports its own only when
handed that framework's object.
"""
__version__ = "0.1.0"

from . import reference
from .inspection import inspect
from .models import LSTM, LSTMCell, load, quantize
from .pool import StreamPool
from .runtime import get_num_threads, set_num_threads, show_config
from .streams import Stream

__all__ = ["LSTM", "LSTMCell", "Stream", "StreamPool", "inspect", "load", "quantize", "get_num_threads",
           "set_num_threads", "show_config", "reference", "__version__"]
