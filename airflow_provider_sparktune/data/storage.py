"""Dataset files behind a URI, through fsspec: what exists, how big it is, its format, and reading it.

Every protocol fsspec has a filesystem for works the same way (local paths, ``file://``, ``s3://``,
``gs://``, ``abfs://``, ``hdfs://``, ...). A directory (partitioned Parquet, Spark output) is a
dataset of its data files; names starting with ``_`` or ``.`` (``_SUCCESS``, ``.crc``,
``_temporary/``) are not data, as pyarrow and Spark agree. Reading goes through pyarrow and numpy,
never through hand-written parsers.

A URI may carry credentials (``ftp://user:pw@host/x``): each function here holds it as a
``SafeUri``, whose text is redacted, so every message names the URI without them and only ``.raw``
reaches fsspec. A library's error text is cleaned of the URI's secrets before it is quoted.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from airflow_provider_sparktune.exceptions import StagingError
from airflow_provider_sparktune.redaction import SafeUri

FORMATS = ("parquet", "csv", "npy", "npz")
_SUFFIX_FORMATS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".parq": "parquet",
    ".csv": "csv",
    ".npy": "npy",
    ".npz": "npz",
}
_COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".zstd", ".lz4")
# Keys filesystems use for a file's version, most specific first (etag changes with the content).
_VERSION_KEYS = (
    "ETag",
    "etag",
    "md5Hash",
    "mtime",
    "LastModified",
    "last_modified",
    "updated",
    "modificationTime",
)


@dataclass(frozen=True)
class Listing:
    """One look at a dataset's data files: enough to size it, detect its format and tell if it changed."""

    uri: SafeUri
    path: str
    is_dir: bool
    files: tuple[str, ...]
    size_bytes: int
    fingerprint: str


@dataclass(frozen=True)
class DatasetInfo:
    """What a cheap look inside says: column (or array) names and, when known without a scan, rows."""

    columns: tuple[str, ...] | None
    rows: int | None


def _first_line(err: BaseException, uri: SafeUri, limit: int = 300) -> str:
    """The first line of a library's error, without ``uri``'s secrets (cleaned before it is cut)."""
    text = uri.hide_in(str(err)).strip().splitlines()
    line = text[0] if text else type(err).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


def normalize_uri(uri: str | SafeUri) -> str:
    """Relative local paths become absolute: executors and later tasks may run in another directory."""
    text = (uri.raw if isinstance(uri, SafeUri) else os.fspath(uri)).strip()
    if "://" not in text and "::" not in text and not os.path.isabs(text):
        return os.path.abspath(text)
    return text


def open_fs(uri: str | SafeUri, storage_options: Mapping[str, Any] | None = None) -> tuple[Any, str]:
    """The fsspec filesystem and the path inside it; unknown protocols fail with the fix."""
    import fsspec
    from fsspec.core import split_protocol

    uri = SafeUri(uri)
    try:
        return fsspec.core.url_to_fs(uri.raw, **dict(storage_options or {}))
    except ValueError as err:
        protocol = split_protocol(uri.raw)[0] or "file"
        if "Protocol not known" in str(err):
            raise StagingError(
                f"data {uri!r}: unknown protocol {protocol!r}; use a URI that fsspec can open: a local path, "
                "file://, s3://, gs://, abfs://, hdfs://, ... (fsspec.available_protocols() lists them all)"
            ) from None
        raise StagingError(f"data {uri!r}: cannot open its filesystem ({_first_line(err, uri)})") from None
    except ImportError as err:
        protocol = split_protocol(uri.raw)[0]
        raise StagingError(
            f"data {uri!r}: the fsspec filesystem for {protocol!r} is not installed ({_first_line(err, uri)}); "
            "install it on the Airflow worker and the Spark executors"
        ) from None
    except Exception as err:  # e.g. hdfs without libhdfs/JVM, bad storage options
        raise StagingError(
            f"data {uri!r}: cannot open its filesystem ({type(err).__name__}: {_first_line(err, uri)}); check "
            "the URI and the credentials of the data connection"
        ) from None


def is_data_file(relative_path: str) -> bool:
    """Data, not bookkeeping: no path part starts with ``_`` or ``.`` (as pyarrow and Spark skip them)."""
    return not any(part.startswith(("_", ".")) for part in relative_path.split("/") if part)


def _version(info: Mapping[str, Any]) -> str:
    for key in _VERSION_KEYS:
        if info.get(key) is not None:
            return f"{key}={info[key]}"
    return ""


def list_dataset(uri: str | SafeUri, storage_options: Mapping[str, Any] | None = None) -> Listing | None:
    """The dataset's data files and total size; ``None`` when nothing exists at the URI yet."""
    uri = SafeUri(uri)
    fs, path = open_fs(uri, storage_options)
    try:
        info = fs.info(path)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise StagingError(
            f"data {uri!r}: cannot read its metadata ({_first_line(err, uri)}); check the path and the "
            "permissions or credentials of the data connection"
        ) from None
    if info.get("type") != "directory":
        entries = {path: info}
        is_dir = False
    else:
        root = path.rstrip("/")
        found = fs.find(root, detail=True)
        entries = {
            name: meta
            for name, meta in found.items()
            if meta.get("type", "file") != "directory" and is_data_file(name[len(root) :].lstrip("/"))
        }
        is_dir = True
    files = tuple(sorted(entries))
    size = sum(int(entries[name].get("size") or 0) for name in files)
    digest = hashlib.sha256()
    for name in files:
        digest.update(f"{name}\0{entries[name].get('size')}\0{_version(entries[name])}\n".encode())
    return Listing(uri, path, is_dir, files, size, digest.hexdigest()[:16])


def marker_exists(uri: str | SafeUri, marker: str, storage_options: Mapping[str, Any] | None = None) -> bool:
    """A success marker such as ``_SUCCESS``: relative to the dataset directory (a file's folder), or a URI."""
    if "://" in marker or marker.startswith("/"):
        fs, path = open_fs(marker, storage_options)
    else:
        fs, base = open_fs(uri, storage_options)
        try:
            folder = base if fs.isdir(base) else posixpath.dirname(base.rstrip("/"))
        except OSError:
            folder = posixpath.dirname(base.rstrip("/"))
        path = posixpath.join(folder.rstrip("/"), marker)
    try:
        return bool(fs.exists(path))
    except OSError:
        return False


def _format_of_name(name: str) -> str | None:
    lowered = name.lower()
    for compression in _COMPRESSION_SUFFIXES:
        if lowered.endswith(compression):
            lowered = lowered[: -len(compression)]
            break
    return _SUFFIX_FORMATS.get(posixpath.splitext(lowered)[1])


def detect_format(uri: str | SafeUri, listing: Listing | None = None, given: str | None = None) -> str:
    """The format given, else the URI's suffix, else (a directory) the suffix all its data files share."""
    uri = SafeUri(uri)
    hint = "pass data_format (parquet, csv, npy or npz)"
    if given:
        fmt = str(given).strip().lower()
        if fmt not in FORMATS:
            raise StagingError(
                f"data_format: {given!r} is not supported for {uri!r}; use one of {', '.join(FORMATS)}"
            )
    else:
        fmt = _format_of_name(uri.raw.rstrip("/")) or ""
        if not fmt and listing is not None and listing.is_dir:
            found = {_format_of_name(name) for name in listing.files}
            if len(found) == 1 and None not in found:
                fmt = found.pop() or ""
            elif len(found) > 1:
                names = sorted(str(f) for f in found)
                raise StagingError(f"data {uri!r}: its data files mix formats ({names}); {hint}")
        if not fmt:
            raise StagingError(
                f"data {uri!r}: unknown format, the name does not end in .parquet, .csv, .npy or .npz; {hint}"
            )
    if listing is not None and listing.is_dir and fmt in ("npy", "npz"):
        raise StagingError(f"data {uri!r}: {fmt} data must be a single file, not a directory")
    return fmt


def _without_content(line: str) -> str:
    """A parser's message without the row it quotes (``Expected 1 columns, got 3: a,b,c``): a URI from
    run conf can name any file the worker reads, and the message reaches the task log."""
    return re.sub(r"(got \d+)\s*:.*$", r"\1", line)


def read_error(uri: str | SafeUri, fmt: str, err: BaseException) -> StagingError:
    uri = SafeUri(uri)
    return StagingError(
        f"data {uri!r}: cannot read it as {fmt} ({type(err).__name__}: {_without_content(_first_line(err, uri))}); "
        "check that the "
        f"upstream job finished writing it (StagedDataSensor with success_marker waits for that), that it "
        f"is not corrupt, and that data_format is right"
    )


def _empty_error(uri: SafeUri, what: str) -> StagingError:
    return StagingError(
        f"data {uri!r}: the dataset is empty ({what}); check that the upstream job wrote rows, or wait for "
        "them with StagedDataSensor(min_size_bytes=...)"
    )


def inspect_dataset(
    uri: str | SafeUri, fmt: str, storage_options: Mapping[str, Any] | None = None
) -> DatasetInfo:
    """Check on the driver that the data can be read, without reading it: schema, footers, headers."""
    uri = SafeUri(uri)
    fs, path = open_fs(uri, storage_options)
    try:
        if fmt == "parquet":
            import pyarrow.dataset as ds

            dataset = ds.dataset(path, filesystem=fs, format="parquet", partitioning="hive")
            rows = dataset.count_rows()  # footers only
            info = DatasetInfo(tuple(dataset.schema.names), rows)
        elif fmt == "csv":
            info = _inspect_csv(fs, path)
        elif fmt == "npy":
            import numpy as np

            with fs.open(path, "rb") as f:
                version = np.lib.format.read_magic(f)
                reader = (
                    np.lib.format.read_array_header_1_0
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0
                )
                shape, _, _ = reader(f)
            info = DatasetInfo(None, 0 if 0 in shape else (shape[0] if shape else 1))
        else:
            import zipfile

            with fs.open(path, "rb") as f, zipfile.ZipFile(f) as archive:
                names = tuple(n[: -len(".npy")] if n.endswith(".npy") else n for n in archive.namelist())
            info = DatasetInfo(names, None if names else 0)
    except StagingError:
        raise
    except FileNotFoundError:
        raise StagingError(f"data {uri!r}: no such file or directory; check the path") from None
    except Exception as err:
        raise read_error(uri, fmt, err) from None
    if info.rows == 0:
        raise _empty_error(uri, "0 rows" if fmt != "npz" else "no arrays")
    return info


def _inspect_csv(fs: Any, path: str) -> DatasetInfo:
    import pyarrow.csv as pacsv

    if fs.isdir(path):
        import pyarrow.dataset as ds

        dataset = ds.dataset(path, filesystem=fs, format="csv", partitioning="hive")
        return DatasetInfo(tuple(dataset.schema.names), None if dataset.head(1).num_rows else 0)
    with fs.open(path, "rb", compression="infer") as f:
        reader = pacsv.open_csv(f)
        try:
            first = reader.read_next_batch()
        except StopIteration:
            return DatasetInfo(tuple(reader.schema.names), 0)
        return DatasetInfo(tuple(reader.schema.names), None if first.num_rows else 0)


def read_dataset(uri: str | SafeUri, fmt: str, storage_options: Mapping[str, Any] | None = None) -> Any:
    """The whole dataset: a pandas DataFrame (parquet, csv), an array (npy) or a dict of arrays (npz)."""
    return to_value(read_raw(uri, fmt, storage_options))


def read_raw(uri: str | SafeUri, fmt: str, storage_options: Mapping[str, Any] | None = None) -> Any:
    """The dataset as read: a pyarrow Table (parquet, csv), an array (npy) or a dict of arrays (npz)."""
    uri = SafeUri(uri)
    fs, path = open_fs(uri, storage_options)
    try:
        if fmt == "parquet":
            value: Any = _read_parquet(fs, path)
        elif fmt == "csv":
            value = _read_csv(fs, path)
        elif fmt == "npy":
            import numpy as np

            with fs.open(path, "rb") as f:
                value = np.load(f, allow_pickle=False)
        else:
            import numpy as np

            with fs.open(path, "rb") as f, np.load(f, allow_pickle=False) as archive:
                value = {name: archive[name] for name in archive.files}
    except FileNotFoundError:
        raise StagingError(f"data {uri!r}: no such file or directory; check the path") from None
    except Exception as err:
        raise read_error(uri, fmt, err) from None
    rows = getattr(value, "num_rows", None)  # Table: rows; ndarray: cells; dict of arrays: len()
    if rows is None:
        rows = value.size if hasattr(value, "size") else len(value)
    if rows == 0:
        raise _empty_error(uri, "0 rows" if fmt != "npz" else "no arrays")
    return value


def to_value(raw: Any) -> Any:
    """What objectives see: a pyarrow Table becomes a pandas DataFrame; arrays stay arrays."""
    to_pandas = getattr(raw, "to_pandas", None)
    return to_pandas() if callable(to_pandas) else raw


def _read_parquet(fs: Any, path: str) -> Any:
    """What ``pyarrow.parquet.read_table`` gives, read a row group at a time without pre-buffering:
    the read holds the data and a few row groups, where ``read_table`` holds 2-2.5x the data."""
    import pyarrow as pa

    dataset = _parquet_dataset(fs, path)
    batches = dataset.to_batches(batch_readahead=1, fragment_readahead=1)
    return pa.Table.from_batches(batches, schema=dataset.schema)


def parquet_column_chunks(
    uri: str | SafeUri, storage_options: Mapping[str, Any] | None = None
) -> tuple[Any, int, Iterator[tuple[int, int, Any]]]:
    """(schema, rows, chunks) of a Parquet dataset, its columns as ``pyarrow.parquet.read_table`` gives
    them (hive partitions as dictionary columns). Each chunk is (column index, first row, array): one
    column of one row group at a time, so a reader holds one column chunk, not the dataset. Errors
    while iterating are the caller's to wrap (``read_error``)."""
    uri = SafeUri(uri)
    fs, path = open_fs(uri, storage_options)
    try:
        dataset = _parquet_dataset(fs, path)
        rows = dataset.count_rows()
    except FileNotFoundError:
        raise StagingError(f"data {uri!r}: no such file or directory; check the path") from None
    except Exception as err:
        raise read_error(uri, "parquet", err) from None
    schema = dataset.schema

    def chunks() -> Iterator[tuple[int, int, Any]]:
        first = 0
        for fragment in dataset.get_fragments():
            for row_group in fragment.split_by_row_group():
                length = 0
                for index, name in enumerate(schema.names):
                    column = row_group.to_table(columns=[name], schema=schema, use_threads=False).column(0)
                    offset = first
                    for array in column.chunks:
                        yield index, offset, array
                        offset += len(array)
                    length = len(column)
                first += length

    return schema, rows, chunks()


def _parquet_dataset(fs: Any, path: str) -> Any:
    import pyarrow.dataset as ds

    file_format = ds.ParquetFileFormat(
        default_fragment_scan_options=ds.ParquetFragmentScanOptions(pre_buffer=False)
    )
    partitioning = ds.HivePartitioning.discover(infer_dictionary=True)
    return ds.dataset(path, filesystem=fs, format=file_format, partitioning=partitioning)


def _read_csv(fs: Any, path: str) -> Any:
    if fs.isdir(path):
        import pyarrow.dataset as ds

        return ds.dataset(path, filesystem=fs, format="csv", partitioning="hive").to_table()
    import pyarrow.csv as pacsv

    with fs.open(path, "rb", compression="infer") as f:
        return pacsv.read_csv(f)
