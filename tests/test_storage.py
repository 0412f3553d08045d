"""selflengthen.storage: local files and a real S3 server (SeaweedFS), atomic writes, clear errors."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import urllib3
from minio.error import ServerError

from selflengthen import storage as storage_module
from selflengthen.config import StorageConfig
from selflengthen.errors import DataError, StorageError
from selflengthen.storage import BackgroundWriter, Storage, get_storage, join_uri
from tests.fixtures.s3 import S3Server, free_ports

MIB = 1024 * 1024


@pytest.fixture
def local() -> Storage:
    return get_storage(None)


@pytest.fixture
def s3(s3_storage_config: StorageConfig) -> Storage:
    return get_storage(s3_storage_config)


def _count_calls(monkeypatch: pytest.MonkeyPatch, target: object, name: str, fail_first: Exception | None = None) -> list[int]:
    """Wrap ``target.name`` to count its calls; optionally raise ``fail_first`` on the first one."""
    calls: list[int] = []
    original = getattr(target, name)

    def wrapper(*args, **kwargs):
        calls.append(1)
        if fail_first is not None and len(calls) == 1:
            raise fail_first
        return original(*args, **kwargs)

    monkeypatch.setattr(target, name, wrapper)
    return calls


# --------------------------------------------------------------------------- URIs


@pytest.mark.parametrize(
    ("base", "parts", "expected"),
    [
        ("s3://bucket/run", ("it1", "x.jsonl"), "s3://bucket/run/it1/x.jsonl"),
        ("s3://bucket/run/", ("/it1/", "x"), "s3://bucket/run/it1/x"),
        ("s3://bucket", ("a/b",), "s3://bucket/a/b"),
        ("runs/local", ("stage",), "runs/local/stage"),
        ("/abs", ("", "f"), "/abs/f"),
        ("file:///tmp/x", ("y",), "file:///tmp/x/y"),
        ("s3://bucket/run", (), "s3://bucket/run"),
    ],
)
def test_join_uri(base: str, parts: tuple[str, ...], expected: str) -> None:
    assert join_uri(base, *parts) == expected


# --------------------------------------------------------------------------- local


def test_local_round_trip_plain_path_and_file_uri(local: Storage, tmp_path: Path) -> None:
    plain = str(tmp_path / "a" / "b" / "data.bin")
    local.write_bytes(plain, b"\x00\x01payload")
    assert local.read_bytes(plain) == b"\x00\x01payload"
    assert local.exists(plain)

    uri = f"file://{tmp_path}/text/hello.txt"
    local.write_text(uri, "héllo 中文\n")
    assert local.read_text(uri) == "héllo 中文\n"
    assert (tmp_path / "text" / "hello.txt").read_text(encoding="utf-8") == "héllo 中文\n"

    local.write_text(uri, "replaced")
    assert local.read_text(uri) == "replaced"


def test_local_missing_file_names_the_uri(local: Storage, tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.txt")
    with pytest.raises(StorageError, match=f"no such file: {missing}"):
        local.read_bytes(missing)
    assert not local.exists(missing)
    local.delete(missing)  # deleting a missing file is not an error


def test_read_text_rejects_non_utf8_with_offset(local: Storage, tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"abc\xe9def")
    with pytest.raises(DataError, match=r"latin1\.txt is not valid UTF-8 \(byte offset 3\)"):
        local.read_text(str(path))


def test_local_list_is_recursive_sorted_and_folder_scoped(local: Storage, tmp_path: Path) -> None:
    root = str(tmp_path / "runs")
    for name in ("run1/b.txt", "run1/a/z.txt", "run1/a/y.txt", "run10/c.txt"):
        local.write_text(join_uri(root, name), name)
    assert local.list(join_uri(root, "run1")) == [
        join_uri(root, "run1/a/y.txt"),
        join_uri(root, "run1/a/z.txt"),
        join_uri(root, "run1/b.txt"),
    ]
    assert local.list(join_uri(root, "missing")) == []
    assert local.list(f"file://{root}/run10") == [f"file://{root}/run10/c.txt"]

    local.delete_prefix(join_uri(root, "run1"))
    assert local.list(root) == [join_uri(root, "run10/c.txt")]


def test_local_temp_file_is_never_listed_during_a_write(
    local: Storage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = str(tmp_path / "out" / "data.jsonl")
    local.write_text(str(tmp_path / "out" / "other.txt"), "x")
    seen_during_write: list[list[str]] = []
    on_disk_during_write: list[list[str]] = []
    real_replace = os.replace

    def replace(src, dst):
        seen_during_write.append(local.list(str(tmp_path / "out")))
        on_disk_during_write.append(sorted(os.listdir(tmp_path / "out")))
        real_replace(src, dst)

    monkeypatch.setattr(storage_module.os, "replace", replace)
    local.write_text(target, "complete")

    assert seen_during_write == [[str(tmp_path / "out" / "other.txt")]]
    assert len(on_disk_during_write[0]) == 2  # the temporary file existed, hidden from list()
    assert local.read_text(target) == "complete"
    assert sorted(os.listdir(tmp_path / "out")) == ["data.jsonl", "other.txt"]


def test_local_failed_write_leaves_no_partial_file(
    local: Storage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "out" / "data.txt"
    local.write_text(str(target), "old complete content")

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(storage_module.os, "replace", broken_replace)
    with pytest.raises(StorageError, match=r"cannot write .*data\.txt: No space left on device"):
        local.write_text(str(target), "new content")
    with pytest.raises(StorageError):
        local.write_text(str(tmp_path / "out" / "fresh.txt"), "never visible")

    assert target.read_text() == "old complete content"
    assert os.listdir(tmp_path / "out") == ["data.txt"]  # no temporary file, no fresh.txt


def test_background_writer_writes_in_order_and_stops_at_the_first_failure(local: Storage, tmp_path: Path) -> None:
    writer = BackgroundWriter()
    gate = threading.Event()
    writer.submit(gate.wait)  # the writer thread is busy: submit still returns at once
    for index in range(3):
        writer.submit(lambda index=index: local.write_text(str(tmp_path / f"{index}.txt"), str(index)))
    assert not list(tmp_path.iterdir())
    gate.set()

    def refused() -> None:
        raise StorageError("cannot write 3.txt: disk full")

    writer.submit(refused)
    writer.submit(lambda: local.write_text(str(tmp_path / "4.txt"), "never"))
    with pytest.raises(StorageError, match="3.txt: disk full"):
        writer.close()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["0.txt", "1.txt", "2.txt"]  # all before it, none after
    with pytest.raises(StorageError, match="disk full"):
        writer.check()


def test_local_put_get_and_dirs(local: Storage, tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "sub" / "deep").mkdir(parents=True)
    (source / "a.bin").write_bytes(os.urandom(3000))
    (source / "sub" / "deep" / "b.txt").write_text("bee")
    target = str(tmp_path / "store" / "model")

    written = local.upload_dir(source, target)
    assert written == [join_uri(target, "a.bin"), join_uri(target, "sub/deep/b.txt")]
    assert local.list(target) == written

    copy = tmp_path / "copy"
    local.download_dir(target, copy)
    assert (copy / "a.bin").read_bytes() == (source / "a.bin").read_bytes()
    assert (copy / "sub" / "deep" / "b.txt").read_text() == "bee"

    local.get_file(join_uri(target, "a.bin"), tmp_path / "single.bin")
    assert (tmp_path / "single.bin").read_bytes() == (source / "a.bin").read_bytes()
    with pytest.raises(StorageError, match="no such file: .*nothing.bin"):
        local.put_file(tmp_path / "nothing.bin", join_uri(target, "x"))
    with pytest.raises(StorageError, match="nothing to download: no object below"):
        local.download_dir(str(tmp_path / "empty"), tmp_path / "copy2")


# --------------------------------------------------------------------------- configuration errors (no server)


def test_s3_uri_without_endpoint_names_the_setting(local: Storage) -> None:
    with pytest.raises(StorageError, match=r"storage\.s3_endpoint"):
        local.read_bytes("s3://bucket/key")


def test_unsupported_scheme_is_refused(local: Storage) -> None:
    with pytest.raises(StorageError, match="unsupported URI scheme in 'gs://bucket/x'"):
        local.read_bytes("gs://bucket/x")


def test_invalid_bucket_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "a")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "b")
    storage = Storage(StorageConfig(s3_endpoint="127.0.0.1:1", s3_secure=False))
    with pytest.raises(StorageError, match="'B_' is not a valid bucket name"):
        storage.exists("s3://B_/key")


def test_missing_credentials_env_names_the_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MY_S3_KEY", raising=False)
    monkeypatch.setenv("MY_S3_SECRET", "s3cr3t-value")
    config = StorageConfig(s3_endpoint="127.0.0.1:9", access_key_env="MY_S3_KEY", secret_key_env="MY_S3_SECRET")
    with pytest.raises(StorageError, match=r"S3 credentials missing: set the environment variable\(s\) MY_S3_KEY ") as error:
        Storage(config).read_bytes("s3://bucket/key")
    assert "s3cr3t-value" not in str(error.value)


def test_unreachable_endpoint_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "a")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "b")
    (port,) = free_ports(1)  # nothing listens there
    config = StorageConfig(s3_endpoint=f"127.0.0.1:{port}", s3_secure=False, s3_region="us-east-1", max_retries=1, backoff_initial_s=0.01)
    with pytest.raises(StorageError) as error:
        Storage(config).read_bytes("s3://bucket/key")
    message = str(error.value)
    assert f"cannot reach S3 endpoint 127.0.0.1:{port} (storage.s3_endpoint)" in message
    assert "after 2 attempts" in message
    assert "s3://bucket/key" in message


# --------------------------------------------------------------------------- S3 (real SeaweedFS server)


@pytest.mark.integration
def test_s3_round_trip_exists_delete(s3: Storage, s3_bucket: str) -> None:
    uri = f"s3://{s3_bucket}/dir/data.bin"
    assert not s3.exists(uri)
    s3.write_bytes(uri, b"\x00binary\xff")
    assert s3.exists(uri)
    assert s3.read_bytes(uri) == b"\x00binary\xff"

    s3.write_text(f"s3://{s3_bucket}/t.txt", "texte 中文")
    assert s3.read_text(f"s3://{s3_bucket}/t.txt") == "texte 中文"

    s3.delete(uri)
    assert not s3.exists(uri)
    s3.delete(uri)  # idempotent
    with pytest.raises(StorageError, match=f"no such object: s3://{s3_bucket}/dir/data.bin"):
        s3.read_bytes(uri)


@pytest.mark.integration
def test_s3_read_text_rejects_non_utf8(s3: Storage, s3_bucket: str) -> None:
    uri = f"s3://{s3_bucket}/bad.txt"
    s3.write_bytes(uri, b"ok\xff\xfe")
    with pytest.raises(DataError, match=rf"{uri} is not valid UTF-8 \(byte offset 2\)"):
        s3.read_text(uri)


@pytest.mark.integration
def test_s3_list_by_prefix(s3: Storage, s3_bucket: str) -> None:
    base = f"s3://{s3_bucket}/runs"
    for name in ("run1/b.txt", "run1/a/z.txt", "run1/a/y.txt", "run10/c.txt", "run2.txt"):
        s3.write_text(join_uri(base, name), name)
    assert s3.list(f"{base}/run1") == [f"{base}/run1/a/y.txt", f"{base}/run1/a/z.txt", f"{base}/run1/b.txt"]
    assert s3.list(f"{base}/run1/") == s3.list(f"{base}/run1")
    assert s3.list(f"s3://{s3_bucket}") == sorted(
        f"{base}/{name}" for name in ("run1/b.txt", "run1/a/z.txt", "run1/a/y.txt", "run10/c.txt", "run2.txt")
    )
    assert s3.list(f"{base}/absent") == []

    s3.delete_prefix(f"{base}/run1")
    assert s3.list(base) == [f"{base}/run10/c.txt", f"{base}/run2.txt"]


@pytest.mark.integration
def test_s3_multipart_put_and_get_file(s3: Storage, s3_bucket: str, s3_server: S3Server, tmp_path: Path) -> None:
    assert s3.config.multipart_part_size == 5 * MIB
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(11 * MIB + 123))
    uri = f"s3://{s3_bucket}/models/big.bin"

    s3.put_file(source, uri)

    etag = s3_server.client().stat_object(s3_bucket, "models/big.bin").etag
    assert etag.endswith("-3"), f"expected a 3-part multipart ETag, got {etag}"
    target = tmp_path / "down" / "big.bin"
    s3.get_file(uri, target)
    assert hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(source.read_bytes()).digest()
    assert os.listdir(target.parent) == ["big.bin"]


@pytest.mark.integration
def test_s3_failed_multipart_upload_leaves_no_object(
    s3: Storage, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(11 * MIB))
    uri = f"s3://{s3_bucket}/big.bin"
    client = s3.s3_backend().client
    real_upload_part = client._upload_part
    uploaded: list[int] = []

    def flaky_upload_part(*args):
        if uploaded:  # the first part goes through, every later one breaks the connection
            raise urllib3.exceptions.ProtocolError("connection reset by peer")
        uploaded.append(1)
        return real_upload_part(*args)

    monkeypatch.setattr(client, "_upload_part", flaky_upload_part)
    with pytest.raises(StorageError, match="cannot reach S3 endpoint .* to upload to .*big.bin after 3 attempts"):
        s3.put_file(source, uri)
    assert uploaded == [1]
    assert not s3.exists(uri)
    assert s3.list(f"s3://{s3_bucket}") == []


@pytest.mark.integration
@pytest.mark.parametrize(
    "transient",
    [
        urllib3.exceptions.ProtocolError("Connection aborted"),
        ServerError("server failed with HTTP status code 503", 503),
    ],
    ids=["connection-error", "http-503"],
)
def test_s3_transient_failure_is_retried(
    s3: Storage, s3_bucket: str, monkeypatch: pytest.MonkeyPatch, transient: Exception
) -> None:
    client = s3.s3_backend().client
    puts = _count_calls(monkeypatch, client, "put_object", fail_first=transient)
    gets = _count_calls(monkeypatch, client, "get_object", fail_first=transient)
    uri = f"s3://{s3_bucket}/retried.txt"

    s3.write_text(uri, "made it")
    assert s3.read_text(uri) == "made it"
    assert len(puts) == 2
    assert len(gets) == 2


@pytest.mark.integration
def test_s3_upload_and_download_dir(s3: Storage, s3_bucket: str, tmp_path: Path) -> None:
    source = tmp_path / "adapter"
    (source / "tokenizer").mkdir(parents=True)
    (source / "adapter_model.safetensors").write_bytes(os.urandom(5000))
    (source / "tokenizer" / "vocab.json").write_text('{"a": 1}')
    uri = f"s3://{s3_bucket}/iter1/adapter"

    assert s3.upload_dir(source, uri) == [f"{uri}/adapter_model.safetensors", f"{uri}/tokenizer/vocab.json"]
    copy = tmp_path / "copy"
    assert sorted(s3.download_dir(uri, copy)) == [copy / "adapter_model.safetensors", copy / "tokenizer" / "vocab.json"]
    assert (copy / "adapter_model.safetensors").read_bytes() == (source / "adapter_model.safetensors").read_bytes()
    assert (copy / "tokenizer" / "vocab.json").read_text() == '{"a": 1}'


@pytest.mark.integration
def test_s3_wrong_credentials_are_named_and_not_retried(
    s3_server: S3Server, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WRONG_KEY", s3_server.access_key)
    monkeypatch.setenv("WRONG_SECRET", "not-the-secret")
    storage = Storage(s3_server.storage_config(access_key_env="WRONG_KEY", secret_key_env="WRONG_SECRET"))
    gets = _count_calls(monkeypatch, storage.s3_backend().client, "get_object")
    with pytest.raises(StorageError) as error:
        storage.read_bytes(f"s3://{s3_bucket}/anything")
    message = str(error.value)
    assert "refused the credentials (SignatureDoesNotMatch)" in message
    assert "check the environment variables WRONG_KEY and WRONG_SECRET" in message
    assert "not-the-secret" not in message
    assert len(gets) == 1


@pytest.mark.integration
@pytest.mark.parametrize(
    "operation",
    [
        lambda storage, uri: storage.read_bytes(uri),
        lambda storage, uri: storage.write_bytes(uri, b"x"),
        lambda storage, uri: storage.exists(uri),
        lambda storage, uri: storage.list(uri),
    ],
    ids=["read", "write", "exists", "list"],
)
def test_s3_missing_bucket_is_named(s3: Storage, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, operation) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr(storage_module, "time", SimpleNamespace(sleep=sleeps.append))
    with pytest.raises(StorageError, match=f"bucket 'no-such-bucket' does not exist at endpoint {s3_server.endpoint}"):
        operation(s3, "s3://no-such-bucket/data/x.jsonl")
    assert sleeps == []  # not retried
