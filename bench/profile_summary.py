"""A short text summary of a py-spy ``--format raw`` profile (collapsed stacks, one ``stack count`` a line).

Samples are put in a stage by the stream code on their stack: ingest
(stream/agents/ingest.py run_ingest), dedupe (the faust agent in
stream/agents/dedupe.py), export (stream/agents/export.py run_export); the rest is
split into faust's consumer thread, and event-loop / faust / aiokafka work
outside those (fetching, stream machinery, producer, timers). Idle samples are
not recorded (py-spy's default), so the shares are shares of CPU samples.

usage: python bench/profile_summary.py PROFILE.raw [TITLE]
"""

from __future__ import annotations

import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")

STAGES = [  # (stage, predicate on a frame's (func, file)), first match from the outermost frame wins
    ("ingest", lambda f, p: p.endswith("stream/agents/ingest.py")),
    ("dedupe", lambda f, p: p.endswith("stream/agents/dedupe.py")),
    ("export", lambda f, p: p.endswith("stream/agents/export.py")),
    ("import", lambda f, p: p.endswith("stream/agents/imports.py")),
]


def _short(path: str) -> str:
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        i = path.find(marker)
        if i >= 0:
            return path[i + len(marker):]
    return path


def parse(path: Path):
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames, thread = [], "?"
        for fr in stack.split(";"):
            if fr.startswith("thread (") or fr.startswith("process "):
                thread = fr
                continue
            m = FRAME.match(fr)
            frames.append((m["func"], _short(m["file"])) if m else (fr, ""))
        yield thread, frames, int(count)


def stage_of(thread: str, main_thread: str, frames: list[tuple[str, str]]) -> str:
    for func, file in frames:
        for stage, pred in STAGES:
            if pred(func, file):
                return stage
    if thread != main_thread:
        return "faust consumer thread (aiokafka fetch/parse)"
    if any("_find_and_load" == f for f, _ in frames):
        return "imports (start-up)"
    return "event loop: faust/mode/aiokafka outside the stages"


def summarise(path: Path, title: str = "", top: int = 12) -> str:
    data = list(parse(Path(path)))
    total = sum(c for _, _, c in data) or 1
    by_thread = Counter()
    for t, _, c in data:
        by_thread[t] += c
    main_thread = by_thread.most_common(1)[0][0] if by_thread else "?"
    stages: Counter[str] = Counter()
    self_by_stage: dict[str, Counter] = defaultdict(Counter)
    incl: Counter = Counter()
    self_all: Counter = Counter()
    for thread, frames, c in data:
        s = stage_of(thread, main_thread, frames)
        stages[s] += c
        if frames:
            leaf = f"{frames[-1][0]} ({frames[-1][1]})"
            self_by_stage[s][leaf] += c
            self_all[leaf] += c
        for fr in {f"{f} ({p})" for f, p in frames}:
            incl[fr] += c
    out = [f"py-spy profile summary: {title}".rstrip(": "), f"{total:,} CPU samples at 100 Hz "
           f"(= {total / 100:.1f} CPU seconds), threads: " +
           ", ".join(f"{t}: {100 * c / total:.0f}%" for t, c in by_thread.most_common()), "",
           "share of samples by stage:"]
    out += [f"  {100 * c / total:5.1f}%  {s}" for s, c in stages.most_common()]
    out += ["", "top functions by self time (where the CPU is spent):"]
    out += [f"  {100 * c / total:5.1f}%  {f}" for f, c in self_all.most_common(top * 2)]
    for s, _ in stages.most_common():
        out += ["", f"[{s}] top self time:"]
        out += [f"  {100 * c / total:5.1f}%  {f}" for f, c in self_by_stage[s].most_common(top)]
    interesting = [(f, c) for f, c in incl.most_common() if "stream/" in f or "faust/" in f or "aiokafka/" in f
                   or "mode/" in f or "fastavro" in f or "rocksdict" in f or "aiobotocore" in f]
    out += ["", "inclusive time (function and everything it calls), project and library frames:"]
    out += [f"  {100 * c / total:5.1f}%  {f}" for f, c in interesting[:top * 3]]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(summarise(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else ""))
