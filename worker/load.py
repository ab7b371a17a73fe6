"""Host load for the heartbeat: CPU and RAM from psutil, GPUs from nvidia-smi where it exists."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import psutil

NVIDIA_QUERY = "index,name,memory.used,memory.total,utilization.gpu"


def gpu_stats() -> list[dict[str, Any]]:
    """One dict per NVIDIA GPU (memory in MiB, utilisation in %), or [] without nvidia-smi."""
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return []
    try:
        out = subprocess.run(
            [binary, f"--query-gpu={NVIDIA_QUERY}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return parse_nvidia_smi(out)


def parse_nvidia_smi(out: str) -> list[dict[str, Any]]:
    gpus = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 5:
            continue
        try:
            gpus.append(
                {
                    "index": int(parts[0]),
                    "name": parts[1],
                    "memory_used_mib": int(float(parts[2])),
                    "memory_total_mib": int(float(parts[3])),
                    "utilization_pct": int(float(parts[4])),
                }
            )
        except ValueError:
            continue
    return gpus


def cpu_ram() -> tuple[float, int, int]:
    """CPU % since the last call, RAM used and total in bytes."""
    memory = psutil.virtual_memory()
    return psutil.cpu_percent(None), memory.total - memory.available, memory.total
