"""Loaders: each turns one framework's LSTM into fastlstm's layers (``fastlstm._spec.Layer``).

``torch`` (nn.LSTM / nn.LSTMCell and state dicts), ``keras`` (Keras 3 layers and saved files),
``tf1`` (tf.compat.v1 cell variables) and ``onnx`` (LSTM nodes); the gate orders of all of
them live in ``_layouts``. The public entry points are the ``from_*`` classmethods of
``fastlstm.LSTM`` / ``fastlstm.LSTMCell``.

A loader imports its framework only when it is handed that framework's object.
"""
