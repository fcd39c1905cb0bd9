"""The workloads of shared/BENCH.md: shapes, the model and the inputs every peer shares.

Every peer gets the same weights (``fastlstm.LSTM(..., seed=0)``, PyTorch's default init) and
the same float32 inputs, drawn from a seeded generator; lengths (varlen, stack) are uniform
in 1..time from the same generator. The reduced-precision error table adds a second init,
"trained-like" (``trained_like``), and a long sequence (``LONG_SEQUENCE``).
"""
from dataclasses import dataclass, replace

import numpy as np

import fastlstm


@dataclass(frozen=True)
class Workload:
    name: str
    batch: int
    time: int
    input_size: int
    hidden_size: int
    num_layers: int = 1
    bidirectional: bool = False
    with_lengths: bool = False
    stream: bool = False          # timed one Python-level step at a time, state carried
    about: str = ""

    @property
    def directions(self):
        return 2 if self.bidirectional else 1

    @property
    def shape(self):
        s = f"B={self.batch} T={self.time} I={self.input_size} H={self.hidden_size}"
        if self.num_layers > 1:
            s += f" L={self.num_layers}"
        if self.bidirectional:
            s += " bidir"
        if self.with_lengths:
            s += " lengths"
        return s

    def flops(self, lengths=None):
        """Useful flops of one call: 2 * steps * 4H * (in + H) per layer and direction, where
        steps = batch * time, or the sum of the real lengths when there are lengths."""
        steps = self.batch * self.time if lengths is None else int(np.sum(lengths))
        total = 0
        in_size = self.input_size
        for _ in range(self.num_layers):
            total += self.directions * 2 * steps * 4 * self.hidden_size * (in_size + self.hidden_size)
            in_size = self.directions * self.hidden_size
        return total


WORKLOADS = {w.name: w for w in [
    Workload("stream_step", 1, 1, 128, 256, stream=True,
             about="one step of a live stream, called from Python with state carried"),
    Workload("seq_latency", 1, 100, 128, 256, about="one request, one sequence"),
    Workload("batch", 32, 100, 256, 512, about="a batch of requests"),
    Workload("large", 64, 50, 512, 1024, about="big model, throughput"),
    Workload("varlen", 32, 100, 256, 512, with_lengths=True,
             about="lengths uniform in 1..100 (seeded)"),
    Workload("deepbench", 4, 25, 1024, 1024, about="DeepBench server inference shape"),
    Workload("stack", 16, 100, 128, 256, num_layers=2, bidirectional=True, with_lengths=True,
             about="2 layers, bidirectional, with lengths"),
]}

# What --precision times by default (BENCH.md's reduced-precision workloads).
PRECISION_WORKLOADS = ("stream_step", "seq_latency", "batch", "large", "deepbench")

# The error table's long sequence: seq_latency's shape over 1000 steps, time for an error the
# state carries from step to step to build up.
LONG_SEQUENCE = Workload("seq_long", 1, 1000, 128, 256, about="seq_latency over 1000 steps")

INITS = ("pytorch", "trained-like")

# Quick mode keeps every shape but shortens `large` (its float64 reference and slow peers
# dominate the run otherwise).
QUICK_OVERRIDES = {"large": {"time": 10}}

# Steps a stream workload cycles through (distinct inputs, state carried across them).
STREAM_STEPS = 64


def workload(name, quick=False):
    if name not in WORKLOADS:
        raise ValueError(f"unknown workload {name!r}; expected one of {', '.join(WORKLOADS)}")
    w = WORKLOADS[name]
    return replace(w, **QUICK_OVERRIDES.get(name, {})) if quick else w


@dataclass
class Case:
    """One workload made concrete: the model and the inputs all peers share."""
    workload: Workload
    model: object
    x: np.ndarray                 # (batch, time, input) float32; (STREAM_STEPS, 1, input) for streams
    lengths: np.ndarray = None    # (batch,) int64 or None


def trained_like(model):
    """The model with weights scaled as a trained LSTM has them: every weight matrix 3x
    (uniform in +-3/sqrt(H), std sqrt(3/H)), the biases PyTorch's plus 1 on the forget gate.

    PyTorch's init leaves each gate's recurrent block with a spectral radius near
    sqrt(H * 1/(3H)) = 0.58: the state, and any rounding error in it, fades within a few
    steps. A trained LSTM carries memory: a recurrent gain above 1 (here sqrt(3) = 1.7),
    pre-activations that reach into the gates' saturation, and forget gates held open by a
    bias of 1 (Jozefowicz et al. 2015; Keras' unit_forget_bias, TF1's forget_bias=1.0), so an
    error made at one step is still in c many steps later.
    """
    H = model.hidden_size
    weights = {}
    for name, value in model.weights.items():
        value = np.array(value)
        if name.startswith("weight_"):
            value *= 3
        elif name.startswith("bias_ih"):
            value[H:2 * H] += 1       # gate order i, f, g, o
        weights[name] = value
    return fastlstm.LSTM.from_torch(weights, batch_first=True)


def make_case(w, seed=0, init="pytorch"):
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; expected one of {', '.join(INITS)}")
    model = fastlstm.LSTM(w.input_size, w.hidden_size, num_layers=w.num_layers,
                          bidirectional=w.bidirectional, seed=seed)
    if init == "trained-like":
        model = trained_like(model)
    rng = np.random.default_rng(seed)
    if w.stream:
        x = rng.standard_normal((STREAM_STEPS, w.batch, w.input_size), dtype=np.float32)
        return Case(w, model, x)
    x = rng.standard_normal((w.batch, w.time, w.input_size), dtype=np.float32)
    lengths = rng.integers(1, w.time + 1, size=w.batch) if w.with_lengths else None
    return Case(w, model, x, lengths)


def valid_mask(case):
    """(batch, time, 1) mask of the steps each sequence really has."""
    B, T = case.x.shape[:2]
    if case.lengths is None:
        return np.ones((B, T, 1), bool)
    return (np.arange(T)[None, :] < case.lengths[:, None])[:, :, None]
