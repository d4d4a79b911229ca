"""Datasets behind URIs through fsspec: listing, size, format, cheap inspection and reading (no Spark)."""

from __future__ import annotations

import gzip
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from airflow_provider_sparktune.data.storage import (
    detect_format,
    inspect_dataset,
    is_data_file,
    list_dataset,
    marker_exists,
    normalize_uri,
    open_fs,
    read_dataset,
)
from airflow_provider_sparktune.exceptions import SparktuneError, StagingError

pytestmark = pytest.mark.unit


def frame(rows: int = 50, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"x": rng.normal(size=rows), "label": rng.integers(0, 2, size=rows)})


def spark_style_dir(root: Path, parts: int = 2, rows: int = 40) -> Path:
    """A directory as Spark writes it: part files, a _SUCCESS marker, .crc files, a _temporary folder."""
    root.mkdir(parents=True)
    for i in range(parts):
        frame(rows, seed=i).to_parquet(root / f"part-{i:05d}-abc.snappy.parquet", index=False)
        (root / f".part-{i:05d}-abc.snappy.parquet.crc").write_bytes(b"crc" * 10)
    (root / "_SUCCESS").touch()
    (root / "_temporary" / "0").mkdir(parents=True)
    (root / "_temporary" / "0" / "part-99.parquet").write_bytes(b"x" * 1000)
    return root


# --------------------------------------------------------------------------------------------------
# listing and size
# --------------------------------------------------------------------------------------------------


def test_a_file_counts_its_own_size(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    frame().to_parquet(path)
    listing = list_dataset(str(path))
    assert listing is not None
    assert listing.size_bytes == path.stat().st_size
    assert listing.files == (str(path),) and not listing.is_dir


def test_a_directory_counts_only_its_data_files(tmp_path: Path) -> None:
    root = spark_style_dir(tmp_path / "out")
    listing = list_dataset(f"file://{root}")
    assert listing is not None and listing.is_dir
    parts = sorted(root.glob("part-*.parquet"))
    assert [Path(f).name for f in listing.files] == [p.name for p in parts]
    assert listing.size_bytes == sum(p.stat().st_size for p in parts)


@pytest.mark.parametrize(
    ("relative", "is_data"),
    [
        ("part-0.parquet", True),
        ("year=2026/part-0.parquet", True),
        ("_SUCCESS", False),
        (".part-0.parquet.crc", False),
        ("_temporary/0/part-0.parquet", False),
        ("year=2026/_committed_123", False),
    ],
)
def test_bookkeeping_files_are_not_data(relative: str, is_data: bool) -> None:
    assert is_data_file(relative) is is_data


def test_missing_path_lists_as_none(tmp_path: Path) -> None:
    assert list_dataset(str(tmp_path / "nope.parquet")) is None


def test_fingerprint_changes_when_a_file_is_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    frame(seed=1).to_parquet(path)
    first = list_dataset(str(path))
    assert first is not None and first == list_dataset(str(path))
    frame(seed=1).to_parquet(path)
    os.utime(path, (time.time() + 5, time.time() + 5))
    second = list_dataset(str(path))
    assert second is not None and second.fingerprint != first.fingerprint


def test_memory_protocol_works_like_any_fsspec_filesystem() -> None:
    fs, path = open_fs("memory://sparktune-tests/d.csv")
    with fs.open(path, "wb") as f:
        f.write(b"x,label\n1.0,0\n2.0,1\n")
    listing = list_dataset("memory://sparktune-tests/d.csv")
    assert listing is not None and listing.size_bytes == len(b"x,label\n1.0,0\n2.0,1\n")
    assert read_dataset("memory://sparktune-tests/d.csv", "csv")["label"].tolist() == [0, 1]


def test_relative_local_paths_become_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert normalize_uri("data/d.parquet") == str(tmp_path / "data" / "d.parquet")
    assert normalize_uri("s3://bucket/key.parquet") == "s3://bucket/key.parquet"
    assert normalize_uri("/abs/d.parquet") == "/abs/d.parquet"


# --------------------------------------------------------------------------------------------------
# protocols that cannot be opened
# --------------------------------------------------------------------------------------------------


def test_unknown_protocol_names_the_uri_and_the_fix() -> None:
    with pytest.raises(StagingError) as exc:
        list_dataset("nosuchfs://bucket/features.parquet")
    message = str(exc.value)
    assert "data 'nosuchfs://bucket/features.parquet': unknown protocol 'nosuchfs'" in message
    assert "fsspec.available_protocols()" in message
    assert isinstance(exc.value, SparktuneError)


def test_protocol_whose_filesystem_is_not_installed_says_what_to_install() -> None:
    try:
        import s3fs  # noqa: F401

        pytest.skip("s3fs is installed here")
    except ImportError:
        pass
    with pytest.raises(
        StagingError, match=r"data 's3://bucket/f.parquet': the fsspec filesystem for 's3'.*install"
    ):
        list_dataset("s3://bucket/f.parquet")


# --------------------------------------------------------------------------------------------------
# success marker
# --------------------------------------------------------------------------------------------------


def test_marker_is_relative_to_the_dataset_directory_or_a_files_folder(tmp_path: Path) -> None:
    root = spark_style_dir(tmp_path / "out")
    assert marker_exists(str(root), "_SUCCESS")
    assert not marker_exists(str(root), "_DONE")
    single = tmp_path / "single.parquet"
    frame().to_parquet(single)
    assert not marker_exists(str(single), "single.done")
    (tmp_path / "single.done").touch()
    assert marker_exists(str(single), "single.done")
    assert marker_exists(str(single), str(tmp_path / "single.done"))


# --------------------------------------------------------------------------------------------------
# format
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "fmt"),
    [
        ("s3://b/features.parquet", "parquet"),
        ("/data/f.PQ", "parquet"),
        ("gs://b/f.csv", "csv"),
        ("/data/f.csv.gz", "csv"),
        ("/data/x.npy", "npy"),
        ("/data/xy.npz", "npz"),
    ],
)
def test_format_from_the_uri(uri: str, fmt: str) -> None:
    assert detect_format(uri) == fmt


def test_format_of_a_directory_from_its_data_files(tmp_path: Path) -> None:
    root = spark_style_dir(tmp_path / "out")
    listing = list_dataset(str(root))
    assert detect_format(str(root), listing) == "parquet"


def test_given_format_wins_and_is_checked() -> None:
    assert detect_format("/data/features.bin", given="Parquet") == "parquet"
    with pytest.raises(
        StagingError, match=r"data_format: 'json' is not supported for '/data/f.json'; use one of"
    ):
        detect_format("/data/f.json", given="json")


def test_unknown_format_names_the_uri_and_the_fix() -> None:
    with pytest.raises(StagingError) as exc:
        detect_format("/data/features.json")
    assert "data '/data/features.json': unknown format" in str(exc.value)
    assert "pass data_format (parquet, csv, npy or npz)" in str(exc.value)


def test_directory_with_mixed_formats_asks_for_the_format(tmp_path: Path) -> None:
    (tmp_path / "mixed").mkdir()
    frame().to_parquet(tmp_path / "mixed" / "a.parquet")
    frame().to_csv(tmp_path / "mixed" / "b.csv")
    with pytest.raises(StagingError, match="mix formats"):
        detect_format(str(tmp_path / "mixed"), list_dataset(str(tmp_path / "mixed")))


# --------------------------------------------------------------------------------------------------
# inspect (cheap) and read
# --------------------------------------------------------------------------------------------------


def test_parquet_directory_with_hive_partitions(tmp_path: Path) -> None:
    for day in ("2026-01-01", "2026-01-02"):
        (tmp_path / "ds" / f"day={day}").mkdir(parents=True)
        frame(30).to_parquet(tmp_path / "ds" / f"day={day}" / "part-0.parquet", index=False)
    info = inspect_dataset(str(tmp_path / "ds"), "parquet")
    assert info.rows == 60 and set(info.columns or ()) == {"x", "label", "day"}
    value = read_dataset(str(tmp_path / "ds"), "parquet")
    assert isinstance(value, pd.DataFrame) and len(value) == 60


def test_csv_numpy_and_npz(tmp_path: Path) -> None:
    frame(20).to_csv(tmp_path / "d.csv", index=False)
    with gzip.open(tmp_path / "d.csv.gz", "wt") as f:
        frame(20).to_csv(f, index=False)
    np.save(tmp_path / "x.npy", np.arange(12.0).reshape(4, 3))
    np.savez(tmp_path / "xy.npz", X=np.ones((5, 2)), y=np.zeros(5))
    assert inspect_dataset(str(tmp_path / "d.csv"), "csv").columns == ("x", "label")
    assert read_dataset(str(tmp_path / "d.csv.gz"), "csv").shape == (20, 2)
    assert inspect_dataset(str(tmp_path / "x.npy"), "npy").rows == 4
    assert read_dataset(str(tmp_path / "x.npy"), "npy").shape == (4, 3)
    assert inspect_dataset(str(tmp_path / "xy.npz"), "npz").columns == ("X", "y")
    assert set(read_dataset(str(tmp_path / "xy.npz"), "npz")) == {"X", "y"}


def test_corrupt_parquet_fails_on_inspection_naming_the_uri_and_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "broken.parquet"
    frame().to_parquet(path)
    path.write_bytes(path.read_bytes()[:-40])  # truncated: the footer is gone, as a killed writer leaves it
    for check in (inspect_dataset, read_dataset):
        with pytest.raises(StagingError) as exc:
            check(str(path), "parquet")
        message = str(exc.value)
        assert f"data '{path}': cannot read it as parquet" in message
        assert "success_marker" in message and "not corrupt" in message


def test_parquet_with_no_rows_is_an_empty_dataset(tmp_path: Path) -> None:
    path = tmp_path / "empty.parquet"
    frame().iloc[:0].to_parquet(path)
    with pytest.raises(
        StagingError, match=rf"data '{path}': the dataset is empty \(0 rows\).*min_size_bytes"
    ):
        inspect_dataset(str(path), "parquet")


def test_csv_with_a_header_only_is_an_empty_dataset(tmp_path: Path) -> None:
    (tmp_path / "h.csv").write_text("x,label\n")
    with pytest.raises(StagingError, match="the dataset is empty"):
        inspect_dataset(str(tmp_path / "h.csv"), "csv")
    with pytest.raises(StagingError, match="the dataset is empty"):
        read_dataset(str(tmp_path / "h.csv"), "csv")


@pytest.mark.unit
def test_a_parse_error_does_not_quote_the_files_contents(tmp_path: Path) -> None:
    """A URI from run conf may name any file the worker reads: its rows stay out of the task log."""
    from airflow_provider_sparktune.data.storage import read_raw

    path = tmp_path / "secrets.csv"
    path.write_text("name\nuser,hunter2,extra\n")
    with pytest.raises(StagingError) as exc:
        read_raw(str(path), "csv")
    assert "cannot read it as csv" in str(exc.value) and "got 3" in str(exc.value)
    assert "hunter2" not in str(exc.value)


# --------------------------------------------------------------------------------------------------
# a URI's own credentials never reach a message (a real FTP server that needs them)
# --------------------------------------------------------------------------------------------------

FTP_USER, FTP_PASSWORD = "ann", "p@ss'w0rd:7c1e"  # an @, a quote and a colon in the password


@pytest.fixture
def ftp(tmp_path: Path) -> Iterator[Any]:
    from tests.servers import ftp_server

    root = tmp_path / "ftp"
    root.mkdir()
    frame().to_parquet(root / "features.parquet")
    (root / "corrupt.parquet").write_bytes(b"PAR1 this is not parquet PAR1")
    (root / "notes.txt").write_text("x")
    with ftp_server(root, FTP_USER, FTP_PASSWORD) as server:
        yield server


def with_login(uri: str, password: str = FTP_PASSWORD) -> str:
    return uri.replace("ftp://", f"ftp://{FTP_USER}:{password}@", 1)


def assert_no_secret(text: str, *secrets: str) -> None:
    from urllib.parse import quote

    for secret in secrets:
        for form in (secret, quote(secret, safe=""), quote(secret)):
            assert form not in text, text


def test_the_uri_s_login_reads_the_server_and_its_messages_hide_it(ftp: Any) -> None:
    """The credentials in the URI are used for I/O (the read works) and appear in no message."""
    good = with_login(ftp.uri("features.parquet"))
    listing = list_dataset(good)
    assert listing is not None and listing.size_bytes > 0
    assert str(listing.uri) == ftp.uri("features.parquet") and listing.uri.raw == good
    assert inspect_dataset(good, "parquet").rows == 50
    cases = [
        (
            lambda: inspect_dataset(with_login(ftp.uri("missing.parquet")), "parquet"),
            "no such file or directory",
        ),
        (
            lambda: inspect_dataset(with_login(ftp.uri("corrupt.parquet")), "parquet"),
            "cannot read it as parquet",
        ),
        (
            lambda: read_dataset(with_login(ftp.uri("corrupt.parquet")), "parquet"),
            "cannot read it as parquet",
        ),
        (lambda: detect_format(with_login(ftp.uri("notes.txt"))), "unknown format"),
        (
            lambda: list_dataset(with_login(ftp.uri("features.parquet"), "wrong:pw@x")),
            "cannot open its filesystem",
        ),
    ]
    for call, what in cases:
        with pytest.raises(StagingError) as caught:
            call()
        message = str(caught.value)
        assert f"data '{ftp.uri('')}" in message and what in message, message
        assert_no_secret(message, FTP_PASSWORD, "wrong:pw@x", f"{FTP_USER}:")
    from tests.servers import wait_until

    wait_until(lambda: ftp.refused >= 1, 10, "the FTP server to count the refused login")
    assert ftp.logins >= 1  # a real login, and a real refusal


def test_a_protocol_error_names_the_uri_without_its_credentials() -> None:
    secret = "tok-3f9a'/@x"
    for uri in (f"nosuchfs://ann:{secret}@bucket/f.parquet", f"simplecache::nosuchfs://ann:{secret}@b/f"):
        with pytest.raises(StagingError) as caught:
            list_dataset(uri)
        assert str(caught.value).startswith("data '") and "unknown protocol" in str(caught.value)
        assert_no_secret(str(caught.value), secret, "ann:")


def test_the_executor_cache_logs_and_errors_name_the_uri_without_its_credentials(
    ftp: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A trial's read (data/cache.py) logs the URI on the executor and fails with it when the data
    went away: both redacted, as the driver's messages are."""
    import logging

    from airflow_provider_sparktune.data import cache

    monkeypatch.setenv(cache.CACHE_DIR_ENV, str(tmp_path / "executor-local"))
    cache.clear_memory()
    uri = with_login(ftp.uri("features.parquet"))
    with caplog.at_level(logging.INFO, logger=cache.__name__):
        assert cache.load(uri, "parquet").value is not None  # a real read with the URI's login
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert f"read {ftp.uri('features.parquet')} from storage" in logged
    cache.clear_memory()
    (tmp_path / "ftp" / "features.parquet").unlink()  # the ftp fixture serves tmp_path/ftp
    with pytest.raises(StagingError) as caught:
        cache.load(uri, "parquet")
    assert "no such file or directory (it existed when it was planned)" in str(caught.value)
    for text in (logged, str(caught.value)):
        assert_no_secret(text, FTP_PASSWORD, f"{FTP_USER}:")
    cache.clear_memory()
