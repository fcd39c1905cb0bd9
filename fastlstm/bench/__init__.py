"""The benchmark suite of shared/BENCH.md: ``python -m fastlstm.bench [--quick]``.

- ``workloads``: the shapes, the shared model (``fastlstm.LSTM(..., seed=0)``) and inputs;
- ``peers``: fastlstm, ONNX Runtime, PyTorch, TensorFlow/Keras and the NumPy reference, each
  built from the same weights; a framework that is not installed is reported as missing;
- ``harness``: agreement and accuracy checks, alternating timing, the sgemm rate, machine facts;
- ``report``: RESULTS.md, results.json and the plots.

Needs only NumPy and SciPy; the peers and matplotlib (plots) are used when installed.
"""
