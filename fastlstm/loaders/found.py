"""What a model source holds, as ``fastlstm.inspect`` lists it: a ``Found`` entry per
recurrent layer, module, node or scope, and the ``Inventory`` of a source. Each loader's
``find(source)`` makes them."""
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
