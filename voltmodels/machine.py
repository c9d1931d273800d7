"""The machine a measurement ran on: one line that every benchmark and study table carries."""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from pathlib import Path


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line(packages: Sequence[str] = ("torch",), env: Sequence[str] = ()) -> str:
    """One line: platform, CPU model, CPUs (usable by this process), load average, Python, the versions
    of `packages` (torch with its thread count) and the values of the environment variables `env`."""
    from importlib.metadata import version

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    parts = [
        f"machine: {platform.platform()}, {_cpu_model()}, {os.cpu_count()} CPUs ({usable} usable), load average (1, 5, 15 min) {load}",
        f"python {platform.python_version()}",
    ]
    for package in packages:
        parts.append(f"{package} {version(package)}")
        if package == "torch":
            import torch

            parts.append(f"torch threads {torch.get_num_threads()}")
    parts += [f"{name}={os.environ.get(name, 'unset')}" for name in env]
    return ", ".join(parts)
