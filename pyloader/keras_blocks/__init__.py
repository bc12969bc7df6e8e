"""Keras building blocks shared by the families: layers (layers.py), filling a model from arrays
(assign.py), decode + NMS (nms.py). Everything here imports Keras except nms_options.py."""
