"""`corral api` runs its process again under the C allocator (PYTHONMALLOC=malloc) so that the trim after a burst of
streams can give the burst's memory back: the same pid, the variable in its environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Fleet

pytestmark = pytest.mark.integration


def api_environ(fleet: Fleet) -> dict[str, str]:
    child = fleet.children[-1]
    raw = Path(f"/proc/{child.process.pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


@pytest.mark.parametrize("trim", [True, False])
def test_the_api_process_holds_the_c_allocator_when_it_trims(fleet: Fleet, trim: bool) -> None:
    fleet.api(own_exec=True, trim_memory=trim)  # answers /readyz: the run after the exec
    env = api_environ(fleet)
    assert env.get("PYTHONMALLOC") == ("malloc" if trim else None)
