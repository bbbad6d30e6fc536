"""Downloads against a loopback HTTP server (127.0.0.1 only) started by the test itself."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import shutil
import tarfile
import threading

import numpy as np
import pytest

from flatvol.data import load_task
from flatvol.data.cifar import CIFAR_TEST_BATCH, CIFAR_TRAIN_BATCHES
from flatvol.data.download import (
    CIFAR10_MD5,
    MNIST_FILES,
    download,
    ensure_cifar10,
    ensure_mnist,
    file_md5,
)
from flatvol.data.idx import MNIST_FILE_STEMS
from flatvol.errors import DataError


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_download_checks_md5(http_root, tmp_path):
    url, served = http_root
    payload = np.random.default_rng(0).bytes(3 * (1 << 20) + 17)  # several stream chunks
    (served / "blob.bin").write_bytes(payload)
    dest = tmp_path / "out" / "blob.bin"
    assert download(url + "blob.bin", dest, _md5(payload), progress=False) == dest
    assert dest.read_bytes() == payload
    assert _leftovers(dest.parent) == ["blob.bin"]  # no temporary file left behind


def test_md5_mismatch_leaves_no_file(http_root, tmp_path, dh):
    url, served = http_root
    (served / "blob.bin").write_bytes(b"not what you expected")
    dest = tmp_path / "out" / "blob.bin"
    with pytest.raises(DataError) as e:
        download(url + "blob.bin", dest, "0" * 32, progress=False)
    msg = dh.one_line(e)
    assert "md5 expected " + "0" * 32 in msg and _md5(b"not what you expected") in msg
    assert _leftovers(dest.parent) == []
    # an existing file at dest is not replaced by a failed download
    dest.write_bytes(b"old")
    with pytest.raises(DataError):
        download(url + "blob.bin", dest, "0" * 32, progress=False)
    assert dest.read_bytes() == b"old" and _leftovers(dest.parent) == ["blob.bin"]


def test_gunzip_md5(http_root, tmp_path):
    url, served = http_root
    content = b"idx content " * 1000
    (served / "f.gz").write_bytes(gzip.compress(content))
    dest = tmp_path / "f.gz"
    download(url + "f.gz", dest, gunzip_md5=_md5(content), progress=False)
    assert gzip.decompress(dest.read_bytes()) == content
    assert file_md5(dest, gunzip=True) == _md5(content)
    dest.unlink()
    with pytest.raises(DataError, match="md5 of gunzipped content expected 1{32}, got"):
        download(url + "f.gz", dest, gunzip_md5="1" * 32, progress=False)
    assert _leftovers(tmp_path) == ["served"]
    (served / "plain.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="plain.gz: expected gzip data"):
        download(url + "plain.gz", dest, gunzip_md5="1" * 32, progress=False)
    assert _leftovers(tmp_path) == ["served"]


def test_http_errors(http_root, tmp_path, dh):
    url, _ = http_root
    with pytest.raises(DataError) as e:
        download(url + "missing.bin", tmp_path / "x", progress=False)
    assert "HTTP 404" in dh.one_line(e) and "missing.bin" in str(e.value)
    with pytest.raises(DataError, match="URL scheme expected http or https, got file"):
        download("file:///etc/hostname", tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()


def test_truncated_transfer_leaves_no_file(tmp_path, dh):
    class Liar(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"x" * 400)  # then close early

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Liar)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        dest = tmp_path / "out" / "f"
        with pytest.raises(DataError) as e:
            download(f"http://127.0.0.1:{server.server_address[1]}/f", dest, progress=False)
        dh.one_line(e)
        assert _leftovers(dest.parent) == []
    finally:
        server.shutdown()
        server.server_close()


def test_ensure_mnist_finds_local_files(tmp_path, dh):
    dh.write_fake_mnist(tmp_path / "a", n_train=20, n_test=10)
    assert ensure_mnist(tmp_path / "a") == tmp_path / "a"
    dh.write_fake_mnist(tmp_path / "b" / "mnist", n_train=20, n_test=10, gz=False)
    assert ensure_mnist(tmp_path / "b") == tmp_path / "b" / "mnist"
    with pytest.raises(DataError) as e:
        ensure_mnist(tmp_path / "c")
    msg = dh.one_line(e)
    assert all(stem in msg for stem in MNIST_FILE_STEMS) and "download=True" in msg


def test_ensure_mnist_rejects_wrong_content(http_root, tmp_path, dh):
    """Valid-looking IDX files that are not MNIST fail the content md5; nothing is kept."""
    url, served = http_root
    dh.write_fake_mnist(served / "mirror", n_train=20, n_test=10)
    with pytest.raises(DataError, match="every mirror failed; last: .*md5 of gunzipped content"):
        ensure_mnist(tmp_path / "data", download=True, mirrors=[url + "mirror/"], progress=False)
    assert _leftovers(tmp_path / "data" / "mnist") == []


def test_ensure_mnist_download_real(http_root, tmp_path, shared_data):
    """The shared MNIST served over loopback: a dead mirror is skipped, the content md5s pass,
    and the downloaded copy gives the same task as the shared folder."""
    url, served = http_root
    shutil.copytree(shared_data / "mnist", served / "good")
    # one file present already: only the three others are fetched
    (tmp_path / "data" / "mnist").mkdir(parents=True)
    shutil.copy(shared_data / "mnist" / "t10k-labels-idx1-ubyte.gz", tmp_path / "data" / "mnist")
    got = ensure_mnist(
        tmp_path / "data", download=True, mirrors=[url + "dead/", url + "good/"], progress=False
    )
    assert got == tmp_path / "data" / "mnist"
    assert sorted(p.name for p in got.iterdir()) == sorted(s + ".gz" for s in MNIST_FILE_STEMS)
    a = load_task(data_dir=tmp_path / "data", attack_size=10)
    b = load_task(data_dir=shared_data, attack_size=10)
    assert np.array_equal(a.S.index, b.S.index) and bool((a.E.x == b.E.x).all())


def test_shared_mnist_content_md5s(shared_data):
    """The content checksums carried for downloads are those of the real MNIST."""
    for f in MNIST_FILES:
        assert file_md5(shared_data / "mnist" / (f.stem + ".gz"), gunzip=True) == f.raw_md5


def _cifar_tarball(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_ensure_cifar10_extracts_only_batches(tmp_path, dh):
    batches = tmp_path / "make"
    rng = np.random.default_rng(0)
    for name in (*CIFAR_TRAIN_BATCHES, CIFAR_TEST_BATCH):
        x = rng.integers(0, 256, size=(4, 32, 32, 3), dtype=np.uint8)
        dh.write_cifar_batch(batches / name, x, np.arange(4), protocol=2)
    members = {f"cifar-10-batches-py/{p.name}": p.read_bytes() for p in batches.iterdir()}
    members["cifar-10-batches-py/batches.meta"] = b"meta"
    members["../escape.txt"] = b"must not be written"
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "cifar-10-python.tar.gz").write_bytes(_cifar_tarball(members))
    out = ensure_cifar10(data_dir)
    assert out == data_dir / "cifar-10-batches-py"
    assert not (tmp_path / "escape.txt").exists()
    td = load_task("cifar10", train_size=4, test_size=1, data_dir=data_dir, classes="0v1")
    assert td.S.x.shape == (4, 3, 32, 32)


def test_ensure_cifar10_download_checks_md5(http_root, tmp_path):
    url, served = http_root
    (served / "cifar-10-python.tar.gz").write_bytes(_cifar_tarball({"x": b"not cifar"}))
    with pytest.raises(DataError, match=f"md5 expected {CIFAR10_MD5}"):
        ensure_cifar10(
            tmp_path / "d", download=True, url=url + "cifar-10-python.tar.gz", progress=False
        )
    assert _leftovers(tmp_path / "d") == []
    with pytest.raises(DataError, match="download=True"):
        ensure_cifar10(tmp_path / "d")
