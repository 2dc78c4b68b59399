"""What machine a benchmark ran on: every figure is only meaningful next to this."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe() -> dict:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30 if hasattr(os, "sysconf") else None
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "memory_gib": round(memory, 1) if memory else None,
            "gpu": gpu, "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "system": f"{platform.system()} {platform.release()}"}


def in_words(machine: dict) -> str:
    memory = f", {machine['memory_gib']} GiB" if machine.get("memory_gib") else ""
    return (f"{machine['cpu']}, {machine['cores']} cores{memory}; GPU: {machine['gpu']}; "
            f"torch {machine['torch']} ({machine['torch_threads']} threads), Python {machine['python']}")
