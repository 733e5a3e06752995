"""The user side of identity: adopt or merge, pure. Input: identity.links messages of one partition, in order.

The first link of a user_id gives the user its amplitude_id (the device's, or the
(device, user) pair's), and an answer goes back to the device's events.valid
partition (a remap from the id to itself: the device side holds the pair's rows
until it hears back). A later link with another id merges that id into the
user's: one merge record for the merged-IDs file and one remap for the device's
events.valid partition, which is the answer to that link. The user's id never changes once adopted, so merges
never chain. The user's fields fold every link's: the earliest creation time
(and its start_version), paying if any link was, the properties of each link
over the earlier ones.

Merge records (FORMATS.md §1.5), one JSON line each:
``{"amplitude_id": <the user's id>, "merged_amplitude_id": <the id merged into
it>, "merge_time": <event_time of the event that linked them, epoch ms>,
"merge_server_time": <its server_upload_time, epoch ms: picks the file's hour>,
"scope": <the project id>}``. Units: epoch milliseconds, as every other epoch
time Amplitude's APIs use (*unverified* for this file). ``scope``: Amplitude
documents it as an int without its meaning (*unverified*); here it is the
project, since ids are per project and the file is per org.

Replays: a links message whose events.valid offset is at or below the
watermark of its events.valid partition was applied already (the device side
replayed its batch) and is dropped. The agent sends a message's merges and
remaps and waits for Kafka to have them before it writes the state, so a crash
in between replays the message on the old state: the same merges (the exporter
drops those it already wrote, by their identity.links offset) and remaps
(idempotent).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import msgspec

from stream.identity.device import BatchState, GetMany
from stream.identity.records import (
    Link,
    Links,
    Remap,
    User,
    dec_user,
    decode_int,
    enc,
    encode_int,
    user_key,
    watermark_key,
)

_json = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode


class Merge(NamedTuple):
    project: int
    amplitude_id: int
    merged_amplitude_id: int
    merge_time: int
    merge_server_time: int

    def line(self) -> bytes:
        return b'{"amplitude_id":%d,"merged_amplitude_id":%d,"merge_time":%d,"merge_server_time":%d,"scope":%d}' % (
            self.amplitude_id, self.merged_amplitude_id, self.merge_time, self.merge_server_time, self.project)


class Decisions(NamedTuple):
    merges: list[Merge]
    remaps: dict[int, list[Remap]]        # events.valid partition -> its remaps, in order
    writes: dict[bytes, bytes | None]
    skipped: bool                         # the message was applied before (a replay of the device side)


def _fold(u: User, link: Link) -> User:
    created, start = u.created, u.start_version
    if link.created is not None and (created is None or link.created < created):
        created, start = link.created, link.start_version or start
    elif start is None:
        start = link.start_version
    props = u.props
    if link.props != b"{}":
        merged = _json(u.props)
        merged.update(_json(link.props))
        props = _encode(merged)
    return User(u.aid, created, start, u.paying or link.paying, props)


def decide(msg: Links, get_many: GetMany, answer: bool = True) -> Decisions:
    """Adopt or merge each link of one identity.links message (see the module docstring). With ``answer``, a link
    adopted without a merge gets an answer too (a remap from its id to itself): the device side holds the pair's
    rows until it hears back."""
    st = BatchState(get_many)
    wk = watermark_key(msg.origin_partition)
    st.load({wk} | {user_key(x.project, x.user) for x in msg.links})
    if msg.origin_offset <= decode_int(st.get(wk), -1):
        return Decisions([], {}, {}, True)
    merges: list[Merge] = []
    remaps: dict[int, list[Remap]] = {}
    for link in msg.links:
        uk = user_key(link.project, link.user)
        v = st.current(uk)
        if v is None:
            u = new = User(link.aid, link.created, link.start_version, link.paying, link.props)
            st.put(uk, enc.encode(u))
        else:
            u = dec_user(v)
            new = _fold(u, link)
            if new != u:
                st.put(uk, enc.encode(new))
        if link.aid == u.aid:
            if answer:
                remaps.setdefault(link.partition, []).append(Remap(
                    link.project, link.device, link.user, link.aid, link.aid, None, None, False, b"{}"))
        else:
            merges.append(Merge(link.project, u.aid, link.aid, link.time_ms, link.server_ms))
            remaps.setdefault(link.partition, []).append(Remap(
                link.project, link.device, link.user, link.aid, u.aid, new.created, new.start_version, new.paying,
                new.props))
    st.put(wk, encode_int(msg.origin_offset))
    return Decisions(merges, remaps, dict(st.writes), False)


def group_merges(merges: Sequence[Merge]) -> dict[tuple[int, int], list[Merge]]:
    """Merges by (project, hour of merge_server_time): one identity.merges batch each."""
    out: dict[tuple[int, int], list[Merge]] = {}
    for m in merges:
        out.setdefault((m.project, m.merge_server_time - m.merge_server_time % 3_600_000), []).append(m)
    return out
