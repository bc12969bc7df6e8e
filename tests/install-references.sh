#!/usr/bin/env bash
# Installs the independent references of the test suite into the active Python environment:
# PyTorch (CPU use), the PyPI yolov5, ultralytics, yolov7detect and yolo9 packages for the .pt tests, OpenCV 4.x for
# the Darknet tests. yolov7detect goes in with --no-deps (it pins protobuf<4.21.3, which would break TensorFlow), and
# so does yolo9 (it pins albumentations<1.4.0); their run-time needs are listed in requirements-reference.txt.
# yolov5 and ultralytics pull in opencv-python, which (in 5.x) has no Darknet importer and shares the cv2 package with
# opencv-python-headless, so it is removed and opencv-python-headless 4.x restored afterwards.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python -m pip install -r "$here/requirements-reference.txt"
python -m pip install --no-deps "yolov7detect==1.0.1" "yolo9==1.0.18"
# tflite-support (the TFLite metadata reader of tests/test_tflite_metadata.py) pins protobuf<4 too: --no-deps; its
# extensions need libusb-1.0 (the libusb-package wheel in requirements-reference.txt ships it).
python -m pip install --no-deps "tflite-support==0.4.4"
python -m pip uninstall -y opencv-python
python -m pip install --force-reinstall --no-deps "opencv-python-headless==4.12.0.88"
python -c "import cv2; assert cv2.__version__.startswith('4.') and hasattr(cv2.dnn, 'readNetFromDarknet'), cv2.__version__"
