"""``fastlstm.inspect(source)``: the LSTMs a model source holds, each with the name to pass
to its loader (``module=`` for PyTorch, ``layer=`` for Keras, ``node=`` for ONNX, ``scope=``
for a TF1 checkpoint), its sizes and options.

Each loader module has a ``find(source)`` that lists its framework's LSTMs as ``Found``
entries without building a model; ``fastlstm.loaders.kind_of`` says which loader a source
belongs to.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Found:
    """One LSTM (or one recurrent layer fastlstm cannot run, with ``reason`` set)."""
    kind: str               # the loader: "torch", "keras", "onnx" or "tf1"
    name: str               # what to pass as ``selector``
    selector: str           # "module", "layer", "node" or "scope"
    type: str               # the framework's own type name, e.g. "nn.LSTM", "Bidirectional(LSTM)"
    input_size: int = 0
    hidden_size: int = 0
    num_layers: int = 1
    bidirectional: bool = False
    proj_size: int = 0
    options: dict[str, Any] = field(default_factory=dict)   # what else differs from the defaults
    reason: str = ""        # why fastlstm cannot load it ("" when it can)

    @property
    def supported(self) -> bool:
        return not self.reason


_COLUMNS = ("name", "type", "input", "hidden", "layers", "directions", "proj", "notes")


class Inventory(tuple[Found, ...]):
    """The ``Found`` entries of one source; its repr reads as a table."""

    source: str

    def __new__(cls, entries: Iterable[Found], source: str = "") -> Inventory:
        self = super().__new__(cls, entries)
        self.source = source
        return self

    def rows(self) -> Iterator[tuple[str, ...]]:
        for f in self:
            notes = f.reason and f"not supported: {f.reason}" or ", ".join(
                f"{k}={v}" for k, v in f.options.items())
            yield (f"{f.selector}={f.name!r}", f.type, str(f.input_size), str(f.hidden_size),
                   str(f.num_layers), "2" if f.bidirectional else "1", str(f.proj_size or "-"),
                   notes)

    def __repr__(self) -> str:
        rows = [_COLUMNS] + list(self.rows())
        if len(rows) == 1:
            return f"{self.source}: no LSTM found"
        widths = [max(len(r[k]) for r in rows) for k in range(len(_COLUMNS))]
        lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(([f"{self.source}:"] if self.source else []) + lines)

    __str__ = __repr__


def inspect(source: Any) -> Inventory:
    """The LSTMs found in ``source`` (any source a ``from_*`` loader takes) as an
    ``Inventory``; see the module docstring."""
    from . import loaders

    kind = loaders.kind_of(source)
    module = loaders.module_for(kind)
    label = source if isinstance(source, str) else type(source).__name__
    return Inventory(module.find(source), source=str(label))
