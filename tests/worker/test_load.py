from __future__ import annotations

import pytest

from corral.worker.load import cpu_ram, parse_nvidia_smi

pytestmark = pytest.mark.unit


def test_nvidia_smi_output_is_parsed() -> None:
    out = "0, NVIDIA A100-SXM4-40GB, 1234, 40960, 87\n1, NVIDIA A100-SXM4-40GB, 0, 40960, 0\nbroken line\n"
    gpus = parse_nvidia_smi(out)
    assert gpus[0] == {"index": 0, "name": "NVIDIA A100-SXM4-40GB", "memory_used_mib": 1234,
                       "memory_total_mib": 40960, "utilization_pct": 87}  # fmt: skip
    assert len(gpus) == 2


def test_cpu_and_ram_are_sane() -> None:
    cpu, used, total = cpu_ram()
    assert 0 <= cpu <= 100 * 64 and 0 < used <= total
