"""Raw image sources: every dataset the benchmarks use, loaded as uint8 NCHW tensors.

Each loader returns a `Source` with a train and a test `ImageSet`. Nothing here normalises or
splits for validation; that is the job of `scenarios.py`. Sources are cached in a small LRU keyed
by (name, root, ...) because tests and the learner build scenarios repeatedly.

Where each source is looked for (``root`` is the data folder passed by the caller):

- mnist, fashion_mnist: ``<root>/MNIST/raw``, ``<root>/FashionMNIST/raw`` (torchvision layout, IDX
  files uncompressed or ``.gz``); fashion_mnist also in Debian's ``/usr/share/datasets/fashion-mnist``
  (``apt-get install dataset-fashion-mnist``), overridable by $ADAQPACKNET_FASHION_MNIST_DIR.
- cifar10, cifar100, svhn: torchvision layout (``<root>/cifar-10-batches-py``,
  ``<root>/cifar-100-python``, ``<root>/train_32x32.mat`` + ``<root>/test_32x32.mat``).
- notmnist: ``<root>/notMNIST_small/<A..J>/*.png``; fixed seed-0 stratified 80/20 split.
- tinyimagenet: ``<root>/tiny-imagenet-200`` (published layout); test = the val folder.
- digits: scikit-learn's bundled 8x8 digits; fixed seed-0 stratified 80/20 split.

A root written by `adaqpacknet.data.fake` holds a manifest (FAKE_MANIFEST) naming the fake sources
and the md5 of every fake file: loading a fake source warns that its results mean nothing, and
torchvision checks the CIFAR and SVHN files against the manifest's sums instead of the official
ones (which fakes cannot match). A file changed after generation still fails the check.
"""

from __future__ import annotations

import functools
import gzip
import json
import os
import struct
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from tqdm import tqdm

from ..results import CorruptFileError, atomic_path

SOURCES: tuple[str, ...] = (
    "mnist", "fashion_mnist", "cifar10", "cifar100", "svhn", "notmnist", "tinyimagenet", "digits",
)

# Debian's dataset-fashion-mnist package; read at call time (not import time) so that tests can
# monkeypatch either this constant or the environment variable.
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_DIR_ENV = "ADAQPACKNET_FASHION_MNIST_DIR"

NOTMNIST_URL = "http://yaroslavvb.com/upload/notMNIST/notMNIST_small.tar.gz"
TINYIMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
TINYIMAGENET_CACHE = "adaqpacknet_cache.npz"
_CACHE_VERSION = 1  # bump when the cache's content or layout changes

# Written by adaqpacknet.data.fake next to the fake files: {"md5": {path relative to root: md5}, ...}.
FAKE_MANIFEST = "adaqpacknet-fake-data.json"

NOTMNIST_CLASSES = tuple("ABCDEFGHIJ")
_IDX_FILES = {  # split -> (images, labels) base names of the MNIST-family IDX files
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are missing (or fail torchvision's checksum).

    The message names the dataset, every path looked in, and how to obtain the data.
    """


@dataclass(frozen=True, eq=False)
class ImageSet:
    """Images as uint8 (N, C, H, W) and integer labels (N,) in 0..num_classes-1."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        # Catch loader bugs here rather than as shape errors deep inside training.
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be uint8 NCHW, got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"labels must be int64 of shape ({self.images.shape[0]},), "
                f"got {self.labels.dtype} {tuple(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True, eq=False)
class Source:
    """One dataset: its train and test splits and the names of its classes (indexed by label)."""

    name: str
    train: ImageSet
    test: ImageSet
    class_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


# ----------------------------------------------------------------------------- helpers

def stratified_split(labels: torch.Tensor, fraction: float, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Split indices of ``labels`` into (kept, held_out), holding out ``fraction`` of every class.

    Per class, round(n * fraction) samples are held out, but at least one and at most n - 1 when
    the class has two or more samples, so tiny datasets never get an empty validation split.
    Both index tensors are sorted (the source order is kept).
    """
    labels_np = labels.numpy()
    held: list[np.ndarray] = []
    for c in np.unique(labels_np):  # sorted, so the draws are in a fixed order
        idx = np.flatnonzero(labels_np == c)
        n_held = int(round(len(idx) * fraction))
        if len(idx) >= 2:
            n_held = min(max(n_held, 1), len(idx) - 1)
        held.append(rng.permutation(idx)[:n_held])
    held_idx = np.sort(np.concatenate(held)) if held else np.zeros(0, dtype=np.int64)
    mask = np.ones(len(labels_np), dtype=bool)
    mask[held_idx] = False
    return torch.from_numpy(np.flatnonzero(mask)), torch.from_numpy(held_idx.astype(np.int64))


def _split_fixed(images: torch.Tensor, labels: torch.Tensor) -> tuple[ImageSet, ImageSet]:
    """The fixed (seed 0, independent of the run seed) stratified 80/20 train/test split."""
    train_idx, test_idx = stratified_split(labels, 0.2, np.random.default_rng(0))
    return ImageSet(images[train_idx], labels[train_idx]), ImageSet(images[test_idx], labels[test_idx])


# The MNIST family's IDX files: at most this many values are read from one (60,000 28x28 images
# are 47 M); a header that claims more is refused before any payload is read.
MAX_IDX_VALUES = 1 << 28


def _read_idx(path: Path, item_shape: tuple[int, ...]) -> np.ndarray:
    """Read a uint8 IDX file (the MNIST format), gzip-compressed or not, header first: its
    dimensions must be (count, *item_shape) and its payload exactly that many bytes, read with a
    bounded read (a small .gz cannot expand into gigabytes). Errors name the file."""
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            magic = f.read(4)
            if len(magic) < 4 or magic[:3] != b"\x00\x00\x08":
                raise CorruptFileError(f"{path} is not a uint8 IDX file (magic bytes {magic.hex() or 'missing'})")
            if magic[3] != 1 + len(item_shape):
                raise CorruptFileError(f"{path} has {magic[3]} dimensions; expected {1 + len(item_shape)}")
            header = f.read(4 * magic[3])
            if len(header) < 4 * magic[3]:
                raise CorruptFileError(f"{path}: the header is truncated")
            count, *item = struct.unpack(f">{magic[3]}I", header)
            if tuple(item) != item_shape:
                raise CorruptFileError(f"{path} holds items of shape {tuple(item)}; expected {item_shape}")
            size = count * int(np.prod(item_shape, dtype=np.int64))
            if size > MAX_IDX_VALUES:
                raise CorruptFileError(f"{path}: the header claims {count} items ({size} values, more than {MAX_IDX_VALUES})")
            data = f.read(size + 1)
    except (OSError, EOFError, zlib.error) as error:  # gzip.BadGzipFile is an OSError
        raise CorruptFileError(f"{path} cannot be read ({type(error).__name__}: {error}); a truncated or damaged file?") from error
    if len(data) != size:
        raise CorruptFileError(f"{path}: the header says {count} items of {item_shape} ({size} bytes) but the file holds {len(data) if len(data) <= size else 'more'}")
    return np.frombuffer(data, dtype=np.uint8).reshape(count, *item_shape)


def _progress(iterable: Iterable, total: int, desc: str) -> Iterable:
    # Text bar (not tqdm.auto: widgets never update in headless notebook logs), refreshed rarely.
    return tqdm(iterable, total=total, desc=desc, mininterval=5.0)


def _decode_images(paths: list[Path], mode: str, size: int, desc: str) -> tuple[np.ndarray, np.ndarray]:
    """Decode image files with PIL into uint8 (N, C, size, size); returns (images, ok_mask).

    Unreadable files are skipped (their ok_mask entry is False); the caller warns once.
    Threads help because PIL releases the GIL while decoding.
    """
    from PIL import Image

    def read(path: Path) -> np.ndarray | None:
        try:
            with Image.open(path) as im:
                im = im.convert(mode)  # grey JPEGs in TinyImageNet become RGB here
                if im.size != (size, size):
                    im = im.resize((size, size), Image.BILINEAR)
                return np.asarray(im, dtype=np.uint8)
        except (OSError, SyntaxError, ValueError):  # what PIL raises for truncated/corrupt files
            return None

    channels = 3 if mode == "RGB" else 1
    out = np.zeros((len(paths), channels, size, size), dtype=np.uint8)
    ok = np.zeros(len(paths), dtype=bool)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for i, array in enumerate(_progress(pool.map(read, paths), len(paths), desc)):
            if array is not None:
                out[i] = array.reshape(size, size, channels).transpose(2, 0, 1)
                ok[i] = True
    return out, ok


def _warn_skipped(name: str, count: int) -> None:
    if count:
        warnings.warn(f"{name}: skipped {count} unreadable image file(s)", RuntimeWarning, stacklevel=3)


def fashion_mnist_system_dir() -> Path:
    """The system-wide Fashion-MNIST folder: $ADAQPACKNET_FASHION_MNIST_DIR or Debian's package folder."""
    return Path(os.environ.get(FASHION_MNIST_DIR_ENV) or DEBIAN_FASHION_MNIST_DIR)


# ----------------------------------------------------------------------------- where files live

_TV_CLASS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "cifar10": "CIFAR10",
             "cifar100": "CIFAR100", "svhn": "SVHN"}


def _mnist_dirs(name: str, root: Path) -> list[Path]:
    dirs = [root / _TV_CLASS[name] / "raw"]
    if name == "fashion_mnist":
        dirs.append(fashion_mnist_system_dir())
    return dirs


def _idx_files(folder: Path) -> dict[str, Path] | None:
    """The four IDX files in ``folder`` (each uncompressed or .gz), or None if any is missing."""
    found = {}
    for base in (*_IDX_FILES["train"], *_IDX_FILES["test"]):
        for candidate in (folder / base, folder / f"{base}.gz"):
            if candidate.is_file():
                found[base] = candidate
                break
        else:
            return None
    return found


def _looked_in(name: str, root: Path) -> list[Path]:
    """Every path a source is looked for, in order (for the missing-data message)."""
    if name in ("mnist", "fashion_mnist"):
        return _mnist_dirs(name, root)
    return {
        "cifar10": [root / "cifar-10-batches-py"],
        "cifar100": [root / "cifar-100-python"],
        "svhn": [root / "train_32x32.mat", root / "test_32x32.mat"],
        "notmnist": [root / "notMNIST_small"],
        "tinyimagenet": [root / "tiny-imagenet-200"],
        "digits": [],
    }[name]


def _instructions(name: str, root: Path) -> str:
    tv = ("Either pass download=True (needs internet), or run\n"
          f"  python -c \"import torchvision; torchvision.datasets.{_TV_CLASS.get(name)}('{root}', download=True)\"")
    return {
        "mnist": tv + f"\nor download the four *-ubyte.gz files from https://ossci-datasets.s3.amazonaws.com/mnist/ "
                      f"into {root / 'MNIST' / 'raw'} (gzip-compressed or not).",
        "fashion_mnist": "Install the Debian package (no internet needed with a local mirror):\n"
                         "  sudo apt-get install dataset-fashion-mnist\n"
                         f"or point ${FASHION_MNIST_DIR_ENV} at a folder holding the four *-ubyte(.gz) files.\n"
                         + tv + "\nor download the four *-ubyte.gz files from "
                         "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/ "
                         f"into {root / 'FashionMNIST' / 'raw'}.",
        "cifar10": tv + "\nor: wget https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz && "
                        f"tar -xzf cifar-10-python.tar.gz -C {root}",
        "cifar100": tv + "\nor: wget https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz && "
                         f"tar -xzf cifar-100-python.tar.gz -C {root}",
        "svhn": "Either pass download=True (needs internet), or run\n"
                f"  python -c \"import torchvision as t; [t.datasets.SVHN('{root}', split=s, download=True) "
                "for s in ('train', 'test')]\"\n"
                "or download http://ufldl.stanford.edu/housenumbers/train_32x32.mat and "
                f"http://ufldl.stanford.edu/housenumbers/test_32x32.mat into {root}.",
        "notmnist": f"Automatic download is not supported. Download {NOTMNIST_URL} and extract it into {root}:\n"
                    f"  wget {NOTMNIST_URL} && tar -xzf notMNIST_small.tar.gz -C {root}\n"
                    f"(this creates {root / 'notMNIST_small'}/A ... J with PNG files).",
        "tinyimagenet": f"Automatic download is not supported. Download {TINYIMAGENET_URL} and unzip it into {root}:\n"
                        f"  wget {TINYIMAGENET_URL} && unzip tiny-imagenet-200.zip -d {root}\n"
                        f"(this creates {root / 'tiny-imagenet-200'} with wnids.txt, train/ and val/).",
    }[name]


def _missing_detail(paths: list[Path]) -> str:
    """Name the missing paths, each collapsed into its top-most missing folder."""
    shown: list[Path] = []
    for p in paths:
        while not p.parent.exists() and p.parent != p:
            p = p.parent
        if p not in shown:
            shown.append(p)
    return "missing " + ", ".join(str(p) for p in shown)


def _not_found(name: str, root: Path, detail: str = "") -> DatasetNotFoundError:
    looked = "\n".join(f"  {p}" for p in _looked_in(name, root))
    return DatasetNotFoundError(
        f"Dataset '{name}' not found{' (' + detail + ')' if detail else ''}. Looked in:\n{looked}\n"
        f"{_instructions(name, root)}"
    )


def check_source(name: str, root: str | Path, download: bool = False) -> None:
    """Raise DatasetNotFoundError if ``name``'s files are absent; checks existence only (fast).

    With ``download=True`` the torchvision sources pass (torchvision fetches them on load).
    """
    _validate_name(name)
    root = Path(root).expanduser()
    if name == "digits":
        return
    if name in ("mnist", "fashion_mnist"):
        if download or any(_idx_files(d) for d in _mnist_dirs(name, root)):
            return
        raise _not_found(name, root)
    if name in ("cifar10", "cifar100", "svhn"):
        import torchvision.datasets as tvd

        cls = getattr(tvd, _TV_CLASS[name])
        if name == "svhn":
            files = [root / cls.split_list[s][1] for s in ("train", "test")]
        else:
            folder = root / cls.base_folder
            files = [folder / f for f, _ in cls.train_list + cls.test_list] + [folder / cls.meta["filename"]]
        missing = [f for f in files if not f.is_file()]
        if download or not missing:
            return
        raise _not_found(name, root, _missing_detail(missing))
    if name == "notmnist":
        folder = root / "notMNIST_small"
        missing = [folder / c for c in NOTMNIST_CLASSES if not (folder / c).is_dir()]
        if missing:
            raise _not_found(name, root, _missing_detail(missing))
        return
    if name == "tinyimagenet":
        folder = root / "tiny-imagenet-200"
        need = [folder / "wnids.txt"]
        if not (folder / TINYIMAGENET_CACHE).is_file():  # the cache stands in for the JPEG folders
            need += [folder / "train", folder / "val" / "images", folder / "val" / "val_annotations.txt"]
        missing = [p for p in need if not p.exists()]
        if missing:
            raise _not_found(name, root, _missing_detail(missing))


def _validate_name(name: str) -> None:
    if name not in SOURCES:
        raise ValueError(f"unknown source {name!r}; valid choices: {', '.join(SOURCES)}")


# ----------------------------------------------------------------------------- loaders

def _load_mnist_family(name: str, root: Path, download: bool) -> Source:
    import torchvision.datasets as tvd

    cls = getattr(tvd, _TV_CLASS[name])
    raw_dir, *other_dirs = _mnist_dirs(name, root)
    files = _idx_files(raw_dir)
    if files and all(f.suffix != ".gz" for f in files.values()):
        # torchvision's own layout: let torchvision read it.
        parts = [cls(str(root), train=train) for train in (True, False)]
        sets = [ImageSet(p.data.unsqueeze(1).contiguous(), p.targets.long()) for p in parts]
        return Source(name, sets[0], sets[1], tuple(cls.classes))
    for folder in ([raw_dir] if files else []) + other_dirs:
        files = _idx_files(folder)
        if files:  # gzip-compressed IDX (Debian ships them so); torchvision only reads plain ones
            sets = []
            for split in ("train", "test"):
                img_name, lab_name = _IDX_FILES[split]
                images = _read_idx(files[img_name], (28, 28))
                labels = _read_idx(files[lab_name], ())
                if len(images) != len(labels):
                    raise CorruptFileError(f"{files[img_name]} holds {len(images)} images but {files[lab_name]} {len(labels)} labels")
                if labels.size and labels.max() >= len(cls.classes):
                    raise CorruptFileError(f"{files[lab_name]} holds label {int(labels.max())}; {name} has classes 0..{len(cls.classes) - 1}")
                sets.append(ImageSet(torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))))
            return Source(name, sets[0], sets[1], tuple(cls.classes))
    if not download:
        raise _not_found(name, root)
    try:
        parts = [cls(str(root), train=train, download=True) for train in (True, False)]
    except (RuntimeError, OSError) as err:
        raise _not_found(name, root, f"download failed: {err}") from err
    sets = [ImageSet(p.data.unsqueeze(1).contiguous(), p.targets.long()) for p in parts]
    return Source(name, sets[0], sets[1], tuple(cls.classes))


def fake_manifest(root: str | Path) -> dict:
    """The manifest `adaqpacknet.data.fake` wrote under ``root`` (``{}`` where there is none):
    ``"sources"`` maps each fake source to its generator settings, ``"md5"`` each file written
    (path relative to ``root``) to its md5 sum."""
    path = Path(root) / FAKE_MANIFEST
    if not path.is_file():
        return {}
    try:
        manifest = json.loads(path.read_text())
        if not isinstance(manifest.get("sources"), dict) or not isinstance(manifest.get("md5"), dict):
            raise ValueError("no 'sources' and 'md5' tables")
    except (OSError, ValueError, AttributeError) as err:
        raise ValueError(f"{path} is not a fake-data manifest: {err}") from err
    return manifest


def _torchvision_class(name: str, root: Path) -> type:
    """torchvision's dataset class for ``name``; for fake files (every file listed in the root's
    manifest) a subclass whose md5 sums are the manifest's, so torchvision's own integrity check
    and parser still run on them. Anything else keeps the official sums."""
    import torchvision.datasets as tvd

    cls = getattr(tvd, _TV_CLASS[name])
    recorded = fake_manifest(root).get("md5", {})
    if name == "svhn":  # the loader reads the train and test splits only (not "extra")
        files = {split: cls.split_list[split][1] for split in ("train", "test")}
    else:
        files = {f: f"{cls.base_folder}/{f}" for f, _ in cls.train_list + cls.test_list + [(cls.meta["filename"], None)]}
    if not all(f in recorded for f in files.values()):
        return cls
    if name == "svhn":
        fields = {"split_list": {**cls.split_list, **{s: [cls.split_list[s][0], f, recorded[f]] for s, f in files.items()}}}
    else:
        fields = {
            "train_list": [[f, recorded[files[f]]] for f, _ in cls.train_list],
            "test_list": [[f, recorded[files[f]]] for f, _ in cls.test_list],
            "meta": {**cls.meta, "md5": recorded[files[cls.meta["filename"]]]},
        }
    return type(f"Fake{cls.__name__}", (cls,), fields)


def _load_torchvision_rgb(name: str, root: Path, download: bool) -> Source:
    cls = _torchvision_class(name, root)
    sets = []
    try:
        for train in (True, False):
            if name == "svhn":
                ds = cls(str(root), split="train" if train else "test", download=download)
                images, labels = torch.from_numpy(np.ascontiguousarray(ds.data)), ds.labels  # already NCHW
            else:
                ds = cls(str(root), train=train, download=download)
                images = torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)))  # NHWC -> NCHW
                labels = ds.targets
            sets.append(ImageSet(images, torch.as_tensor(np.asarray(labels), dtype=torch.int64)))
    except (RuntimeError, OSError) as err:
        # torchvision says "Dataset not found or corrupted": the files are absent or fail its md5 check.
        raise _not_found(name, root, f"torchvision: {err}") from err
    class_names = tuple(str(i) for i in range(10)) if name == "svhn" else tuple(ds.classes)
    return Source(name, sets[0], sets[1], class_names)


def _load_notmnist(root: Path) -> Source:
    folder = root / "notMNIST_small"
    paths, labels = [], []
    for label, letter in enumerate(NOTMNIST_CLASSES):
        files = sorted((folder / letter).glob("*.png"))  # sorted: the fixed split must not depend on the FS
        paths += files
        labels += [label] * len(files)
    images, ok = _decode_images(paths, "L", 28, "notMNIST")
    _warn_skipped("notmnist", int((~ok).sum()))
    images_t = torch.from_numpy(images[ok])
    labels_t = torch.as_tensor(labels, dtype=torch.int64)[torch.from_numpy(ok)]
    train, test = _split_fixed(images_t, labels_t)
    return Source("notmnist", train, test, NOTMNIST_CLASSES)


def _load_tinyimagenet(root: Path) -> Source:
    folder = root / "tiny-imagenet-200"
    wnids = sorted(w.strip() for w in (folder / "wnids.txt").read_text().split() if w.strip())
    cache = folder / TINYIMAGENET_CACHE
    arrays = _read_tinyimagenet_cache(cache, wnids)
    if arrays is None:
        arrays = _decode_tinyimagenet(folder, wnids)
        _write_npz_atomic(cache, **arrays)
    sets = [ImageSet(torch.from_numpy(arrays[f"{s}_images"]), torch.from_numpy(arrays[f"{s}_labels"]))
            for s in ("train", "test")]
    return Source("tinyimagenet", sets[0], sets[1], tuple(wnids))


def _read_tinyimagenet_cache(cache: Path, wnids: list[str]) -> dict[str, np.ndarray] | None:
    if not cache.is_file():
        return None
    try:
        with np.load(cache, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, KeyError) as err:
        warnings.warn(f"ignoring unreadable cache {cache}: {err}", RuntimeWarning, stacklevel=3)
        return None
    if int(arrays.get("version", -1)) != _CACHE_VERSION or list(arrays.get("wnids", [])) != wnids:
        return None  # stale: rebuild from the JPEGs
    return arrays


def _decode_tinyimagenet(folder: Path, wnids: list[str]) -> dict[str, np.ndarray]:
    index = {w: i for i, w in enumerate(wnids)}
    train = [(p, index[w]) for w in wnids for p in sorted((folder / "train" / w / "images").glob("*.JPEG"))]
    test = []
    for line in (folder / "val" / "val_annotations.txt").read_text().splitlines():
        fields = line.split("\t")
        if len(fields) >= 2 and fields[1] in index:
            test.append((folder / "val" / "images" / fields[0], index[fields[1]]))
    out: dict[str, np.ndarray] = {"version": np.array(_CACHE_VERSION), "wnids": np.array(wnids)}
    skipped = 0
    for split, items in (("train", train), ("test", test)):
        images, ok = _decode_images([p for p, _ in items], "RGB", 64, f"TinyImageNet {split}")
        skipped += int((~ok).sum())
        out[f"{split}_images"] = images[ok]
        out[f"{split}_labels"] = np.array([y for _, y in items], dtype=np.int64)[ok]
    _warn_skipped("tinyimagenet", skipped)
    return out


def _write_npz_atomic(path: Path, **arrays: np.ndarray) -> None:
    """Write an .npz atomically (``atomic_path``), so a crash never leaves a half cache."""
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a bare name
            np.savez(f, **arrays)
    except OSError as err:  # a read-only data folder only costs the cache
        warnings.warn(f"could not write cache {path}: {err}", RuntimeWarning, stacklevel=3)


def _load_digits() -> Source:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # values are 0..16 -> 0..255, so that every source shares the uint8 convention
    images = torch.from_numpy(np.round(bunch.images * 255.0 / 16.0).astype(np.uint8)).unsqueeze(1)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    train, test = _split_fixed(images, labels)
    return Source("digits", train, test, tuple(str(n) for n in bunch.target_names))


_LOADERS: dict[str, Callable[[Path, bool], Source]] = {
    "mnist": lambda root, dl: _load_mnist_family("mnist", root, dl),
    "fashion_mnist": lambda root, dl: _load_mnist_family("fashion_mnist", root, dl),
    "cifar10": lambda root, dl: _load_torchvision_rgb("cifar10", root, dl),
    "cifar100": lambda root, dl: _load_torchvision_rgb("cifar100", root, dl),
    "svhn": lambda root, dl: _load_torchvision_rgb("svhn", root, dl),
    "notmnist": lambda root, dl: _load_notmnist(root),
    "tinyimagenet": lambda root, dl: _load_tinyimagenet(root),
    "digits": lambda root, dl: _load_digits(),
}


@functools.lru_cache(maxsize=8)
def _load_cached(name: str, root: Path, download: bool, system_dir: Path | None) -> Source:
    # system_dir is only part of the key: a changed $ADAQPACKNET_FASHION_MNIST_DIR must not hit a stale entry.
    check_source(name, root, download)
    if name in fake_manifest(root).get("sources", {}):
        warnings.warn(f"{name}: loading fake data generated by adaqpacknet.data.fake from {root} "
                      "(see its FAKE_MANIFEST): results computed on it mean nothing", UserWarning, stacklevel=3)
    return _LOADERS[name](root, download)


def load_source(name: str, root: str | Path, download: bool = False) -> Source:
    """Load dataset ``name`` (one of SOURCES) from ``root`` as uint8 NCHW train/test tensors.

    Raises ValueError for an unknown name and DatasetNotFoundError when the files are missing.
    Results are cached (LRU of 8 keyed by name, resolved root and download); the returned tensors
    are shared between callers, so treat them as read-only.
    """
    _validate_name(name)
    root = Path(root).expanduser().resolve()
    system_dir = fashion_mnist_system_dir() if name == "fashion_mnist" else None
    if name == "digits":
        root = Path()  # bundled with scikit-learn: one cache entry whatever the root
    return _load_cached(name, root, bool(download), system_dir)


def clear_source_cache() -> None:
    """Drop every cached Source (frees memory; tests use it to see fresh files)."""
    _load_cached.cache_clear()
