"""YOLOv7 `.pt` checkpoints (github.com/WongKinYiu/yolov7; PyPI `yolov7detect`): the reader (weights.py, numpy
only, on the shared safe torch reader) and the Keras model builder (model.py)."""
