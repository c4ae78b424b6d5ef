"""What is wrong with a file that should be safetensors (checkpoints, regkit transform files).

A safetensors file is an 8-byte little-endian header length ``n``, a JSON header of ``n`` bytes
(each tensor's ``data_offsets`` into the data that follows) and the data. An interrupted copy or
download cuts that short, and the safetensors reader then says "header too large" or "incomplete
metadata" — which reads like a different format. :func:`truncation_problem` says it plainly.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Union

MAX_HEADER_BYTES = 100 * 1024 * 1024  # the safetensors reader's own limit


def truncation_problem(path: Union[str, Path]) -> Optional[str]:
    """``"is truncated: ..."`` when ``path`` starts like a safetensors file but is shorter than
    its header says a complete one is; ``None`` otherwise (complete, or not safetensors at all)."""
    p = Path(path)
    size = p.stat().st_size
    with p.open("rb") as f:
        head = f.read(9)
        if len(head) < 9:
            return None
        n = int.from_bytes(head[:8], "little")
        if not 0 < n <= MAX_HEADER_BYTES or head[8:9] != b"{":
            return None  # not safetensors (e.g. a pickle or a zip)
        if size < 8 + n:
            return _message(size, None)
        text = head[8:] + f.read(n - 1)  # the header's first byte, "{", was read with the length
        try:
            header = json.loads(text.decode("utf-8", "replace"))
        except json.JSONDecodeError:
            return None
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict) and "data_offsets" in v]
    expected = 8 + n + max(ends, default=0)
    return _message(size, expected) if size < expected else None


def _message(size: int, expected: Optional[int]) -> str:
    whole = f" of the {expected:,} bytes a complete file has" if expected else ", shorter than its own header"
    return f"is truncated: {size:,} bytes{whole} (an interrupted copy or download?); copy it again"
