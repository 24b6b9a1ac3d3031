"""Read py-spy's raw (collapsed) stacks: where the workers spent their samples."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

LINE_NUMBER = re.compile(r":\d+\)$")


def _frames(stack: str) -> list[str]:
    # "handle (gunicorn/workers/sync.py:135)" -> "handle (gunicorn/workers/sync.py)"
    return [LINE_NUMBER.sub(")", frame) for frame in stack.split(";")]


def summarise_raw(paths: Iterable[Path], top: int = 40) -> str:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for path in paths:
        for line in path.read_text().splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = _frames(stack)
            total += count
            for frame in set(frames):
                inclusive[frame] += count
            own[frames[-1]] += count
    if not total:
        return "no samples"
    lines = [f"{total} samples; inclusive share (top {top}):"]
    lines += [f"  {n / total:6.1%}  {frame}" for frame, n in inclusive.most_common(top)]
    lines += [f"own share (top {top // 2}):"]
    lines += [f"  {n / total:6.1%}  {frame}" for frame, n in own.most_common(top // 2)]
    return "\n".join(lines)
