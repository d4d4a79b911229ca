"""One uncompressed copy of a dataset per host, memory-mapped by every Python worker there.

A Python worker that unpickles a broadcast, or converts an Arrow table to pandas, holds a private
copy of the data: at parallelism P a host holds P copies. Instead the data is written once per host
to a local file laid out as the objective reads it, and every worker maps that file: the pages are
shared, so the host holds one copy however many workers use it, and a new worker gets the data in
milliseconds (no read, no unpickling, no conversion).

- Parquet and CSV become an Arrow IPC file holding one record batch (one chunk per column), so
  ``pyarrow.Table.to_pandas(split_blocks=True)`` gives numeric columns without nulls as zero-copy,
  read-only views; only columns pandas must convert (nulls in integer or boolean columns, strings,
  dates, nested types) are copied, and only in the workers that read them.
- ``.npy`` is mapped copy-on-write: a trial may write into its array, only the pages it writes
  become private, and no other trial sees the change.
- ``.npz`` is rewritten uncompressed; each array is mapped copy-on-write from inside the archive.
"""

from __future__ import annotations

import os
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

COPY_SUFFIX = {"parquet": ".arrow", "csv": ".arrow", "npy": ".npy", "npz": ".npz"}
_OPEN_LIMIT = 4  # copies a worker keeps open: a reused worker does not keep every night's dataset
_opened: OrderedDict[tuple[str, str], HostCopy] = OrderedDict()
_opened_lock = threading.Lock()


class HostCopy:
    """A dataset as objectives see it, backed by a mapped local copy (or, failing that, by memory)."""

    def __init__(self, value: Any, arrow: Any = None) -> None:
        self.value = value  # pandas DataFrame (parquet, csv), ndarray (npy), dict of ndarrays (npz)
        self.arrow = arrow  # the pyarrow Table behind ``value`` (parquet, csv), else None

    @classmethod
    def in_memory(cls, raw: Any) -> HostCopy:
        """A copy that could not be written to local disk: this process's own, as before sharing."""
        to_pandas = getattr(raw, "to_pandas", None)
        return cls(to_pandas(split_blocks=True), raw) if callable(to_pandas) else cls(raw)


def release_memory() -> None:
    """Give the memory pyarrow's allocator keeps after a large read back to the system."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()


def copy_dataset(uri: str, data_format: str, storage_options: Mapping[str, Any] | None, path: str) -> int:
    """Read the dataset from storage and write its host copy to ``path``; returns the copy's size.

    The read is the only reference to the data, so each column is joined into one chunk in place of
    its parts: the peak is the dataset plus one column, and nothing is kept once the file is written.
    """
    from airflow_provider_sparktune.data.storage import read_raw

    raw = read_raw(uri, data_format, storage_options)
    if data_format in ("parquet", "csv"):
        for index in range(raw.num_columns):
            if raw.column(index).num_chunks != 1:
                raw = raw.set_column(index, raw.field(index), raw.column(index).combine_chunks())
    try:
        return write_host_copy(raw, path, data_format)
    finally:
        del raw
        release_memory()


def write_host_copy(raw: Any, path: str, data_format: str) -> int:
    """Write ``raw`` (as ``storage.read_raw`` returns it) to ``path`` atomically; returns its size.

    A table is written as one record batch: columns of several chunks are joined (a copy) first.
    """
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        if data_format in ("parquet", "csv"):
            import pyarrow as pa

            with pa.OSFile(tmp, "wb") as sink, pa.ipc.new_file(sink, raw.schema) as writer:
                writer.write_table(raw.combine_chunks(), max_chunksize=max(raw.num_rows, 1))
        else:
            import numpy as np

            with open(tmp, "wb") as out:
                if data_format == "npy":
                    np.save(out, raw, allow_pickle=False)
                else:
                    np.savez(out, **raw)  # stored, not deflated: every array can be mapped in place
        os.replace(tmp, path)
    finally:
        remove_copy(tmp)
    return os.path.getsize(path)


def open_host_copy(path: str, data_format: str) -> HostCopy:
    """The mapped copy at ``path``; a worker opens each copy once and keeps the latest few open."""
    key = (path, data_format)
    with _opened_lock:
        found = _opened.get(key)
        if found is not None:
            _opened.move_to_end(key)
            return found
        copy = _map(path, data_format)
        _opened[key] = copy
        while len(_opened) > _OPEN_LIMIT:
            _opened.popitem(last=False)
        return copy


def forget_opened() -> None:
    """Close this process's view of every copy (the files stay): what a new Python worker starts with."""
    with _opened_lock:
        _opened.clear()


def _map(path: str, data_format: str) -> HostCopy:
    if data_format in ("parquet", "csv"):
        import pyarrow as pa

        with pa.memory_map(path, "r") as source:
            table = pa.ipc.open_file(source).read_all()  # buffers point into the mapping
        return HostCopy(table.to_pandas(split_blocks=True), table)
    import numpy as np

    if data_format == "npy":
        return HostCopy(np.load(path, mmap_mode="c", allow_pickle=False))
    return HostCopy(_map_npz(path))


def _map_npz(path: str) -> dict[str, Any]:
    """Each array of an uncompressed ``.npz`` mapped copy-on-write where it lies inside the archive."""
    import numpy as np

    arrays: dict[str, Any] = {}
    with open(path, "rb") as handle, zipfile.ZipFile(handle) as archive:
        for info in archive.infolist():
            name = info.filename[: -len(".npy")] if info.filename.endswith(".npy") else info.filename
            if info.compress_type != zipfile.ZIP_STORED:  # a deflated archive cannot be mapped
                arrays[name] = np.load(archive.open(info), allow_pickle=False)
                continue
            handle.seek(info.header_offset)
            local_header = handle.read(30)
            name_length = int.from_bytes(local_header[26:28], "little")
            extra_length = int.from_bytes(local_header[28:30], "little")
            handle.seek(info.header_offset + 30 + name_length + extra_length)
            version = np.lib.format.read_magic(handle)
            shape, fortran, dtype = (
                np.lib.format.read_array_header_1_0(handle)
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0(handle)
            )
            if dtype.hasobject or not shape or 0 in shape:
                arrays[name] = np.load(archive.open(info), allow_pickle=False)
                continue
            arrays[name] = np.memmap(
                path, dtype=dtype, mode="c", offset=handle.tell(), shape=shape, order="F" if fortran else "C"
            )
    return arrays


def remove_copy(path: str) -> None:
    """Remove a copy (workers that mapped it keep their mapping until they let go of it)."""
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
