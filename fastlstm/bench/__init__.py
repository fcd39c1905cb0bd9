"""The benchmark suite of shared/BENCH.md: ``python -m fastlstm.bench [--quick]
[--precision int8|bfloat16]``.

- ``workloads``: the shapes, the shared model (``fastlstm.LSTM(..., seed=0)``) and inputs, and
  the error table's trained-like init and long sequence;
- ``peers``: fastlstm, ONNX Runtime, PyTorch, TensorFlow/Keras and the NumPy reference, each
  built from the same weights; a framework that is not installed is reported as missing; at a
  reduced precision, ``fastlstm.quantize``'s model, ONNX Runtime int8 or PyTorch bfloat16 and
  the float32 peers (``peers_for``);
- ``harness``: agreement and accuracy checks, alternating timing, the sgemm rate, machine
  facts, the targets, the reduced-precision error table;
- ``report``: RESULTS.md, results.json, the plots and the README's tables.

Needs only NumPy and SciPy; the peers and matplotlib (plots) are used when installed.
"""
