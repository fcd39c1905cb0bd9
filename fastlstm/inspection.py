"""``fastlstm.inspect(source)``: the LSTMs a model source holds, each with the name to pass
to its loader (``module=`` for PyTorch, ``layer=`` for Keras, ``node=`` for ONNX, ``scope=``
for a TF1 checkpoint), its sizes and options.

Each loader module has a ``find(source)`` that lists its framework's LSTMs as ``Found``
entries without building a model; ``fastlstm.loaders.kind_of`` says which loader a source
belongs to.
"""
from __future__ import annotations

import os
from typing import Any

from . import loaders
from .loaders.found import Found, Inventory
from .models import LSTM

__all__ = ["Found", "Inventory", "inspect", "load_source"]


def inspect(source: Any) -> Inventory:
    """The LSTMs found in ``source`` (any source a ``from_*`` loader takes) as an
    ``Inventory``; see the module docstring."""
    kind = loaders.kind_of(source)
    module = loaders.module_for(kind)
    label = os.fspath(source) if isinstance(source, (str, os.PathLike)) else \
        type(source).__name__
    return Inventory(module.find(source), source=str(label))


def load_source(source: Any, name: str | None = None) -> LSTM:
    """The model in ``source`` (any source a ``from_*`` loader takes; see
    ``fastlstm.loaders.kind_of``), ``name`` picking one LSTM among several as ``inspect``
    lists them (its ``module=``, ``layer=``, ``node=`` or ``scope=``)."""
    kind = loaders.kind_of(source)
    loader = getattr(LSTM, {"torch": "from_torch", "keras": "from_keras", "onnx": "from_onnx",
                            "tf1": "from_tf1_checkpoint"}[kind])
    return loader(source, **({loaders.SELECTORS[kind]: name} if name is not None else {}))
