"""Checksummed downloads of MNIST and CIFAR-10 for users with internet.

A download streams into a temporary file next to its destination, is checked, and only then
renamed into place (atomic on one filesystem): an interrupted or corrupt download leaves nothing
that a later run could mistake for data.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import shutil
import tarfile
import tempfile
import urllib.parse
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

from flatvol.data.cifar import (
    CIFAR_BATCHES_DIRNAME,
    CIFAR_TEST_BATCH,
    CIFAR_TRAIN_BATCHES,
    find_cifar_batches_dir,
)
from flatvol.data.idx import MNIST_FILE_STEMS, find_mnist_file
from flatvol.errors import DataError
from flatvol.io import atomic_write
from flatvol.progress import ProgressBar

_CHUNK = 1 << 20


@dataclass(frozen=True)
class MnistFile:
    """One MNIST file: `gz_md5` is the md5 of `stem.gz` as served by the canonical mirrors;
    `raw_md5` the md5 of its gunzipped IDX content, which is the same whichever gzip wrapper
    a mirror (or a local copy) uses."""

    stem: str
    gz_md5: str
    raw_md5: str


MNIST_FILES = (
    MnistFile(
        MNIST_FILE_STEMS[0],
        gz_md5="f68b3c2dcbeaaa9fbdd348bbdeb94873",
        raw_md5="6bbc9ace898e44ae57da46a324031adb",
    ),
    MnistFile(
        MNIST_FILE_STEMS[1],
        gz_md5="d53e105ee54ea40749a09fcbcd1e9432",
        raw_md5="a25bea736e30d166cdddb491f175f624",
    ),
    MnistFile(
        MNIST_FILE_STEMS[2],
        gz_md5="9fb629c4189551a2d022fa330f9573f3",
        raw_md5="2646ac647ad5339dbf082846283269ea",
    ),
    MnistFile(
        MNIST_FILE_STEMS[3],
        gz_md5="ec29112dd5afa0611ce80d1b7f02629c",
        raw_md5="27ae3e4e09519cfbb04c329615203637",
    ),
)
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_TARBALL = "cifar-10-python.tar.gz"


def file_md5(path: str | os.PathLike, gunzip: bool = False) -> str:
    """Hex md5 of a file, or of its gunzipped content when `gunzip`.

    Args:
        path: The file to hash.
        gunzip: Whether to hash the gunzipped content instead of the raw bytes.

    Returns:
        The hex md5 digest.

    Raises:
        DataError: If the file cannot be read (or gunzipped).
    """
    path = Path(path)
    h = hashlib.md5(usedforsecurity=False)
    try:
        with gzip.open(path, "rb") if gunzip else open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    except (OSError, EOFError, zlib.error) as e:
        what = "gunzip" if gunzip else "read"
        raise DataError(f"{path}: cannot {what} for checksum ({e})") from None
    return h.hexdigest()


def download(
    url: str,
    dest: str | os.PathLike,
    md5: str | None = None,
    *,
    gunzip_md5: str | None = None,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Download `url` to `dest`, checking the md5 of the bytes received (`md5`) and/or of their
    gunzipped content (`gunzip_md5`). Streams to a temporary file in dest's folder and renames
    it into place only once every given checksum matches; on any failure nothing is left at
    `dest` (an existing file there is untouched). Returns `dest`.

    Args:
        url: The URL to fetch.
        dest: Destination file.
        md5: Expected md5 of the downloaded bytes (None: not checked).
        gunzip_md5: Expected md5 of the gunzipped content (None: not checked).
        timeout: Network timeout in seconds.
        progress: Whether to show a download progress bar.

    Returns:
        dest, as a Path.

    Raises:
        DataError: If the download fails or a checksum does not match (nothing is left at dest).
    """
    dest = Path(dest)
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("http", "https"):
        got = scheme or "none"
        raise DataError(f"download {url}: URL scheme expected http or https, got {got}")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    except OSError as e:
        raise DataError(f"{dest.parent}: cannot write download ({e.strerror or e})") from None
    tmp = Path(tmp_name)
    try:
        h = hashlib.md5(usedforsecurity=False)
        received = 0
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
                length = resp.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                with ProgressBar(dest.name, total=total, enabled=progress, unit="bytes",
                                 leave=False) as bar:
                    while chunk := resp.read(_CHUNK):
                        out.write(chunk)
                        h.update(chunk)
                        received += len(chunk)
                        bar.advance(len(chunk))
        except (OSError, http.client.HTTPException) as e:
            raise DataError(f"download {url}: {_reason(e)}") from None
        if total is not None and received != total:
            raise DataError(f"download {url}: expected {total} bytes, got {received}")
        got = h.hexdigest()
        if md5 is not None and got != md5.lower():
            raise DataError(f"download {url}: md5 expected {md5.lower()}, got {got}")
        if gunzip_md5 is not None:
            try:
                got = file_md5(tmp, gunzip=True)
            except DataError:
                raise DataError(f"download {url}: expected gzip data, got a corrupt gzip") from None
            if got != gunzip_md5.lower():
                raise DataError(
                    f"download {url}: md5 of gunzipped content expected {gunzip_md5.lower()}, "
                    f"got {got}"
                )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


# ensure_* take a `download` flag, which shadows the function inside them.
_download_file = download


def _reason(e: BaseException) -> str:
    reason = getattr(e, "reason", None)
    code = getattr(e, "code", None)
    if code is not None:
        return f"HTTP {code} {reason or ''}".strip()
    text = str(reason if reason is not None else e) or type(e).__name__
    return text.splitlines()[0]


def _mnist_dir_candidates(data_dir: Path) -> tuple[Path, Path]:
    return data_dir, data_dir / "mnist"


def find_mnist_dir(data_dir: str | os.PathLike) -> Path | None:
    """The folder (`data_dir` or `data_dir/mnist`) holding all four MNIST files, else None."""
    for candidate in _mnist_dir_candidates(Path(data_dir)):
        if all(find_mnist_file(candidate, stem) for stem in MNIST_FILE_STEMS):
            return candidate
    return None


def ensure_mnist(
    data_dir: str | os.PathLike,
    download: bool = False,
    *,
    mirrors: tuple[str, ...] | list[str] = MNIST_MIRRORS,
    progress: bool = True,
) -> Path:
    """The folder holding the four MNIST IDX files (`.gz` or raw), looked for in `data_dir` and
    `data_dir/mnist`. Missing files are downloaded into `data_dir/mnist` only when `download`;
    each download is verified by the md5 of its gunzipped content (gzip wrappers differ between
    mirrors, the IDX content does not), trying the mirrors in order.

    Args:
        data_dir: Folder holding (or to receive) the MNIST files.
        download: Whether to download missing files.
        mirrors: Base URLs tried in order for each download.
        progress: Whether to show a download progress bar.

    Returns:
        The folder holding the four IDX files.

    Raises:
        DataError: If files are missing (and not downloaded) or every mirror fails.
    """
    data_dir = Path(data_dir)
    found = find_mnist_dir(data_dir)
    if found is not None:
        return found
    # Complete a partial copy where it is, otherwise fill data_dir/mnist.
    target = next(
        (
            c
            for c in _mnist_dir_candidates(data_dir)
            if any(find_mnist_file(c, stem) for stem in MNIST_FILE_STEMS)
        ),
        data_dir / "mnist",
    )
    missing = [f for f in MNIST_FILES if find_mnist_file(target, f.stem) is None]
    if not download:
        names = ", ".join(f"{f.stem}[.gz]" for f in missing)
        raise DataError(
            f"{data_dir}: MNIST files expected in {data_dir} or {data_dir / 'mnist'}, "
            f"missing {names} (download with download=True)"
        )
    for f in missing:
        errors = []
        for mirror in mirrors:
            url = mirror.rstrip("/") + "/" + f.stem + ".gz"
            try:
                _download_file(
                    url, target / (f.stem + ".gz"), gunzip_md5=f.raw_md5, progress=progress
                )
                break
            except DataError as e:
                errors.append(str(e))
        else:
            raise DataError(f"MNIST {f.stem}.gz: every mirror failed; last: {errors[-1]}")
    return target


def ensure_cifar10(
    data_dir: str | os.PathLike,
    download: bool = False,
    *,
    url: str = CIFAR10_URL,
    progress: bool = True,
) -> Path:
    """The `cifar-10-batches-py` folder in (or at) `data_dir`. Otherwise a `cifar-10-python.tar.gz`
    in `data_dir` is extracted, or, when `download`, fetched first (md5 checked).

    Args:
        data_dir: Folder holding (or to receive) the CIFAR-10 data, or the cifar-10-batches-py
            folder itself.
        download: Whether to download the tarball when it is missing.
        url: Where the tarball is downloaded from.
        progress: Whether to show a download progress bar.

    Returns:
        The path of the cifar-10-batches-py folder.

    Raises:
        DataError: If the data is missing (and not downloaded), a download fails, or the tarball
            cannot be extracted.
    """
    data_dir = Path(data_dir)
    found = find_cifar_batches_dir(data_dir)
    if found is not None:
        return found
    tarball = data_dir / CIFAR10_TARBALL
    if not tarball.is_file():
        if not download:
            raise DataError(
                f"{data_dir}: CIFAR-10 expected {CIFAR_BATCHES_DIRNAME}/ or {CIFAR10_TARBALL}, "
                "got neither (download with download=True)"
            )
        _download_file(url, tarball, CIFAR10_MD5, progress=progress)
    return extract_cifar10_tarball(tarball, data_dir)


def extract_cifar10_tarball(tarball: str | os.PathLike, data_dir: str | os.PathLike) -> Path:
    """Extract only the expected batch files, as plain files, from the official tarball into
    `data_dir/cifar-10-batches-py` (no member of the archive chooses its own path)."""
    tarball, out_dir = Path(tarball), Path(data_dir) / CIFAR_BATCHES_DIRNAME
    wanted = {*CIFAR_TRAIN_BATCHES, CIFAR_TEST_BATCH, "batches.meta"}
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            members = {
                Path(m.name).name: m
                for m in tar.getmembers()
                if m.isfile() and Path(m.name).parent.name == CIFAR_BATCHES_DIRNAME
            }
            absent = sorted(wanted - members.keys())
            if absent:
                raise DataError(f"{tarball}: expected CIFAR-10 members {absent}, got none")
            out_dir.mkdir(parents=True, exist_ok=True)
            for name in sorted(wanted):
                src = tar.extractfile(members[name])
                assert src is not None  # isfile() members always have content
                atomic_write(out_dir / name, lambda dst, src=src: shutil.copyfileobj(src, dst))
    except (OSError, EOFError, tarfile.TarError, zlib.error) as e:
        raise DataError(f"{tarball}: cannot extract CIFAR-10 tarball ({e})") from None
    return out_dir
