"""Small fake datasets in each dataset's real on-disk format, where `sources.py` looks for them.

The paper's datasets (MNIST, Fashion-MNIST, CIFAR-10/100, SVHN, notMNIST, TinyImageNet) cannot be
downloaded everywhere. ``write_fake_datasets(root)`` writes a few MB that the package's loaders read
exactly as they read the real files (the same readers and checks), so that every scenario,
network and notebook can run end to end offline; the numbers they give mean nothing.

What is faithful: file formats, folder layout, class counts (CIFAR-100: 100, TinyImageNet: 200
wnids), train/test splits, dtypes and shapes, the real archives' quirks (an unreadable notMNIST
PNG, greyscale JPEGs among TinyImageNet's RGB ones, an unsorted wnids.txt, SVHN's digit 0 stored
as label 10). What is not: the pixels. Each class has its own blocky colour pattern and every image
is that pattern plus noise, so a network (or a nearest-class-mean rule) does better than chance.

The loaders check the md5 sum of the CIFAR and SVHN files, which fakes can never match. The
generator therefore writes a manifest (``sources.FAKE_MANIFEST``) with the md5 of every file it
wrote; the loaders check the files against it instead of the official sums, and warn that the data
is fake. Without the manifest, or with a changed file, the fakes are rejected like any corrupt copy.
The manifest replaces the sums only: every other check of the readers still applies (anyone can
write a manifest).

Same arguments -> byte-identical files (no timestamps: the MAT-file header date is fixed).
Command line: ``python -m adaqpacknet.data.fake ROOT [--per-class N] [--seed S]``.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import io
import json
import pickle
import shutil
import struct
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from .sources import FAKE_MANIFEST, NOTMNIST_CLASSES, fake_manifest

FAKE_SOURCES: tuple[str, ...] = ("mnist", "fashion_mnist", "cifar10", "cifar100", "svhn", "notmnist", "tinyimagenet")

# (classes, image shape C x H x W) of every source, as the real dataset has them.
SHAPES: dict[str, tuple[int, tuple[int, int, int]]] = {
    "mnist": (10, (1, 28, 28)),
    "fashion_mnist": (10, (1, 28, 28)),
    "cifar10": (10, (3, 32, 32)),
    "cifar100": (100, (3, 32, 32)),
    "svhn": (10, (3, 32, 32)),
    "notmnist": (10, (1, 28, 28)),
    "tinyimagenet": (200, (3, 64, 64)),
}

# The paths under the data root that each source owns (cleared before it is rewritten).
OWNED_PATHS: dict[str, tuple[str, ...]] = {
    "mnist": ("MNIST",),
    "fashion_mnist": ("FashionMNIST",),
    "cifar10": ("cifar-10-batches-py",),
    "cifar100": ("cifar-100-python",),
    "svhn": ("train_32x32.mat", "test_32x32.mat"),
    "notmnist": ("notMNIST_small",),
    "tinyimagenet": ("tiny-imagenet-200",),
}

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_GRID = 4  # class patterns are GRID x GRID blocks per channel
_CONTRAST = 0.3  # how far each class's pattern departs from the shared base
_MAT_DESCRIPTION = b"MATLAB 5.0 MAT-file, written by adaqpacknet.data.fake (fake data)"

Split = tuple[np.ndarray, np.ndarray]  # uint8 images (N, C, H, W), int64 labels (N,)


# ----------------------------------------------------------------------------- images

def fake_images(num_classes: int, per_class: Sequence[int], shape: tuple[int, int, int], seed: int | Sequence[int],
                *, grain: int = 1) -> list[Split]:
    """One (images, labels) split per entry of ``per_class``, all drawn around the same class patterns.

    Images are uint8 (N, C, H, W) in a seeded shuffled order (as real files interleave classes);
    labels are int64 in 0..num_classes-1 with ``per_class[i]`` images of every class in split i.
    Each class's pattern is a GRID x GRID block image per channel; every sample adds its own
    brightness shift and noise, so no two images are equal in practice. The noise is drawn on
    ``grain`` x ``grain`` pixel blocks (JPEG-stored images stay small with grain 8).
    """
    channels, height, width = shape
    if height % _GRID or width % _GRID or height % grain or width % grain:
        raise ValueError(f"image shape {shape}: height and width must be multiples of {_GRID} and of grain={grain}")
    rng = np.random.default_rng(seed)
    # Classes share a base pattern and each departs from it by _CONTRAST: learnable, not trivial
    # (with the defaults a nearest-class-mean rule gets 90-100% on the 10- and 100-class sources, 65%
    # on TinyImageNet's 200).
    base = rng.uniform(0.0, 1.0, size=(1, channels, _GRID, _GRID))
    patterns = (1 - _CONTRAST) * base + _CONTRAST * rng.uniform(0.0, 1.0, size=(num_classes, channels, _GRID, _GRID))
    patterns = patterns.repeat(height // _GRID, axis=2).repeat(width // _GRID, axis=3)
    splits = []
    for count in per_class:
        labels = rng.permutation(np.repeat(np.arange(num_classes, dtype=np.int64), count))
        brightness = rng.normal(0.0, 12.0, size=(len(labels), 1, 1, 1))
        noise = rng.normal(0.0, 40.0, size=(len(labels), channels, height // grain, width // grain))
        noise = noise.repeat(grain, axis=2).repeat(grain, axis=3)
        images = 30.0 + 190.0 * patterns[labels] + brightness + noise
        splits.append((np.clip(np.rint(images), 0, 255).astype(np.uint8), labels))
    return splits


# ----------------------------------------------------------------------------- writers, one per format

def write_idx(path: Path, array: np.ndarray, *, compress: bool = False) -> Path:
    """Write a uint8 array as an IDX file (the MNIST format); ``compress`` appends .gz (gzip, mtime 0)."""
    data = b"\x00\x00\x08" + bytes([array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data += np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        path = path.with_name(path.name + ".gz")
        with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as f:
            f.write(data)  # mtime 0 and no name in the header: the same bytes on every run
    else:
        path.write_bytes(data)
    return path


def write_mnist_family(folder: Path, train: Split, test: Split, *, compress: bool = False) -> list[Path]:
    """The four IDX files of MNIST or Fashion-MNIST in ``folder`` (torchvision: <root>/MNIST/raw)."""
    written = []
    for (images, labels), prefix in ((train, "train"), (test, "t10k")):
        written.append(write_idx(Path(folder) / f"{prefix}-images-idx3-ubyte", images.reshape(len(images), 28, 28), compress=compress))
        written.append(write_idx(Path(folder) / f"{prefix}-labels-idx1-ubyte", labels.astype(np.uint8), compress=compress))
    return written


class _Python2Pickler(pickle._Pickler):
    """Protocol 2 with bytes written as Python 2 strings (BINSTRING), as the published CIFAR files
    were written by Python 2's cPickle: the image rows are raw bytes (Python 3 would write them
    as latin-1 text, half as large again), and loading needs encoding="latin1", as the real ones."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj: bytes) -> None:
        self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str


def _pickle(path: Path, entry: dict) -> None:
    buffer = io.BytesIO()
    _Python2Pickler(buffer, protocol=2).dump(entry)
    path.write_bytes(buffer.getvalue())


def write_cifar10(root: Path, train: Split, test: Split, *, batches: int = 5) -> Path:
    """<root>/cifar-10-batches-py: data_batch_1..5, test_batch, batches.meta (the python version)."""
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    images, labels = train
    for b, (part_x, part_y) in enumerate(zip(np.array_split(images, batches), np.array_split(labels, batches)), start=1):
        _pickle(folder / f"data_batch_{b}", _cifar_entry(f"training batch {b} of {batches}", part_x, {"labels": part_y}))
    _pickle(folder / "test_batch", _cifar_entry("testing batch 1 of 1", test[0], {"labels": test[1]}))
    _pickle(folder / "batches.meta", {"num_cases_per_batch": len(images) // batches, "label_names": list(CIFAR10_CLASSES),
                                      "num_vis": 3 * 32 * 32})
    return folder


def write_cifar100(root: Path, train: Split, test: Split) -> Path:
    """<root>/cifar-100-python: train, test, meta (fine and coarse labels; coarse = fine // 5)."""
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for name, (images, labels) in (("train", train), ("test", test)):
        _pickle(folder / name, _cifar_entry(name, images, {"fine_labels": labels, "coarse_labels": labels // 5}))
    _pickle(folder / "meta", {"fine_label_names": [f"fine_{i:02d}" for i in range(100)],
                              "coarse_label_names": [f"coarse_{i:02d}" for i in range(20)]})
    return folder


def _cifar_entry(batch_label: str, images: np.ndarray, labels: dict[str, np.ndarray]) -> dict:
    # Rows are the image's R, G and B planes one after the other: exactly NCHW flattened.
    return {"batch_label": batch_label, **{k: [int(y) for y in v] for k, v in labels.items()},
            "data": np.ascontiguousarray(images.reshape(len(images), -1), dtype=np.uint8),
            "filenames": [f"fake_{i:05d}.png" for i in range(len(images))]}


def write_svhn(root: Path, train: Split, test: Split) -> list[Path]:
    """<root>/train_32x32.mat and test_32x32.mat: X uint8 (32, 32, 3, N), y double (N, 1), 0 stored as 10."""
    import scipy.io

    Path(root).mkdir(parents=True, exist_ok=True)
    written = []
    for name, (images, labels) in (("train_32x32.mat", train), ("test_32x32.mat", test)):
        buffer = io.BytesIO()
        y = np.where(labels == 0, 10, labels).astype(np.float64).reshape(-1, 1)
        scipy.io.savemat(buffer, {"X": np.ascontiguousarray(images.transpose(2, 3, 1, 0)), "y": y})
        data = bytearray(buffer.getvalue())
        data[:116] = _MAT_DESCRIPTION.ljust(116)  # the header's text holds the write time: fix it
        (Path(root) / name).write_bytes(bytes(data))
        written.append(Path(root) / name)
    return written


def write_notmnist(root: Path, images: np.ndarray, labels: np.ndarray, *, corrupt: int = 1) -> Path:
    """<root>/notMNIST_small/<A..J>/<base64 font name>.png, greyscale 28x28 PNGs.

    ``corrupt`` unreadable files go into folder A: the published archive holds such files too, and
    the loader must skip them.
    """
    from PIL import Image

    folder = Path(root) / "notMNIST_small"
    for letter in NOTMNIST_CLASSES:
        (folder / letter).mkdir(parents=True, exist_ok=True)
    for i, (image, label) in enumerate(zip(images, labels)):
        name = base64.b64encode(f"Fake Font {i:05d}.ttf".encode()).decode() + ".png"  # as the real names
        Image.fromarray(image[0], "L").save(folder / NOTMNIST_CLASSES[label] / name)
    for i in range(corrupt):
        (folder / "A" / f"corrupt-{i}.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    return folder


def fake_wnids(num_classes: int = 200) -> list[str]:
    """WordNet-like ids in sorted order (the loader numbers classes by sorted wnid)."""
    return [f"n{1000000 + 7919 * c:08d}" for c in range(num_classes)]


def write_tinyimagenet(root: Path, train: Split, val: Split, *, seed: int | Sequence[int] = 0, grey_every: int = 37) -> Path:
    """<root>/tiny-imagenet-200: wnids.txt (unsorted), words.txt, train/<wnid>/images/<wnid>_<i>.JPEG,
    val/images/val_<i>.JPEG and val/val_annotations.txt (tab-separated, with bounding boxes).

    Every ``grey_every``-th training image is stored as a greyscale JPEG, as some real ones are.
    (The unlabelled test/ folder of the archive is not written: nothing reads it.)
    """
    from PIL import Image

    folder = Path(root) / "tiny-imagenet-200"
    num_classes = int(max(train[1].max(), val[1].max())) + 1
    wnids = fake_wnids(num_classes)
    folder.mkdir(parents=True, exist_ok=True)
    order = np.random.default_rng(seed).permutation(num_classes)
    (folder / "wnids.txt").write_text("".join(f"{wnids[c]}\n" for c in order))
    (folder / "words.txt").write_text("".join(f"{w}\tfake class {c}\n" for c, w in enumerate(wnids)))

    def save(image: np.ndarray, path: Path, grey: bool) -> None:
        hwc = image.transpose(1, 2, 0)
        picture = Image.fromarray(hwc.mean(axis=2).round().astype(np.uint8), "L") if grey else Image.fromarray(hwc, "RGB")
        picture.save(path, format="JPEG", quality=75)

    counts = np.zeros(num_classes, dtype=np.int64)
    for i, (image, label) in enumerate(zip(*train)):
        images_dir = folder / "train" / wnids[label] / "images"
        images_dir.mkdir(parents=True, exist_ok=True)
        save(image, images_dir / f"{wnids[label]}_{counts[label]}.JPEG", grey=i % grey_every == 0)
        counts[label] += 1
    (folder / "val" / "images").mkdir(parents=True, exist_ok=True)
    annotations = []
    for i, (image, label) in enumerate(zip(*val)):
        save(image, folder / "val" / "images" / f"val_{i}.JPEG", grey=False)
        annotations.append(f"val_{i}.JPEG\t{wnids[label]}\t0\t0\t63\t63\n")
    (folder / "val" / "val_annotations.txt").write_text("".join(annotations))
    return folder


# ----------------------------------------------------------------------------- everything at once

def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def _clear_owned(root: Path, sources: Sequence[str]) -> None:
    """Remove what the sources own under ``root``, but never data this generator did not write."""
    existing = [root / p for s in sources for p in OWNED_PATHS[s] if (root / p).exists()]
    if existing and not (root / FAKE_MANIFEST).is_file():
        raise FileExistsError(
            f"{root} already holds {', '.join(str(p.relative_to(root)) for p in existing)} and no {FAKE_MANIFEST}: "
            "refusing to overwrite what may be real data; choose an empty folder"
        )
    for path in existing:
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def source_images(name: str, *, per_class: int, test_per_class: int, seed: int) -> tuple[Split, Split]:
    """The (train, test) images and labels `write_fake_datasets` writes for source ``name``, in the
    order they are written (what a lossless loader must return; TinyImageNet's JPEGs are lossy)."""
    if name not in FAKE_SOURCES:
        raise ValueError(f"unknown source {name!r}; valid choices: {', '.join(FAKE_SOURCES)}")
    num_classes, shape = SHAPES[name]
    grain = 8 if name == "tinyimagenet" else 1  # TinyImageNet is JPEG: block noise keeps files near 1 KB
    # Seeded by (seed, source): each source has its own patterns, whichever others are written.
    train, test = fake_images(num_classes, [per_class, test_per_class], shape, [seed, FAKE_SOURCES.index(name)], grain=grain)
    return train, test


def write_fake_datasets(root: str | Path, *, per_class: int = 8, test_per_class: int | None = None, seed: int = 0,
                        sources: Sequence[str] = FAKE_SOURCES) -> dict[str, Path]:
    """Write fake ``sources`` under ``root`` in their real formats; returns source -> its main path.

    per_class: training images per class (every source, CIFAR-100's 100 and TinyImageNet's 200
    classes included). test_per_class: test images per class (default max(2, per_class // 4));
    notMNIST has no official split, so its folders hold per_class + test_per_class images per
    letter and the loader's fixed 80/20 split applies. seed: every pixel; same arguments ->
    byte-identical files. Earlier fakes of the same sources under ``root`` are replaced; real data
    (a root without the manifest) is never overwritten. The manifest ``root/FAKE_MANIFEST`` lists
    the md5 of every file written, for all sources generated so far.
    """
    root = Path(root)
    unknown = [s for s in sources if s not in FAKE_SOURCES]
    if unknown or not sources:
        raise ValueError(f"sources={list(sources)!r}: give one or more of {', '.join(FAKE_SOURCES)}")
    if test_per_class is None:
        test_per_class = max(2, per_class // 4)
    for name, value, least in (("per_class", per_class, 2), ("test_per_class", test_per_class, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
            # per_class >= 2: every class needs a training image left after the validation hold-out
            raise ValueError(f"{name} must be an int >= {least}, got {value!r}")
    root.mkdir(parents=True, exist_ok=True)
    _clear_owned(root, sources)

    written: dict[str, Path] = {}
    for name in sources:
        train, test = source_images(name, per_class=per_class, test_per_class=test_per_class, seed=seed)
        if name == "notmnist":
            images, labels = (np.concatenate(pair) for pair in zip(train, test))
            written[name] = write_notmnist(root, images, labels)
        elif name in ("mnist", "fashion_mnist"):
            folder = root / OWNED_PATHS[name][0] / "raw"
            write_mnist_family(folder, train, test)
            written[name] = folder
        elif name == "cifar10":
            written[name] = write_cifar10(root, train, test)
        elif name == "cifar100":
            written[name] = write_cifar100(root, train, test)
        elif name == "svhn":
            written[name] = write_svhn(root, train, test)[0]
        else:
            written[name] = write_tinyimagenet(root, train, test, seed=[seed, FAKE_SOURCES.index(name)])
    _write_manifest(root, sources, {"per_class": int(per_class), "test_per_class": int(test_per_class), "seed": int(seed)})
    return written


def _write_manifest(root: Path, sources: Sequence[str], settings: dict[str, int]) -> None:
    """Record ``sources`` (their settings and the md5 of every file they own) in the manifest,
    keeping the entries of sources written earlier and not rewritten now."""
    path = root / FAKE_MANIFEST
    old = fake_manifest(root)  # the loaders' checked reader: a FIFO or a huge file there is refused
    rewritten = tuple(p for s in sources for p in OWNED_PATHS[s])
    md5 = {k: v for k, v in old.get("md5", {}).items() if k.split("/")[0] not in rewritten}
    for owned in rewritten:
        top = root / owned
        for f in [top] if top.is_file() else top.rglob("*"):
            if f.is_file():
                md5[f.relative_to(root).as_posix()] = _md5(f)
    manifest = {
        "generator": "adaqpacknet.data.fake",
        "note": "generated fake data in the real formats: results computed on it mean nothing",
        "sources": {**old.get("sources", {}), **{s: settings for s in sources}},
        "md5": md5,
    }
    path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


def _size(root: Path, name: str) -> tuple[int, int]:
    """(files, bytes) that source ``name`` owns under ``root``."""
    tops = [root / p for p in OWNED_PATHS[name]]
    files = [f for top in tops for f in ([top] if top.is_file() else top.rglob("*")) if f.is_file()]
    return len(files), sum(f.stat().st_size for f in files)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m adaqpacknet.data.fake ROOT``: write the fake datasets, print what was written."""
    parser = argparse.ArgumentParser(prog="python -m adaqpacknet.data.fake", description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="data folder to write into (a scenario's data_root)")
    parser.add_argument("--per-class", type=int, default=8, help="training images per class (default 8)")
    parser.add_argument("--test-per-class", type=int, default=None, help="test images per class (default max(2, per_class // 4))")
    parser.add_argument("--seed", type=int, default=0, help="seed of every pixel (default 0)")
    parser.add_argument("--sources", nargs="+", default=list(FAKE_SOURCES), metavar="SOURCE",
                        help=f"sources to write (default all: {' '.join(FAKE_SOURCES)})")
    args = parser.parse_args(argv)
    try:
        written = write_fake_datasets(args.root, per_class=args.per_class, test_per_class=args.test_per_class,
                                      seed=args.seed, sources=args.sources)
    except (ValueError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    total = 0
    for name, path in written.items():
        count, size = _size(args.root, name)
        total += size
        print(f"{name:14s} {count:5d} files {size / 1e6:7.2f} MB  {path}")
    print(f"fake data written to {args.root} ({total / 1e6:.2f} MB; manifest {FAKE_MANIFEST}); its results mean nothing")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
