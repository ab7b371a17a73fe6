"""bench/cold.py: the table of the first token's pieces timed back to back and after other work."""

from __future__ import annotations

from bench import cold


def test_every_piece_is_timed_in_every_case() -> None:
    rows = cold.table(runs=1).splitlines()
    assert rows[0] == "| before the run | key check | validation | job built |"
    assert [row.split(" | ")[0].removeprefix("| ") for row in rows[2:]] == [label for label, _ in cold.BEFORE]
    for row in rows[2:]:
        times = [float(cell) for cell in row.strip("| ").split(" | ")[1:]]
        assert len(times) == 3 and all(t > 0 for t in times)
