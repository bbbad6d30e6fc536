"""Build the MNIST subset shipped inside flatvol (src/flatvol/data/embedded/mnist_subset.npz).

Takes the first N_TRAIN training and first N_TEST test images (file order, no shuffling) of the
full MNIST IDX files, after checking that their gunzipped content has the published md5s, and
writes them as a deflate-compressed npz with fixed zip timestamps, so that rebuilding gives the
same bytes (given the same zlib).

    .venv/bin/python scripts/make_embedded_mnist.py --source /work/shared/data/mnist
"""

from __future__ import annotations

import argparse
import io
import sys
import zipfile
from pathlib import Path

import numpy as np

from flatvol.data.download import MNIST_FILES, file_md5
from flatvol.data.idx import find_mnist_file, load_mnist_dir

N_TRAIN = 10000
N_TEST = 2000
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src/flatvol/data/embedded/mnist_subset.npz"


def write_deterministic_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez_compressed stamps each member with the current time; this does not."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, array in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue(), compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)


def build(source: Path, out: Path, n_train: int = N_TRAIN, n_test: int = N_TEST) -> str:
    """Write the subset of the MNIST files in `source` to `out`; return the md5 of `out`."""
    for f in MNIST_FILES:
        path = find_mnist_file(source, f.stem)
        if path is None:
            sys.exit(f"{source}: missing {f.stem}[.gz]")
        got = file_md5(path, gunzip=path.suffix == ".gz")
        if got != f.raw_md5:
            sys.exit(f"{path}: md5 of IDX content expected {f.raw_md5}, got {got}")
    full = load_mnist_dir(source)
    arrays = {
        "x_train": full.x_train[:n_train],
        "y_train": full.y_train[:n_train].astype(np.uint8),
        "x_test": full.x_test[:n_test],
        "y_test": full.y_test[:n_test].astype(np.uint8),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    write_deterministic_npz(out, arrays)
    return file_md5(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=Path("/work/shared/data/mnist"))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--n-train", type=int, default=N_TRAIN)
    parser.add_argument("--n-test", type=int, default=N_TEST)
    args = parser.parse_args()
    md5 = build(args.source, args.out, args.n_train, args.n_test)
    print(f"{args.out}: {args.out.stat().st_size} bytes, md5 {md5}")


if __name__ == "__main__":
    main()
