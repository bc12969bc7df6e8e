"""Keras layer classes shared by the Ultralytics builders (model, backbone_model)."""

from __future__ import annotations

import keras
from keras import layers

__all__ = ["ChannelSplit"]

_PKG = "pyloader_ultralytics"


@keras.saving.register_keras_serializable(package=_PKG)
class ChannelSplit(layers.Layer):
    """Channels [start, stop) of an NHWC tensor (torch's chunk/split along dim 1)."""

    def __init__(self, start, stop, **kw):
        super().__init__(**kw)
        self.start, self.stop = int(start), int(stop)

    def call(self, x):
        return x[..., self.start:self.stop]

    def tflite_ops(self, w, inputs):
        """STRIDED_SLICE (pyloader.outputs.tflite_direct)."""
        return w.slice(inputs[0], -1, self.start, self.stop)

    def compute_output_shape(self, shape):
        return (*shape[:-1], self.stop - self.start)

    def get_config(self):
        return {**super().get_config(), "start": self.start, "stop": self.stop}
