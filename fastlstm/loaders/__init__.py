"""Loaders: each turns one framework's LSTM into fastlstm's layers (``fastlstm._spec.Layer``).

A loader imports its framework only when it is handed that framework's object.
"""
