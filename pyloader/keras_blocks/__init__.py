"""Keras building blocks shared by the families: layers (layers.py) and filling a model from arrays
(assign.py). Everything here imports Keras."""
