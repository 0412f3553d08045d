"""One storage API keyed by URI: local paths (plain or ``file://``) and ``s3://bucket/key``.

S3 goes through the minio client against any S3 endpoint (MinIO, SeaweedFS, AWS). The endpoint,
TLS and region come from :class:`~selflengthen.config.StorageConfig`; credentials come only from
the environment variables whose names it gives, never from a URI or a parameter.

Writes are atomic, so no reader ever sees a partial object:

* local: the data goes to a hidden temporary file in the target's folder, is flushed to disk,
  then renamed over the target with ``os.replace`` (atomic within one file system). Temporary
  files never show up in :meth:`Storage.list`.
* S3: a single PUT creates the object atomically (S3 makes an object visible only once its upload
  is complete); a multipart upload (files larger than ``multipart_part_size``) becomes visible only
  at CompleteMultipartUpload, and a failed one is aborted, leaving no object.

Folders: a "prefix" URI names a folder; :meth:`Storage.list` and :meth:`Storage.delete_prefix` act
on every object below it (``s3://b/run1`` never matches ``s3://b/run10/...``).

Transient S3 failures (connection errors, HTTP 5xx, SlowDown) are retried with exponential backoff
up to ``max_retries`` times; authentication errors and missing buckets or objects are not.

:class:`BackgroundWriter` runs writes in order on one thread of their own, so an event loop that
hands them over never waits for a slow or retrying S3.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Protocol, TypeVar

import certifi
import urllib3
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError
from minio.helpers import check_bucket_name

from selflengthen.config import StorageConfig
from selflengthen.errors import DataError, StorageError

log = logging.getLogger(__name__)

T = TypeVar("T")

_TMP_PREFIX = ".sl-tmp-"  # temporary files of atomic local writes (hidden from list())
_CHUNK = 1024 * 1024  # streaming copy buffer
_MAX_BACKOFF_S = 30.0
_CONNECT_TIMEOUT_S = 10.0
_READ_TIMEOUT_S = 300.0
_HTTP_POOL_SIZE = 32

# S3 error codes worth retrying, and those that mean the credentials were refused.
_TRANSIENT_CODES = {"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout", "OperationAborted"}
_MISSING_CODES = {"NoSuchKey", "NoSuchObject"}
_AUTH_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"}


def join_uri(base: str, *parts: str) -> str:
    """Join a URI (or local path) with path parts: ``join_uri("s3://b/run", "it1", "x.jsonl")``."""
    tail = "/".join(part.strip("/") for part in parts if part.strip("/"))
    if not tail:
        return base
    if not base:
        return tail
    return base.rstrip("/") + "/" + tail


def decode_utf8(data: bytes, uri: str) -> str:
    """Decode UTF-8; other bytes raise DataError naming the URI and the first bad byte's offset."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataError(f"{uri} is not valid UTF-8 (byte offset {error.start})") from None


def is_s3_uri(uri: str) -> bool:
    return uri.startswith("s3://")


def _local_path(uri: str) -> Path:
    """The local path of a plain path or ``file://`` URI; other schemes are refused."""
    if uri.startswith("file://"):
        return Path(uri[len("file://"):])
    if "://" in uri:
        raise StorageError(f"unsupported URI scheme in {uri!r}: use a local path, file:// or s3://")
    return Path(uri)


def _split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> ``("bucket", "a/b")``; the key may be empty (the whole bucket)."""
    bucket, _, key = uri[len("s3://"):].partition("/")
    try:
        check_bucket_name(bucket)
    except ValueError:
        raise StorageError(f"invalid S3 URI {uri!r}: {bucket!r} is not a valid bucket name") from None
    return bucket, key


def _folder_key(key: str) -> str:
    """The listing prefix of a folder key: everything strictly below it."""
    return key.rstrip("/") + "/" if key.strip("/") else ""


class _Backend(Protocol):
    """What one URI scheme implements; :class:`Storage` dispatches to it."""

    def read_bytes(self, uri: str) -> bytes: ...
    def write_bytes(self, uri: str, data: bytes) -> None: ...
    def exists(self, uri: str) -> bool: ...
    def list(self, prefix_uri: str) -> list[str]: ...
    def entries(self, prefix_uri: str) -> list[tuple[str, int, str]]: ...
    def delete(self, uri: str) -> None: ...
    def delete_prefix(self, prefix_uri: str) -> None: ...
    def put_file(self, local_path: Path, uri: str) -> None: ...
    def get_file(self, uri: str, local_path: Path) -> None: ...


# --------------------------------------------------------------------------- local files


@contextmanager
def _atomic_file(path: Path, uri: str) -> Iterator[BinaryIO]:
    """Yield a temporary file beside ``path``; on success it replaces ``path``, else it vanishes."""
    tmp = path.parent / f"{_TMP_PREFIX}{path.name}.{uuid.uuid4().hex}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(tmp, "xb")  # noqa: SIM115 - closed below; unlike tempfile it honours the umask
    except OSError as error:
        blocking = next((folder for folder in path.parents if folder.is_file()), None)
        reason = f"{blocking} is a file, not a folder" if blocking else error.strerror or error
        raise StorageError(f"cannot write {uri}: {reason}") from error
    try:
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise StorageError(f"cannot write {uri}: {error.strerror or error}") from error
        raise


def _open_source(local_path: Path) -> BinaryIO:
    try:
        return open(local_path, "rb")
    except FileNotFoundError:
        raise StorageError(f"no such file: {local_path}") from None
    except OSError as error:
        raise StorageError(f"cannot read {local_path}: {error.strerror or error}") from error


def _first_missing(path: Path) -> Path | None:
    """The outermost folder of ``path`` (itself included) that does not exist yet; None if it exists."""
    missing = None
    for folder in (path, *path.parents):
        if folder.exists() or folder.is_symlink():
            break
        missing = folder
    return missing


def _remove_empty_folders(path: Path, up_to: Path) -> None:
    """Remove ``path`` and its parents up to ``up_to`` (included) while they are empty."""
    for folder in (path, *path.parents):
        try:
            folder.rmdir()
        except OSError:
            return
        if folder == up_to:
            return


class _LocalBackend:
    def read_bytes(self, uri: str) -> bytes:
        with _open_source(_local_path(uri)) as handle:
            return handle.read()

    def write_bytes(self, uri: str, data: bytes) -> None:
        with _atomic_file(_local_path(uri), uri) as handle:
            handle.write(data)

    def exists(self, uri: str) -> bool:
        return _local_path(uri).is_file()

    def list(self, prefix_uri: str) -> list[str]:
        root = _local_path(prefix_uri)
        if not root.is_dir():
            return []
        found = []
        for folder, _, files in os.walk(root):
            for name in files:
                if not name.startswith(_TMP_PREFIX):
                    found.append(join_uri(prefix_uri, (Path(folder) / name).relative_to(root).as_posix()))
        return sorted(found)

    def entries(self, prefix_uri: str) -> list[tuple[str, int, str]]:
        root = _local_path(prefix_uri)
        found = []
        for uri in self.list(prefix_uri):
            stat = _local_path(uri).stat()
            found.append((_local_path(uri).relative_to(root).as_posix(), stat.st_size, str(stat.st_mtime_ns)))
        return found

    def delete(self, uri: str) -> None:
        try:
            _local_path(uri).unlink(missing_ok=True)
        except OSError as error:
            raise StorageError(f"cannot delete {uri}: {error.strerror or error}") from error

    def delete_prefix(self, prefix_uri: str) -> None:
        root = _local_path(prefix_uri)
        try:
            if root.is_dir():
                shutil.rmtree(root)
        except OSError as error:
            raise StorageError(f"cannot delete {prefix_uri}: {error.strerror or error}") from error

    def put_file(self, local_path: Path, uri: str) -> None:
        with _open_source(local_path) as source, _atomic_file(_local_path(uri), uri) as target:
            shutil.copyfileobj(source, target, _CHUNK)

    def get_file(self, uri: str, local_path: Path) -> None:
        self.put_file(_local_path(uri), str(local_path))


# --------------------------------------------------------------------------- S3


def _is_transient(error: Exception) -> bool:
    if isinstance(error, urllib3.exceptions.HTTPError):
        return True  # connection refused or reset, timeouts, protocol errors
    if isinstance(error, ServerError):
        return error.status_code >= 500 or error.status_code == 429
    if isinstance(error, InvalidResponseError):  # a non-XML answer, e.g. a proxy's 502 page
        status = error._code  # minio keeps the HTTP status only here
        return status >= 500 or status == 429
    if isinstance(error, S3Error):
        status = error.response.status if error.response is not None else 0
        return error.code in _TRANSIENT_CODES or status >= 500
    return False


class _S3Backend:
    """S3 operations with retries and clear errors, through one minio client (``client``)."""

    def __init__(self, config: StorageConfig):
        self.config = config
        self.endpoint = config.s3_endpoint
        self.client = self._make_client()
        self._known_buckets: set[str] = set()

    def _make_client(self) -> Minio:
        config = self.config
        access_key = os.environ.get(config.access_key_env)
        secret_key = os.environ.get(config.secret_key_env)
        missing = [name for name, value in ((config.access_key_env, access_key), (config.secret_key_env, secret_key)) if not value]
        if missing:
            raise StorageError(
                f"S3 credentials missing: set the environment variable(s) {' and '.join(missing)} "
                f"(names from storage.access_key_env / storage.secret_key_env) to use {self.endpoint}"
            )
        # urllib3 does not retry: _call() retries with backoff and reports the endpoint clearly.
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=_CONNECT_TIMEOUT_S, read=_READ_TIMEOUT_S),
            maxsize=_HTTP_POOL_SIZE,
            retries=False,
            cert_reqs="CERT_REQUIRED",
            ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        )
        try:
            return Minio(
                self.endpoint,
                access_key=access_key,
                secret_key=secret_key,
                secure=config.s3_secure,
                region=config.s3_region,
                http_client=http,
            )
        except ValueError as error:
            raise StorageError(f"storage.s3_endpoint {self.endpoint!r} is not a valid host:port: {error}") from None

    def _call(self, action: str, uri: str, operation: Callable[[], T]) -> T:
        """Run ``operation``, retrying transient failures with exponential backoff."""
        delay = self.config.backoff_initial_s
        attempt = 1
        while True:
            try:
                return operation()
            except (MinioException, urllib3.exceptions.HTTPError) as error:
                if attempt > self.config.max_retries or not _is_transient(error):
                    raise self._error(error, action, uri, attempt) from error
                log.warning("S3 %s %s failed (attempt %d), retrying in %.2fs: %s", action, uri, attempt, delay, error)
                time.sleep(delay)
                delay = min(delay * 2, _MAX_BACKOFF_S)
                attempt += 1

    def _error(self, error: Exception, action: str, uri: str, attempts: int) -> StorageError:
        """A StorageError that says what went wrong in the user's terms."""
        tried = f"after {attempts} attempt{'s' if attempts > 1 else ''}"
        if isinstance(error, urllib3.exceptions.HTTPError):
            reason = getattr(error, "reason", None) or error
            return StorageError(
                f"cannot reach S3 endpoint {self.endpoint} (storage.s3_endpoint) to {action} {uri} {tried}: {reason}"
            )
        code = getattr(error, "code", None)
        if code == "NoSuchBucket":
            bucket, _ = _split_s3(uri)
            return StorageError(f"bucket '{bucket}' does not exist at endpoint {self.endpoint}")
        if code in _MISSING_CODES:
            return StorageError(f"no such object: {uri}")
        if code in _AUTH_CODES:
            return StorageError(
                f"S3 endpoint {self.endpoint} refused the credentials ({code}) to {action} {uri}: check the "
                f"environment variables {self.config.access_key_env} and {self.config.secret_key_env}"
            )
        return StorageError(f"S3 endpoint {self.endpoint} failed to {action} {uri} {tried}: {error}")

    def _require_bucket(self, uri: str) -> None:
        """Raise the missing-bucket error (a HEAD on a missing bucket only says 'no such key')."""
        bucket, _ = _split_s3(uri)
        if bucket not in self._known_buckets:
            if not self._call("check the bucket of", uri, lambda: self.client.bucket_exists(bucket)):
                raise StorageError(f"bucket '{bucket}' does not exist at endpoint {self.endpoint}")
            self._known_buckets.add(bucket)

    def _download(self, uri: str, sink: Callable[[bytes], object]) -> None:
        bucket, key = _split_s3(uri)
        response = self.client.get_object(bucket, key)
        try:
            for chunk in response.stream(_CHUNK):
                sink(chunk)
        finally:
            response.close()
            response.release_conn()

    def read_bytes(self, uri: str) -> bytes:
        def read() -> bytes:
            chunks: list[bytes] = []
            self._download(uri, chunks.append)
            return b"".join(chunks)

        return self._call("read", uri, read)

    def _upload(self, uri: str, stream: BinaryIO, length: int) -> None:
        bucket, key = _split_s3(uri)
        stream.seek(0)  # a retry starts over
        self.client.put_object(bucket, key, stream, length, part_size=self.config.multipart_part_size)

    def write_bytes(self, uri: str, data: bytes) -> None:
        stream = io.BytesIO(data)
        self._call("write", uri, lambda: self._upload(uri, stream, len(data)))

    def exists(self, uri: str) -> bool:
        bucket, key = _split_s3(uri)

        def stat() -> bool:
            try:
                self.client.stat_object(bucket, key)
            except S3Error as error:
                if error.code not in _MISSING_CODES:
                    raise
                return False
            return True

        found = self._call("check", uri, stat)
        if not found:
            self._require_bucket(uri)
        return found

    def list(self, prefix_uri: str) -> list[str]:
        bucket, key = _split_s3(prefix_uri)
        prefix = _folder_key(key)

        def names() -> list[str]:
            objects = self.client.list_objects(bucket, prefix=prefix, recursive=True)
            return [obj.object_name for obj in objects if not obj.is_dir]

        return sorted(f"s3://{bucket}/{name}" for name in self._call("list", prefix_uri, names))

    def entries(self, prefix_uri: str) -> list[tuple[str, int, str]]:
        bucket, key = _split_s3(prefix_uri)
        prefix = _folder_key(key)

        def listing() -> list[tuple[str, int, str]]:
            objects = self.client.list_objects(bucket, prefix=prefix, recursive=True)
            return [(obj.object_name[len(prefix):], obj.size or 0, (obj.etag or "").strip('"')) for obj in objects if not obj.is_dir]

        return sorted(self._call("list", prefix_uri, listing))

    def delete(self, uri: str) -> None:
        bucket, key = _split_s3(uri)
        self._call("delete", uri, lambda: self.client.remove_object(bucket, key))

    def delete_prefix(self, prefix_uri: str) -> None:
        bucket, _ = _split_s3(prefix_uri)
        keys = [_split_s3(uri)[1] for uri in self.list(prefix_uri)]
        if not keys:
            return

        def remove() -> list[str]:
            errors = self.client.remove_objects(bucket, (DeleteObject(key) for key in keys))
            return [f"{error.name}: {error.code}" for error in errors]

        failed = self._call("delete below", prefix_uri, remove)
        if failed:
            raise StorageError(f"could not delete {len(failed)} object(s) below {prefix_uri}: {', '.join(failed[:5])}")

    def put_file(self, local_path: Path, uri: str) -> None:
        with _open_source(local_path) as source:
            length = os.fstat(source.fileno()).st_size
            self._call("upload to", uri, lambda: self._upload(uri, source, length))

    def get_file(self, uri: str, local_path: Path) -> None:
        def fetch() -> None:
            with _atomic_file(local_path, str(local_path)) as target:
                self._download(uri, target.write)

        self._call("download", uri, fetch)


# --------------------------------------------------------------------------- the API


class Storage:
    """Read and write bytes, text and files by URI; see the module docstring for guarantees."""

    def __init__(self, config: StorageConfig | None = None):
        self.config = config or StorageConfig()
        self._local = _LocalBackend()
        self._s3: _S3Backend | None = None
        self._lock = threading.Lock()

    def _backend(self, uri: str) -> _Backend:
        if not is_s3_uri(uri):
            _local_path(uri)  # refuses unknown schemes
            return self._local
        return self.s3_backend()

    def s3_backend(self) -> _S3Backend:
        """The S3 side (its ``client`` is the minio client), created on first use."""
        if self.config.s3_endpoint is None:
            raise StorageError("an s3:// URI needs an S3 endpoint: set storage.s3_endpoint (host:port)")
        with self._lock:
            if self._s3 is None:
                self._s3 = _S3Backend(self.config)
            return self._s3

    def read_bytes(self, uri: str) -> bytes:
        return self._backend(uri).read_bytes(uri)

    def write_bytes(self, uri: str, data: bytes) -> None:
        self._backend(uri).write_bytes(uri, data)

    def read_text(self, uri: str) -> str:
        """UTF-8 text; other bytes raise DataError naming the URI and the first bad byte's offset."""
        return decode_utf8(self.read_bytes(uri), uri)

    def write_text(self, uri: str, text: str) -> None:
        self.write_bytes(uri, text.encode("utf-8"))

    def exists(self, uri: str) -> bool:
        """Whether an object (a file, not a folder) exists at ``uri``."""
        return self._backend(uri).exists(uri)

    def list(self, prefix_uri: str) -> list[str]:
        """Full URIs of every object below the folder ``prefix_uri``, recursively, sorted."""
        return self._backend(prefix_uri).list(prefix_uri)

    def fingerprint(self, prefix_uri: str) -> str:
        """A digest of the folder's content as listed: every object's relative name, size and ETag
        (S3) or modification time (local); it changes when any object does. StorageError when
        the folder is empty."""
        entries = self._backend(prefix_uri).entries(prefix_uri)
        if not entries:
            raise StorageError(f"nothing below {prefix_uri}")
        return hashlib.sha256(json.dumps(sorted(entries)).encode()).hexdigest()

    def delete(self, uri: str) -> None:
        """Delete one object; deleting a missing one is not an error."""
        self._backend(uri).delete(uri)

    def delete_prefix(self, prefix_uri: str) -> None:
        """Delete every object below the folder ``prefix_uri``."""
        self._backend(prefix_uri).delete_prefix(prefix_uri)

    def check_writable(self, prefix_uri: str) -> None:
        """Write and delete a small object below the folder ``prefix_uri``: a writer calls it before
        its work, so an output it cannot write fails in seconds, not after a shard of generation.

        Local folders the probe had to create are removed again, leaving nothing behind.
        """
        created = None if is_s3_uri(prefix_uri) else _first_missing(_local_path(prefix_uri))
        probe = join_uri(prefix_uri, f"{_TMP_PREFIX}write-probe-{uuid.uuid4().hex}")
        try:
            self.write_bytes(probe, b"")
            self.delete(probe)
        except StorageError as error:
            reason = str(error).removeprefix(f"cannot write {probe}: ")
            raise StorageError(f"output {prefix_uri} is not writable: {reason}") from None
        finally:
            if created is not None:
                _remove_empty_folders(_local_path(prefix_uri), created)

    def put_file(self, local_path: str | Path, uri: str) -> None:
        """Copy a local file to ``uri``, streaming (multipart above ``multipart_part_size`` on S3)."""
        self._backend(uri).put_file(Path(local_path), uri)

    def get_file(self, uri: str, local_path: str | Path) -> None:
        """Copy ``uri`` to a local file, streaming; the local file appears only once complete."""
        self._backend(uri).get_file(uri, Path(local_path))

    def upload_dir(self, local_dir: str | Path, uri: str) -> list[str]:
        """Copy every file below ``local_dir`` to the same relative place below ``uri``; the URIs."""
        root = Path(local_dir)
        if not root.is_dir():
            raise StorageError(f"no such folder: {root}")
        written = []
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            target = join_uri(uri, path.relative_to(root).as_posix())
            self.put_file(path, target)
            written.append(target)
        return written

    def download_dir(self, uri: str, local_dir: str | Path) -> list[Path]:
        """Copy every object below ``uri`` to the same relative place below ``local_dir``; the paths."""
        root = Path(local_dir)
        base = self.list(uri)
        if not base:
            raise StorageError(f"nothing to download: no object below {uri}")
        prefix = uri.rstrip("/") + "/"
        written = []
        for source in base:
            target = root / source[len(prefix):]
            self.get_file(source, target)
            written.append(target)
        return written


class BackgroundWriter:
    """Writes run one after another, in the order given, on one thread of their own.

    :meth:`submit` returns at once. The first write that fails (after the storage's own retries)
    stops the writer: every write before it is done, none after it is attempted, and its error is
    raised by the next :meth:`submit`, :meth:`check` or :meth:`close`.
    """

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="storage-writer")
        self._failure: BaseException | None = None

    def _run(self, write: Callable[[], object]) -> None:
        if self._failure is None:
            try:
                write()
            except BaseException as error:
                self._failure = error
                raise

    def submit(self, write: Callable[[], object]) -> Future:
        """Queue ``write`` (a callable doing storage writes) after those queued before it."""
        self.check()
        return self._executor.submit(self._run, write)

    def check(self) -> None:
        """Raise the error of a failed write, if one failed."""
        if self._failure is not None:
            raise self._failure

    def close(self) -> None:
        """Wait for every queued write, stop the thread, and raise the error of a failed write."""
        self._executor.shutdown(wait=True)
        self.check()


def get_storage(config: StorageConfig | None = None) -> Storage:
    """The storage for a run's configuration (local paths only when no S3 endpoint is set)."""
    return Storage(config)


__all__ = ["BackgroundWriter", "Storage", "decode_utf8", "get_storage", "is_s3_uri", "join_uri"]
