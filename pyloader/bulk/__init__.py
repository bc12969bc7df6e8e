"""Bulk conversion of checkpoints into deployable files (`pyloader.convert`, `pyloader convert`): jobs.py finds
the sources and names the outputs, schedule.py runs the jobs, worker.py converts one (pyloader.assemble builds and
fills the model, the format's module in pyloader.outputs writes it), atomic.py renames a finished output into place.

* Sources: files, folders (their .weights / .pt / .pth files, in subfolders too: training-run folders such as
  runs/train/exp3/weights/best.pt) or glob patterns. A .weights file takes `cfg` or the .cfg of the same stem
  beside it; a .pt file carries its architecture. A folder with no checkpoint is a failed source.
* Outputs, named after the source's stem in `out_dir` (a checkpoint found in a folder's subfolder: after its
  path relative to that folder, `train-exp3-best`, leaving out `weights` folders): `<stem>.keras` (default),
  `<stem>.weights.h5`, `<stem>_saved_model/` (a TF SavedModel folder) or `<stem>.tflite` (float32, or float16
  weights with tflite_fp16=True). Every output carries pyloader's metadata and names its outputs
  (pyloader/metadata.py, pyloader/outputs/); SavedModel and TFLite need the TensorFlow or JAX backend.
* Atomic outputs: everything is written under a temporary name in out_dir,
  `.pyloader-tmp-<pid>-<random>-<output name>` (hidden, and never an output name), then renamed into place
  (os.replace for files; for a folder, os.rename, after moving an old one aside when overwriting), and only
  while the run is open (atomic.Run: a log of the outputs renamed, itself a temporary entry). An error removes the
  temporary entry; SIGKILL cannot be caught, so it may leave one behind: every run starts by removing the
  temporary entries of processes that no longer exist (`clean_stale_temporaries`).
* A full device (ENOSPC, EDQUOT): the source fails with "<output>: no space left on device (needs ~N bytes, M
  free)" (N: the template's size, else the most of the weights' size and the space free when it started), and
  from then on a source is not started while the free space is below what it would need (its checkpoint's size
  times the bytes per checkpoint byte of that output): "not started: ...". An executor gets one more job than it
  has workers at a time, so those are the only ones that can still start. A run ends by removing the temporary
  entries of processes that died meanwhile (a SIGKILLed pool or Dask worker; Dask retries its task elsewhere).
* Ctrl-C (KeyboardInterrupt): the run is closed (no output appears after it), tasks not started are cancelled, a
  `jobs=N` pool's workers (which ignore SIGINT and SIGTERM) are killed and their temporaries removed; convert
  raises `Interrupted`, whose `results` list every output renamed into place as 'converted' and the unfinished
  sources as 'interrupted'. An executor's running tasks (threads, Dask) cannot be stopped: they end without
  renaming their output and remove their temporaries themselves.
* Model reuse: checkpoints that share an architecture (same cfg text + input size + options for darknet; the
  same .pt family plan structure, anchors and options for .pt) build the Keras model once per process and only
  reassign the weights. The cached model keeps the name of the first checkpoint that built it.
* `executor=`: a concurrent.futures.Executor whose workers can import pyloader: ThreadPoolExecutor, a
  ProcessPoolExecutor with the 'spawn' or 'forkserver' context, Dask's `Client.get_executor()`. Jobs are the
  picklable `Job` and run `run_job` in the workers, each of which keeps its own model cache. A process pool
  that forks is refused once TensorFlow or JAX is loaded in this process (their thread pools do not survive a
  fork: the workers would hang). Ray ships no concurrent.futures.Executor. `jobs=N` without an executor uses a
  ProcessPoolExecutor of N spawned processes.

This module does not import TensorFlow, Keras or torch until a conversion runs.
"""

from ..outputs import FORMATS
from .atomic import clean_stale_temporaries
from .jobs import TMP_PREFIX, Job, Result, check_detect_options, find_checkpoints, output_name, plan_jobs
from .schedule import Interrupted, check_framework, check_out_dir, convert
from .worker import run_job

__all__ = ["Result", "Job", "convert", "plan_jobs", "run_job", "output_name", "find_checkpoints",
           "clean_stale_temporaries", "check_framework", "check_detect_options", "check_out_dir", "Interrupted",
           "FORMATS", "TMP_PREFIX"]
