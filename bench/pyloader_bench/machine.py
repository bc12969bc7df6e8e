"""What the report says about the machine: CPU, cores, RAM, versions, and how the page cache can be dropped."""

from __future__ import annotations

import os
import platform
import tempfile


def cold_method() -> tuple:
    """How the page cache can be dropped here: ('fadvise' | 'drop_caches' | None, explanation)."""
    fd, probe = tempfile.mkstemp()
    try:
        os.write(fd, b"x" * 4096)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        return "fadvise", ("posix_fadvise(POSIX_FADV_DONTNEED) on the .weights and .cfg before each run "
                           "(per file; the rest of the machine's cache is left alone)")
    except (OSError, AttributeError) as e:
        try:
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("1")
            return "drop_caches", "echo 1 > /proc/sys/vm/drop_caches before each run"
        except OSError:
            return None, f"cold cache not possible here (fadvise: {e}; drop_caches not writable)"
    finally:
        os.close(fd)
        os.unlink(probe)


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    ram = None
    try:
        with open("/proc/meminfo") as f:
            ram = int(f.readline().split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    versions = {"python": platform.python_version()}
    from importlib import metadata

    for pkg in ("pyloader", "numpy", "keras", "tensorflow", "tensorflow-cpu", "opencv-python-headless", "torch",
                "yolov5", "matplotlib"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_bytes": ram, "platform": platform.platform(),
            "versions": versions}
