"""Ultralytics detection checkpoints (YOLOv8, YOLO11, YOLOv5u; P5 and P6): reader (weights) and Keras builder (model)."""
