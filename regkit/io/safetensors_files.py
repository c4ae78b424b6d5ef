"""safetensors files (regkit's transform files and cascade checkpoints): the one writer, and what
is wrong with a file that should be one.

Both formats are tensors plus string metadata (each format its own keys: ``format``/``version``
for transforms, ``format``/``format_version`` plus JSON values for checkpoints; files already
written keep them). :func:`write_safetensors` writes either, atomically.

A safetensors file is an 8-byte little-endian header length ``n``, a JSON header of ``n`` bytes
(each tensor's ``data_offsets`` into the data that follows) and the data. An interrupted copy or
download cuts that short, and the safetensors reader then says "header too large" or "incomplete
metadata" — which reads like a different format. :func:`truncation_problem` says it plainly.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Optional, Union

from regkit.io.atomic import atomic_path

if TYPE_CHECKING:
    import torch

MAX_HEADER_BYTES = 100 * 1024 * 1024  # the safetensors reader's own limit


def write_safetensors(path: Union[str, Path], tensors: Dict[str, "torch.Tensor"], metadata: Dict[str, str],
                      force: bool = False) -> Path:
    """Write ``tensors`` (each as a contiguous CPU copy; one that shares its storage with an earlier
    one is cloned, which safetensors requires) and ``metadata`` (strings) to ``path`` atomically
    (:func:`regkit.io.atomic.atomic_path`: a crash never leaves a half-written file)."""
    from safetensors.torch import save

    flat, storages = {}, set()
    for name, tensor in tensors.items():
        t = tensor.detach().cpu().contiguous()
        storage = t.untyped_storage().data_ptr()
        flat[name] = t.clone() if storage in storages else t
        storages.add(storage)
    p = Path(path)
    data = save(flat, metadata=metadata)
    n = int.from_bytes(data[:8], "little")
    with atomic_path(p, force) as tmp, open(tmp, "wb") as f:
        f.write(_canonical_header(data[8:8 + n]))
        f.write(memoryview(data)[8 + n:])  # the tensors, not copied again
    return p


def _canonical_header(header_json: bytes) -> bytes:
    """A safetensors file's length prefix and JSON header, the header's keys sorted.

    The safetensors writer keeps the metadata in a hash map, so its order — and the file's bytes —
    changed from one process to the next; ``--seed S --threads N`` promises the same bytes. The
    tensors' ``data_offsets`` count from the end of the header, so only the header is rewritten
    (padded with spaces to a multiple of 8 bytes, as the writer does)."""
    header = json.dumps(json.loads(header_json), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    return len(header).to_bytes(8, "little") + header


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
