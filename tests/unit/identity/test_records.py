"""The identity records: what a batch allocates of them is not tracked by the garbage collector."""

import gc

import msgspec

from stream.identity.records import (
    Device,
    Held,
    HeldRow,
    Holds,
    Link,
    Links,
    Profile,
    Remap,
    Remaps,
    User,
    dec_device,
    dec_held,
    dec_held_rows,
    enc,
)


def test_the_identity_records_are_not_tracked_by_the_garbage_collector():
    """A held batch allocates a HeldRow per row and a Device and a Profile per device and user: untracked, they
    do not count towards the collector's thresholds nor are walked by its passes (none of them can be part of a
    cycle: their fields are scalars, bytes, and lists and dicts of those)."""
    row = HeldRow(1, b"", b"null", b"{}", b'"t"', 7, None, None, False, b"{}", 0, b"k", b"u", b"", "", 3, 1, 10)
    held = Held(0, ["u"], [row])
    records = [Device(7, "u", {"s[0]": 1}), Profile(None, None, False), User(7, None, None, False),
               Link(1, "u", "d", 0, 7, 0, 0, None, None, False, b"{}"), Remap(1, "d", "u", 7, 7, None, None, False,
                                                                               b"{}"), row, held, Holds([])]
    records += [Links(0, 0, [records[3]]), Remaps([records[4]])]
    assert [type(r).__name__ for r in records if gc.is_tracked(r)] == []
    decoded = [dec_device(enc.encode(records[0])), dec_held(enc.encode(held)), *dec_held_rows(enc.encode([row]))]
    assert [type(r).__name__ for r in decoded if gc.is_tracked(r)] == []
    assert msgspec.structs.asdict(decoded[1].rows[0]) == msgspec.structs.asdict(row)
