"""A minimal, defensive flatbuffer table reader in pure Python (stdlib + numpy, no ``flatbuffers`` package).

Shared by :mod:`slidelite.model_file` (the TFLite structure check) and :mod:`._tflite_reader` (the numpy
backend's model reader). It reads any buffer (``bytes``, ``mmap``, ``memoryview``) without copying:
vectors of scalars come back as read-only numpy views into the buffer.

Every position is checked against the buffer before it is read, and every vector's declared length
against the bytes left after it, so a hostile file (offsets out of range, huge declared sizes) raises
:class:`FlatbufferError` (a ``ValueError``) instead of reading garbage or allocating. Child references are
unsigned forward offsets, so walking a schema cannot loop; the total number of vector elements decoded
is also budgeted (aliased vectors could otherwise make a small file expensive).
"""
from __future__ import annotations

import mmap
import struct
from typing import List, Optional, Tuple, Union

import numpy as np

Data = Union[bytes, bytearray, memoryview, mmap.mmap]


class FlatbufferError(ValueError):
    """The buffer is not a well-formed flatbuffer (a position or a length lies outside it)."""


class Buffer:
    """A flatbuffer in memory with bounds-checked primitive reads.

    Attributes:
        data: the bytes (not copied).
        size: their length.
        budget: vector elements that may still be decoded (a hostile file cannot make decoding slow).
    """

    def __init__(self, data: Data, budget_per_byte: int = 4) -> None:
        self.data = data
        self.size = len(data)
        self.budget = budget_per_byte * self.size + (1 << 16)

    def check(self, pos: int, length: int) -> None:
        """Raise :class:`FlatbufferError` unless ``[pos, pos + length)`` lies inside the buffer."""
        if pos < 0 or length < 0 or pos + length > self.size:
            raise FlatbufferError(f"offset {pos} (+{length} bytes) is outside the {self.size}-byte file")

    def unpack(self, fmt: str, pos: int) -> int:
        """One little-endian scalar of struct format ``fmt`` at ``pos``."""
        self.check(pos, struct.calcsize(fmt))
        return struct.unpack_from(fmt, self.data, pos)[0]

    def root(self) -> "Table":
        """The root table (its offset is the first 4 bytes)."""
        return Table(self, self.unpack("<I", 0))

    def charge(self, count: int) -> None:
        """Spend ``count`` elements of the decoding budget."""
        self.budget -= count
        if self.budget < 0:
            raise FlatbufferError("the file declares more data than it holds (aliased or oversized vectors)")


class Table:
    """One flatbuffer table: field ``i`` is the ``i``-th field of the schema (vtable slot ``4 + 2 * i``)."""

    __slots__ = ("buf", "pos", "_vtable", "_vtable_size")

    def __init__(self, buf: Buffer, pos: int) -> None:
        buf.check(pos, 4)
        vtable = pos - buf.unpack("<i", pos)
        size = buf.unpack("<H", vtable)
        buf.check(vtable, size)
        self.buf, self.pos, self._vtable, self._vtable_size = buf, pos, vtable, size

    def field(self, index: int) -> Optional[int]:
        """Absolute position of field ``index``, or None when the field is absent."""
        slot = 4 + 2 * index
        if slot + 2 > self._vtable_size:
            return None
        offset = self.buf.unpack("<H", self._vtable + slot)
        return self.pos + offset if offset else None

    def scalar(self, index: int, fmt: str, default: Union[int, float] = 0) -> Union[int, float]:
        """A scalar field (``'<i'``, ``'<B'``, ``'<f'``, ``'<Q'``...), ``default`` when absent."""
        pos = self.field(index)
        return default if pos is None else self.buf.unpack(fmt, pos)

    def _target(self, index: int) -> Optional[int]:
        pos = self.field(index)
        return None if pos is None else pos + self.buf.unpack("<I", pos)

    def table(self, index: int) -> Optional["Table"]:
        """A sub-table field, or None when absent."""
        target = self._target(index)
        return None if target is None else Table(self.buf, target)

    def vector(self, index: int, item_size: int) -> Optional[Tuple[int, int]]:
        """``(start, length)`` of a vector field whose items take ``item_size`` bytes, or None when absent."""
        target = self._target(index)
        if target is None:
            return None
        length = self.buf.unpack("<I", target)
        self.buf.check(target + 4, length * item_size)
        self.buf.charge(length)
        return target + 4, length

    def array(self, index: int, dtype: str) -> Optional[np.ndarray]:
        """A vector of scalars as a read-only numpy view (``dtype`` little-endian, e.g. ``'<i4'``)."""
        kind = np.dtype(dtype)
        found = self.vector(index, kind.itemsize)
        if found is None:
            return None
        start, length = found
        return np.frombuffer(self.buf.data, dtype=kind, count=length, offset=start)

    def ints(self, index: int, dtype: str = "<i4") -> Tuple[Union[int, float], ...]:
        """A vector of scalars (integers by default; ``'<f4'`` for floats) as a tuple (empty when absent)."""
        values = self.array(index, dtype)
        return () if values is None else tuple(values.tolist())

    def tables(self, index: int) -> List["Table"]:
        """A vector of tables (empty when absent)."""
        found = self.vector(index, 4)
        if found is None:
            return []
        start, length = found
        return [Table(self.buf, start + 4 * i + self.buf.unpack("<I", start + 4 * i)) for i in range(length)]

    def blob(self, index: int) -> bytes:
        """A ``[ubyte]`` (or string) field's bytes, copied (empty when absent)."""
        found = self.vector(index, 1)
        if found is None:
            return b""
        start, length = found
        return bytes(self.buf.data[start:start + length])

    def string(self, index: int) -> str:
        """A string field, decoded as UTF-8 (undecodable bytes replaced); ``''`` when absent."""
        return self.blob(index).decode("utf-8", "replace")
