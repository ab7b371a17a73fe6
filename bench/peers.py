"""Peers the scheduling benchmark runs against, each installed into a virtualenv of its own under
``.corral/peers/`` (never into Corral's): their dependencies do not mix with Corral's, and Corral never depends on
them. ``make bench-scheduling`` installs them; a peer that does not install is left out with the reason printed."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .harness import ROOT

PEERS_DIR = ROOT / ".corral" / "peers"


@dataclass(frozen=True)
class Peer:
    name: str
    requirement: str  # what pip installs
    command: str  # the program the peer runs as, in the venv's bin/

    @property
    def venv(self) -> Path:
        return PEERS_DIR / self.name

    @property
    def program(self) -> Path:
        return self.venv / "bin" / self.command


HERD = Peer("ollama-herd", "ollama-herd", "herd")
LITELLM = Peer("litellm", "litellm[proxy]", "litellm")


def install(peer: Peer) -> str:
    """Install ``peer`` if its program is missing; '' when it is there, else why not (pip's last line)."""
    if peer.program.exists():
        return ""
    peer.venv.parent.mkdir(parents=True, exist_ok=True)
    steps = [[sys.executable, "-m", "venv", str(peer.venv)],
             [str(peer.venv / "bin" / "python"), "-m", "pip", "install", "--quiet", peer.requirement]]  # fmt: skip
    for argv in steps:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode:
            lines = (done.stderr or done.stdout).strip().splitlines()
            return lines[-1] if lines else f"{argv[0]} exited {done.returncode}"
    return "" if peer.program.exists() else f"{peer.program} missing after install"


def main() -> None:
    for peer in (HERD, LITELLM):
        why = install(peer)
        print(f"{peer.name}: {'ready' if not why else 'not installed: ' + why}")


if __name__ == "__main__":
    main()
