"""A content hash of a frame or universe: the key data is shared and checkpointed under.

The same data gives the same :func:`fingerprint` in any process (client, engine,
a later session), so a cluster shares a frame once per key and a checkpoint knows
the data it was made with. Needs only the standard library, numpy and pandas.
"""

from __future__ import annotations

import hashlib
import os
import struct
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from nbbacktest.parallel.segment_layout import Data, Layout, layout_of

__all__ = ["fingerprint"]

# fingerprint chunk: fixed, so the same data always gives the same digest
_HASH_CHUNK = 8 << 20
# below this many bytes a thread pool costs more than it saves
_PARALLEL_HASH_BYTES = 64 << 20


def _chunks(arrays: Sequence[np.ndarray]) -> list[memoryview]:
    out: list[memoryview] = []
    for array in arrays:
        raw = array.reshape(-1).view(np.uint8).data  # a memoryview of the bytes
        out.extend(raw[i : i + _HASH_CHUNK] for i in range(0, len(raw), _HASH_CHUNK))
    return out


def _checksum(chunk: memoryview) -> bytes:
    # crc32 is position sensitive; the wrapping sum of 64-bit words catches
    # every single-word change crc32 might miss. Both release the GIL.
    words = np.frombuffer(chunk, dtype=np.uint64, count=len(chunk) // 8)
    total = int(words.sum(dtype=np.uint64)) if len(words) else 0
    return struct.pack("<IQ", zlib.crc32(chunk), total)


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _metadata(layout: Layout) -> bytes:
    # repr of built-in values is stable across processes, unlike hash()
    frames = tuple(
        (
            f.symbol,
            f.nrows,
            f.unit,
            None if f.tz is None else str(f.tz),
            f.index_name,
            f.freq,
            f.columns_name,
            f.columns_dtype,
            tuple((c.name, c.dtype) for c in f.columns),
            hashlib.blake2b(f.pickled, digest_size=16).hexdigest(),
        )
        for f in layout.frames
    )
    block = layout.block
    zone = None if block is None or block.tz is None else str(block.tz)
    aligned = None if block is None else (block.nrows, block.unit, zone, block.freq, block.shape,
                                          block.symbols)
    return repr((layout.universe, frames, aligned) if aligned else (layout.universe, frames)).encode()


def fingerprint(data: Data) -> str:
    """A content hash of a frame or universe.

    Covers the index values, unit, time zone, name and frequency, the column
    names, order and dtypes, every column's bytes, and the symbols and their
    order. The same data gives the same fingerprint in any process; changing
    any of these gives a different one.

    Parameters
    ----------
    data : pandas.DataFrame or Mapping of str to pandas.DataFrame
        Frames with a DatetimeIndex.

    Returns
    -------
    str
        20 hexadecimal characters.

    Notes
    -----
    Each array is checksummed in fixed 8 MiB chunks (crc32 and a wrapping
    sum of 64-bit words, about 0.2 s per GiB on two cores, in parallel
    threads), and the checksums and metadata are digested with blake2b. It
    detects changes, not attacks: it is not a cryptographic hash of the data.

    Examples
    --------
    >>> import nbbacktest as nbb
    >>> data = nbb.load_sample("daily")
    >>> key = fingerprint(data)
    >>> len(key), key == fingerprint(data.copy())
    (20, True)
    >>> key == fingerprint(data.rename(columns={"Volume": "Vol"}))
    False
    """
    layout, arrays = layout_of(data)
    digest = hashlib.blake2b(_metadata(layout), digest_size=10)
    chunks = _chunks(arrays)
    total = sum(len(c) for c in chunks)
    workers = min(_cpu_count(), 8, len(chunks))
    if total >= _PARALLEL_HASH_BYTES and workers > 1:
        with ThreadPoolExecutor(workers, thread_name_prefix="nbb-fingerprint") as pool:
            sums = list(pool.map(_checksum, chunks))
    else:
        sums = [_checksum(c) for c in chunks]
    # chunk boundaries are fixed and array sizes are in the metadata, so the
    # concatenated checksums identify the bytes of every array
    digest.update(b"".join(sums))
    return digest.hexdigest()
