"""What every benchmark prints first: the machine it ran on."""

from __future__ import annotations

import os
import platform


def machine_line() -> str:
    import torch

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"machine: {platform.platform()}, {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
        f"python {platform.python_version()}, torch {torch.__version__}, torch threads {torch.get_num_threads()}, load average {load:.1f}"
    )
