"""crashpoints.NAMES lists every crash point of the code, and only those: the kill -9 tests arm the points from it."""

import re
from pathlib import Path

from stream.crashpoints import NAMES

STREAM = Path(__file__).resolve().parents[2] / "stream"


def test_names_lists_each_crash_point_of_the_code_once_and_no_other():
    used = {m for f in STREAM.rglob("*.py") for m in re.findall(r'crash_point\("([a-z_.]+)"\)', f.read_text())}
    assert sorted(used - set(NAMES)) == []
    assert sorted(set(NAMES) - used) == []
    assert len(NAMES) == len(set(NAMES))
