"""YOLOv5 `.pt` checkpoints (github.com/ultralytics/yolov5, v6.x and v7.0): the reader (weights.py, numpy only,
on the shared safe torch reader) and the Keras model builder (model.py)."""
