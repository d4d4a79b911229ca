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

from airflow_provider_sparktune.exceptions import StagingError

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

    Parquet whose columns all have a fixed width (numbers, timestamps) streams into the copy one column
    of one row group at a time: the reader holds one column chunk. Anything else is read whole; the read is
    then the only reference to the data, so each column is joined into one chunk in place of its
    parts, and the peak is the dataset plus about one row group and one column.
    """
    from airflow_provider_sparktune.data.storage import read_raw

    if data_format == "parquet" and _stream_parquet(uri, storage_options, path):
        return os.path.getsize(path)
    raw = read_raw(uri, data_format, storage_options)
    if data_format in ("parquet", "csv"):
        release_memory()
        for index in range(raw.num_columns):
            if raw.column(index).num_chunks != 1:
                raw = raw.set_column(index, raw.field(index), raw.column(index).combine_chunks())
                release_memory()  # the parts' pages go back now, not after the last column
    try:
        return write_host_copy(raw, path, data_format)
    finally:
        del raw
        release_memory()


class _NotStreamable(Exception):
    """A column the streamed layout cannot hold as pandas would read it (nulls in a non-float column)."""


def _fixed_width(data_type: Any) -> bool:
    import pyarrow.types as pat

    return pat.is_primitive(data_type) and not pat.is_boolean(data_type)  # booleans are bit-packed


def _stream_parquet(uri: str, storage_options: Mapping[str, Any] | None, path: str) -> bool:
    """Write the copy of fixed-width Parquet a column chunk at a time: ``False`` when the data needs
    the whole-table path (a column of another type, or nulls outside a float column)."""
    import pyarrow.types as pat

    from airflow_provider_sparktune.data.storage import parquet_column_chunks, read_error

    schema, rows, chunks = parquet_column_chunks(uri, storage_options)
    if not schema or not all(_fixed_width(f.type) for f in schema):
        return False
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        offsets = _write_layout(schema, rows, tmp)
        written = [0] * len(schema)
        descriptor = os.open(tmp, os.O_WRONLY)
        try:
            for index, first, array in chunks:
                if array.null_count:
                    if not pat.is_floating(array.type):
                        raise _NotStreamable
                    array = array.fill_null(float("nan"))  # what to_pandas gives for a null float
                width = array.type.bit_width // 8
                values = memoryview(array.buffers()[1])[array.offset * width :]
                os.pwrite(descriptor, values[: len(array) * width], offsets[index] + first * width)
                written[index] += len(array)
        finally:
            os.close(descriptor)
        if written != [rows] * len(schema):
            raise _NotStreamable  # the files changed while they were read
        os.replace(tmp, path)
        return True
    except _NotStreamable:
        return False
    except StagingError:
        raise
    except Exception as err:
        raise read_error(uri, "parquet", err) from None
    finally:
        remove_copy(tmp)


def _write_layout(schema: Any, rows: int, path: str) -> list[int]:
    """An Arrow IPC file of ``rows`` rows in one record batch, its values not yet written; returns
    where each column's values start in the file. The placeholder buffers are never touched, so
    writing them costs no memory (the kernel reads untouched pages as its shared zero page)."""
    import pyarrow as pa

    arrays = [
        pa.Array.from_buffers(f.type, rows, [None, pa.allocate_buffer(f.type.bit_width // 8 * rows)])
        for f in schema
    ]
    with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        writer.write_batch(pa.record_batch(arrays, schema=schema))
    del arrays
    release_memory()
    with pa.memory_map(path) as source:
        start = source.read_buffer(8).address
        source.seek(0)
        batch = pa.ipc.open_file(source).get_batch(0)
        return [column.buffers()[1].address - start for column in batch.columns]


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
