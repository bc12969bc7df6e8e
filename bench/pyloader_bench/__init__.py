"""`pyloader bench`: conversion throughput, side by side, in one run.

Sections (each measured thing runs in a fresh subprocess; times are medians of --repeat runs after one
untimed warm-up run, whose peak resident memory above the process's post-import baseline is reported):

* weights: the weights stage (file -> arrays in Keras layout, batch norm folded): `pyloader.read` vs a plain
  numpy loader (np.fromfile + transpose + fold) vs OpenCV's `cv2.dnn.readNetFromDarknet` vs a copy of the
  file's bytes into a pre-faulted buffer (the floor). Warm page cache, and cold (the file's pages evicted
  before each run with posix_fadvise(DONTNEED), or /proc/sys/vm/drop_caches) where the machine allows.
* model: a ready keras.Model: `pyloader.load` vs building the same model and Keras' own `load_weights` of a
  `.weights.h5` saved from it.
* pt: a YOLOv5 .pt: `pyloader.load` vs `torch.load` + yolov5's own TensorFlow builder (yolov5/models/tf.py
  TFModel), when torch and yolov5 are installed.
* ultralytics: Ultralytics .pt checkpoints (YOLOv8x, YOLO11x as its trainer + strip_optimizer write them),
  when torch and ultralytics are installed: `pyloader.load` vs the Ultralytics route to a model. Its route to
  TensorFlow, `export(format="saved_model")`, goes through onnx2tf and pip-installs it when missing; where
  onnx2tf is not installed that route cannot run offline, and the comparison is `torch.load` + building its
  model as Ultralytics does for inference (`ema` or `model`, `.float().fuse().eval()`).
* pickle: the pickle stage alone, `load_pickle` (native) vs `load_pickle_reference` (Python), in MB/s.
* backends: `pyloader.load` on each Keras backend installed, with where its time goes.
* bulk: N checkpoints of one architecture through `pyloader.convert` (.keras outputs) vs N separate
  `pyloader.load` + `model.save`, and per output format with templates.

With no files it measures an embedded default (models.py: a small and a YOLOv4-size synthetic CSP-Darknet, and
a YOLOv5x checkpoint built by the yolov5 package when installed) written to a temporary folder. Results:
results.json, results.md and chart.png (matplotlib, optional) in --out.

This package (bench/pyloader_bench in a checkout) installs with pyloader: `pyloader bench`,
`python -m pyloader_bench` and `python bench/run.py` all run cli.main. Layout: cli (options, one run),
sections/ (one module per group of sections, the driver's side), driver (a spec run in a fresh process),
worker, worker_ops, worker_runs and probes (inside that process), models and synthetic_pt (the inputs),
targets, report, machine.
"""
