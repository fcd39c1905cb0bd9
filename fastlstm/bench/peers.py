"""The peers fastlstm is measured against, each built from the fastlstm model's own weights.

A peer's ``build(case)`` returns a :class:`Bound`: ``call()`` is the unit that is timed (one
forward pass, or one Python-level step with the state carried for a stream workload) and
``outputs()`` gives its result as a batch-major NumPy array for the agreement check:
``(batch, time, D*hidden)``, or ``(steps, batch, hidden)`` for a stream from zero state.

What is inside the timing and what is not:
- inputs are handed over in the peer's native layout and tensor type, prepared once outside
  the timing (ONNX Runtime and PyTorch get time-major arrays, TensorFlow a ``tf.Tensor``), so
  no peer pays for a transpose fastlstm does not do; a stream step gets a NumPy ``(batch,
  input)`` row, as any caller from Python would pass it;
- the result is turned into a NumPy array inside the timing (free for ONNX Runtime, PyTorch
  and fastlstm, as it is what a caller gets);
- PyTorch packs and unpacks the padded batch inside the timing (that is how one runs it).

Frameworks are imported only by ``setup``; a peer that cannot be imported is "missing".
"""
import contextlib
import importlib
import importlib.util
import itertools
import logging
import os
import sys
import tempfile
from dataclasses import dataclass

import numpy as np

import fastlstm
from fastlstm import reference
from fastlstm.loaders._layouts import reorder_gates


@dataclass
class Bound:
    call: object
    outputs: object


def _stream_inputs(case):
    return [np.ascontiguousarray(case.x[k]) for k in range(case.x.shape[0])]


def _dir_suffixes(w):
    return ["", "_reverse"] if w.bidirectional else [""]


class Peer:
    name = ""
    module = ""           # what must be importable
    package = ""          # distribution whose version is reported

    def available(self):
        return importlib.util.find_spec(self.module) is not None

    def version(self):
        try:
            from importlib.metadata import version
            return version(self.package or self.module)
        except Exception:  # not installed as a distribution: the module may still know
            return getattr(importlib.import_module(self.module), "__version__", "unknown")

    def setup(self, threads):
        """Import the framework and set its thread count; once per process, before any build."""

    def build(self, case):
        raise NotImplementedError


class FastLSTM(Peer):
    """fastlstm; at a reduced precision, the model ``fastlstm.quantize`` makes of the shared one."""
    module = package = "fastlstm"

    def __init__(self, name="fastlstm", precision="float32"):
        self.name, self.precision = name, precision

    def version(self):
        return fastlstm.__version__

    def setup(self, threads):
        fastlstm.set_num_threads(threads)

    def build(self, case):
        model, w = case.model, case.workload
        if self.precision != "float32":
            model = fastlstm.quantize(model, self.precision)
            if model.precision != self.precision:
                raise RuntimeError(f"fastlstm.quantize(model, {self.precision!r}) made a model "
                                   f"of precision {model.precision!r}")
        if w.stream:
            xs = _stream_inputs(case)
            stream = model.stream(w.batch)
            next_x = itertools.cycle(xs).__next__

            def outputs():
                fresh = model.stream(w.batch)
                return np.stack([fresh.step(x) for x in xs])

            return Bound(lambda: stream.step(next_x()), outputs)
        x, lengths = case.x, case.lengths

        def call():
            return model(x, lengths=lengths)[0]

        return Bound(call, call)


class NumpyReference(Peer):
    """fastlstm.reference in float32: NumPy + its BLAS, the input projection hoisted (its
    BLAS threads are capped by the harness, see ``limit_blas_threads``)."""
    name = "numpy"
    module = package = "numpy"

    def build(self, case):
        layers, w = case.model.layers, case.workload
        if w.stream:
            xs = _stream_inputs(case)
            next_x = itertools.cycle(xs).__next__
            state = [None]

            def step(x_t):
                y, (h, c) = reference.lstm(layers, x_t[:, None, :], initial_state=state[0],
                                           dtype=np.float32)
                state[0] = (h, c)
                return y[:, 0]

            def outputs():
                state[0] = None
                return np.stack([step(x) for x in xs])

            return Bound(lambda: step(next_x()), outputs)
        x, lengths = case.x, case.lengths

        def call():
            return reference.lstm(layers, x, lengths=lengths, dtype=np.float32)[0]

        return Bound(call, call)


class OnnxRuntime(Peer):
    """ONNX Runtime's CPU LSTM: one ``LSTM`` node per layer, built in memory with onnx.helper."""
    name = package = "onnxruntime"
    module = "onnxruntime"
    OPSET = 17
    IR_VERSION = 8     # onnx writes a newer IR than some onnxruntime releases read

    def available(self):
        return super().available() and importlib.util.find_spec("onnx") is not None

    def version(self):
        from importlib.metadata import version
        return f"{version('onnxruntime')} (onnx {version('onnx')})"

    def setup(self, threads):
        import onnx  # noqa: F401  (fails here, not in the first build, when missing)
        import onnxruntime as ort
        self.threads = threads
        self.ort = ort

    def _session(self, graph):
        from onnx import helper
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.OPSET)])
        model.ir_version = self.IR_VERSION
        opts = self.ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = self.ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        return self.ort.InferenceSession(self._serialized(model), opts,
                                         providers=["CPUExecutionProvider"])

    def _serialized(self, model):
        return model.SerializeToString()

    @staticmethod
    def _lstm_params(weights, k, suffixes):
        """W (D, 4H, in), R (D, 4H, H), B (D, 8H) in ONNX's gate order i, o, f, c."""
        get = lambda name, s: reorder_gates(weights[f"{name}_l{k}{s}"], "torch", "onnx")
        W = np.stack([get("weight_ih", s) for s in suffixes]).astype(np.float32)
        R = np.stack([get("weight_hh", s) for s in suffixes]).astype(np.float32)
        B = np.stack([np.concatenate([get("bias_ih", s), get("bias_hh", s)])
                      for s in suffixes]).astype(np.float32)
        return W, R, B

    def build(self, case):
        from onnx import TensorProto, helper, numpy_helper
        w, weights = case.workload, case.model.weights
        suffixes = _dir_suffixes(w)
        D, H = len(suffixes), w.hidden_size
        direction = "bidirectional" if w.bidirectional else "forward"
        init, nodes = [], []
        B_, T = (w.batch, 1) if w.stream else (w.batch, w.time)
        inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, [T, B_, w.input_size])]
        seq = ""
        if case.lengths is not None:
            seq = "sequence_lens"
            inputs.append(helper.make_tensor_value_info(seq, TensorProto.INT32, [B_]))
        layer_in = "X"
        for k in range(w.num_layers):
            for tag, arr in zip("WRB", self._lstm_params(weights, k, suffixes)):
                init.append(numpy_helper.from_array(arr, f"{tag}{k}"))
            if w.stream:
                inputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, B_, H])
                           for n in ("h0", "c0")]
                node_in, node_out = [layer_in, "W0", "R0", "B0", "", "h0", "c0"], ["", "Y_h", "Y_c"]
            else:
                node_in, node_out = [layer_in, f"W{k}", f"R{k}", f"B{k}", seq], [f"Y{k}"]
            nodes.append(helper.make_node("LSTM", node_in, node_out, hidden_size=H,
                                          direction=direction))
            if k + 1 < w.num_layers:
                # (T, D, B, H) -> (T, B, D*H): the next layer's input
                init.append(numpy_helper.from_array(np.array([0, 0, -1], np.int64), f"shape{k}"))
                nodes.append(helper.make_node("Transpose", [f"Y{k}"], [f"Yt{k}"], perm=[0, 2, 1, 3]))
                nodes.append(helper.make_node("Reshape", [f"Yt{k}", f"shape{k}"], [f"X{k + 1}"]))
                layer_in = f"X{k + 1}"
        if w.stream:
            outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, B_, H])
                       for n in ("Y_h", "Y_c")]
        else:
            last = f"Y{w.num_layers - 1}"
            outputs = [helper.make_tensor_value_info(last, TensorProto.FLOAT, [T, D, B_, H])]
        sess = self._session(helper.make_graph(nodes, "lstm", inputs, outputs, init))

        if w.stream:
            xs = [x.reshape(1, B_, -1) for x in _stream_inputs(case)]
            next_x = itertools.cycle(xs).__next__
            zeros = np.zeros((1, B_, H), np.float32)
            state = [zeros, zeros]
            names = ["Y_h", "Y_c"]

            def step(x3):
                h, c = sess.run(names, {"X": x3, "h0": state[0], "c0": state[1]})
                state[0], state[1] = h, c
                return h[0]

            def outputs():
                state[0] = state[1] = zeros
                return np.stack([step(x) for x in xs])

            return Bound(lambda: step(next_x()), outputs)

        feed = {"X": np.ascontiguousarray(case.x.transpose(1, 0, 2))}
        if seq:
            feed[seq] = case.lengths.astype(np.int32)
        names = [outputs[0].name]

        def call():
            return sess.run(names, feed)[0]

        def to_batch_major():
            y = call()                                    # (T, D, B, H)
            return y.transpose(2, 0, 1, 3).reshape(B_, T, D * H)

        return Bound(call, to_batch_major)


class OnnxRuntimeInt8(OnnxRuntime):
    """The ONNX Runtime peer's float32 model through ``quantize_dynamic(weight_type=QInt8,
    op_types_to_quantize=["LSTM"])``, as BENCH.md gives the call: each ``LSTM`` node becomes a
    ``DynamicQuantizeLSTM`` (int8 W and R, one scale per direction as ``per_channel`` is off;
    the input and h quantized to uint8 at run time)."""
    name = "onnxruntime-int8"

    def setup(self, threads):
        super().setup(threads)
        from onnxruntime.quantization import QuantType, quantize_dynamic
        self.quantize_dynamic, self.qint8 = quantize_dynamic, QuantType.QInt8

    def _serialized(self, model):
        import onnx
        silenced = logging.root.manager.disable
        # its advice to run shape inference first, which an LSTM graph does not need
        logging.disable(logging.WARNING)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "int8.onnx")
                self.quantize_dynamic(model, path, weight_type=self.qint8,
                                      op_types_to_quantize=["LSTM"])
                quantized = onnx.load(path)
        finally:
            logging.disable(silenced)
        ops = {node.op_type for node in quantized.graph.node}
        if "LSTM" in ops or "DynamicQuantizeLSTM" not in ops:
            raise RuntimeError(f"quantize_dynamic left the LSTM unquantized (ops: {sorted(ops)})")
        return quantized.SerializeToString()


class Torch(Peer):
    """``torch.nn.LSTM`` (``nn.LSTMCell`` for a stream) under ``torch.inference_mode()``."""
    name = module = package = "torch"
    dtype = "float32"     # of the module, its input and state; outputs are float32 NumPy

    def setup(self, threads):
        import torch
        torch.set_num_threads(threads)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # already set in this process
            pass
        self.torch = torch

    def build(self, case):
        torch = self.torch
        dtype = getattr(torch, self.dtype)
        w = case.workload
        state_dict = {k: torch.from_numpy(np.array(v)) for k, v in case.model.weights.items()}
        if w.stream:
            cell = torch.nn.LSTMCell(w.input_size, w.hidden_size)
            cell.load_state_dict({k[:-len("_l0")]: v for k, v in state_dict.items()})
            cell.to(dtype).eval()
            xs = _stream_inputs(case)
            next_x = itertools.cycle(xs).__next__
            zeros = torch.zeros(w.batch, w.hidden_size, dtype=dtype)
            state = [(zeros, zeros)]

            def step(x_t):
                with torch.inference_mode():
                    h, c = cell(torch.from_numpy(x_t).to(dtype), state[0])
                state[0] = (h, c)
                return h.float().numpy()

            def outputs():
                state[0] = (zeros, zeros)
                return np.stack([step(x) for x in xs])

            return Bound(lambda: step(next_x()), outputs)

        lstm = torch.nn.LSTM(w.input_size, w.hidden_size, num_layers=w.num_layers,
                             bidirectional=w.bidirectional)
        lstm.load_state_dict(state_dict)
        lstm.to(dtype).eval()
        x = torch.from_numpy(np.ascontiguousarray(case.x.transpose(1, 0, 2))).to(dtype)  # (T, B, I)
        T = x.shape[0]
        if case.lengths is None:
            def call():
                with torch.inference_mode():
                    return lstm(x)[0].float().numpy()
        else:
            from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
            lengths = torch.from_numpy(case.lengths.astype(np.int64))

            def call():
                with torch.inference_mode():
                    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
                    y, _ = pad_packed_sequence(lstm(packed)[0], total_length=T)
                    return y.float().numpy()

        return Bound(call, lambda: call().transpose(1, 0, 2))


class TorchBFloat16(Torch):
    """``Torch`` with the module, its input and state in ``torch.bfloat16``."""
    name = "torch-bf16"
    dtype = "bfloat16"


class TensorFlow(Peer):
    """Keras ``LSTM`` (``Bidirectional`` for stack, ``LSTMCell`` for a stream) inside a
    ``tf.function``, variable lengths as a Keras mask.

    TensorFlow's thread pools can be sized only before it first runs an op, once per process:
    the harness therefore runs every thread count in its own worker process and sets up this
    peer first there.
    """
    name = "tensorflow"
    module = "tensorflow"

    def available(self):
        return super().available() and importlib.util.find_spec("keras") is not None

    def version(self):
        from importlib.metadata import version
        tf = [v for v in (_dist_version("tensorflow"), _dist_version("tensorflow-cpu")) if v]
        return f"{tf[0] if tf else 'unknown'} (keras {version('keras')})"

    def setup(self, threads):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        # TensorFlow's C++ start-up notes (oneDNN, CUDA probing) ignore TF_CPP_MIN_LOG_LEVEL;
        # they are held back and shown only if the set-up fails.
        with _stderr_held_back():
            import tensorflow as tf
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
            import keras
            if keras.backend.backend() != "tensorflow":
                raise RuntimeError(f"keras runs on {keras.backend.backend()}, not tensorflow "
                                   "(set KERAS_BACKEND=tensorflow)")
            (tf.constant(1.0) + 1.0).numpy()   # the first op initialises the runtime
        self.tf, self.keras = tf, keras

    @staticmethod
    def _keras_weights(weights, k, s):
        """Keras kernel (in, 4H), recurrent kernel (H, 4H), one bias; gate order i, f, c, o."""
        get = lambda n: np.asarray(weights[f"{n}_l{k}{s}"], np.float32)
        return [get("weight_ih").T.copy(), get("weight_hh").T.copy(),
                get("bias_ih") + get("bias_hh")]

    def build(self, case):
        tf, keras = self.tf, self.keras
        w, weights = case.workload, case.model.weights
        H = w.hidden_size
        if w.stream:
            cell = keras.layers.LSTMCell(H)
            cell.build((w.batch, w.input_size))
            cell.set_weights(self._keras_weights(weights, 0, ""))

            @tf.function
            def cell_step(x, h, c):
                out, (h2, c2) = cell(x, [h, c])
                return h2, c2

            xs = _stream_inputs(case)
            next_x = itertools.cycle(xs).__next__
            zeros = tf.zeros((w.batch, H))
            state = [zeros, zeros]

            def step(x_t):
                h, c = cell_step(x_t, state[0], state[1])
                state[0], state[1] = h, c
                return h.numpy()

            def outputs():
                state[0] = state[1] = zeros
                return np.stack([step(x) for x in xs])

            return Bound(lambda: step(next_x()), outputs)

        layers = []
        x = tf.constant(case.x)
        h = x
        for k in range(w.num_layers):
            if w.bidirectional:
                layer = keras.layers.Bidirectional(keras.layers.LSTM(H, return_sequences=True))
                h = layer(h)
                layer.forward_layer.set_weights(self._keras_weights(weights, k, ""))
                layer.backward_layer.set_weights(self._keras_weights(weights, k, "_reverse"))
            else:
                layer = keras.layers.LSTM(H, return_sequences=True)
                h = layer(h)
                layer.set_weights(self._keras_weights(weights, k, ""))
            layers.append(layer)

        if case.lengths is None:
            @tf.function
            def forward(x):
                for layer in layers:
                    x = layer(x)
                return x

            def call():
                return forward(x).numpy()
        else:
            mask = tf.sequence_mask(case.lengths, w.time)

            @tf.function
            def forward(x, mask):
                for layer in layers:
                    x = layer(x, mask=mask)
                return x

            def call():
                return forward(x, mask).numpy()

        return Bound(call, call)


@contextlib.contextmanager
def _stderr_held_back():
    """Send file descriptor 2 to a temporary file; replay it if the block raises."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            held.seek(0)
            sys.stderr.write(held.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _dist_version(name):
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def limit_blas_threads(threads):
    """Cap every BLAS/OpenMP pool NumPy and SciPy loaded (threadpoolctl when installed; the
    worker process also starts with OPENBLAS_NUM_THREADS/OMP_NUM_THREADS set).
    Returns how, and a function that undoes it."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return "the environment (OPENBLAS_NUM_THREADS) only", lambda: None
    limits = threadpool_limits(threads, user_api="blas")
    return "threadpoolctl", limits.restore_original_limits


# fastlstm first: the others are checked against it.
PEERS = {p.name: p for p in [FastLSTM(), OnnxRuntime(), Torch(), TensorFlow(), NumpyReference()]}

PRECISIONS = ("int8", "bfloat16")
# A precision's target peer (BENCH.md sets fastlstm's targets against it), and the float32 peers
# whose fastest gives the speed-up over exact inference.
TARGET_PEERS = {"int8": OnnxRuntimeInt8(), "bfloat16": TorchBFloat16()}
FLOAT32_PEERS = {p.name: p for p in [FastLSTM("fastlstm-float32"), PEERS["onnxruntime"],
                                     PEERS["torch"]]}


def peers_for(precision="float32"):
    """The peers of a run at a precision, by name, fastlstm first: at a reduced precision
    "fastlstm" is ``fastlstm.quantize(model, precision)``, then the target peer and the float32
    peers."""
    if precision == "float32":
        return PEERS
    fast = FastLSTM(precision=precision)
    return {p.name: p for p in [fast, TARGET_PEERS[precision], *FLOAT32_PEERS.values()]}
