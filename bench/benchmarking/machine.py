"""The machine a benchmark runs on: CPU model, flags and cores, memory, load average, GPUs.

The parent reads the CPU and the load from ``/proc`` (it never imports TensorFlow); a worker describes
the GPUs with its own ``tf`` (:func:`gpu_details`).
"""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path


def cpu_info() -> dict:
    info: dict = {"model": platform.processor() or platform.machine(), "flags": {}}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    model = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    if model:
        info["model"] = model.group(1).strip()
    flags_line = re.search(r"^flags\s*:\s*(.+)$", text, re.M)
    flags = set(flags_line.group(1).split()) if flags_line else set()
    for flag in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8", "fma"):
        info["flags"][flag] = flag in flags
    info["logical_cores"] = os.cpu_count()
    try:
        info["usable_cores"] = len(os.sched_getaffinity(0))
    except AttributeError:
        info["usable_cores"] = os.cpu_count()
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        info["cgroup_cpu_limit"] = None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        info["cgroup_cpu_limit"] = None
    try:
        mem = re.search(r"^MemTotal:\s*(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
        info["memory_gib"] = round(int(mem.group(1)) / 2**20, 1) if mem else None
    except OSError:
        info["memory_gib"] = None
    return info


def load_average() -> list[float] | None:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


def gpu_details(tf) -> list[dict]:
    found = []
    for device in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(device)
        found.append({"name": device.name, **{k: str(v) for k, v in details.items()}})
    return found
