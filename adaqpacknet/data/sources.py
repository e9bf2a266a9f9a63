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
and the md5 of every fake file: loading a fake source warns that its results mean nothing, and the
CIFAR and SVHN files are checked against the manifest's sums instead of the official ones (which
fakes cannot match). A file changed after generation still fails the check.

Every file is read by the package's own reader for its format, never by torchvision's (which
unpickles CIFAR's files): only regular files are opened (``results.open_regular``; a data folder
may link into a shared disk, so links are followed to a regular file), each file's size is checked
against what its format and header imply before its contents are read, labels must be integers
within the classes and as many as the images, and CIFAR's pickles are read by an unpickler that
builds nothing but numpy arrays and plain values. The manifest switches no check off: anyone can
write one. A file that fails a check is a CorruptFileError naming it.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import pickle
import re
import struct
import warnings
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterable

import numpy as np
import torch
from tqdm import tqdm

from ..errors import ConfigError, CorruptFileError, shorten
from ..files import open_regular, read_regular
from ..results import atomic_path, read_json

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
MNIST_FAMILY_CLASSES = 10  # MNIST's digits, Fashion-MNIST's ten kinds of clothing
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

    def __post_init__(self) -> None:
        # Every reader checks its labels against the file; this catches a reader that forgot (a
        # label outside the classes would be dropped silently when tasks pick their classes).
        for part in (self.train, self.test):
            if len(part) and not 0 <= int(part.labels.min()) <= int(part.labels.max()) < len(self.class_names):
                raise ValueError(f"{self.name}: labels {int(part.labels.min())}..{int(part.labels.max())} outside "
                                 f"the {len(self.class_names)} classes")

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


# Bounds on what one data file may hold, each far above the real dataset's largest file (named
# beside it): a file past its bound is refused before it is read, and no file can make the loader
# allocate more than a small multiple of its own size.
MAX_IDX_VALUES = 1 << 28  # values in one IDX file; 60,000 28x28 images are 47 M
MAX_IDX_FILE_BYTES = MAX_IDX_VALUES + (1 << 20)  # header and gzip's framing on top of the values
MAX_CIFAR_FILE_BYTES = 256 << 20  # cifar-100-python/train, the largest, is 155 MB
MAX_SVHN_FILE_BYTES = 512 << 20  # train_32x32.mat is 182 MB
MAX_MAT_INFLATION = 16  # SVHN's compressed MAT files inflate 1.2 times; a zlib bomb 1000 times
MAX_IMAGE_FILE_BYTES = 16 << 20  # a notMNIST PNG or a TinyImageNet JPEG is a few KB
MAX_IMAGE_PIXELS = 1 << 20  # 1024 x 1024; the images are 28 x 28 and 64 x 64
MAX_TEXT_FILE_BYTES = 16 << 20  # TinyImageNet's wnids.txt is 2 KB, val_annotations.txt 400 KB
MAX_CACHE_BYTES = 2 << 30  # the TinyImageNet cache of the real data set is 1.35 GB

# What third-party parsers (pickle, scipy's MAT reader, zipfile, numpy) raise on a damaged or
# crafted file; each becomes a CorruptFileError naming the file. (NotImplementedError: scipy's
# answer to a MAT file of a version it cannot read, e.g. v7.3, which is HDF5.)
_PARSE_ERRORS = (OSError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError,
                 NotImplementedError, RecursionError, zlib.error, struct.error, pickle.UnpicklingError, zipfile.BadZipFile)


def _check_labels(values: object, lowest: int, highest: int, *, count: int, name: str, path: Path | str,
                  images: Path | str | None = None) -> np.ndarray:
    """``values`` as int64 labels, if they are ``count`` integers within lowest..highest; otherwise a
    CorruptFileError naming ``path`` (never dropped: a label outside the classes is a damaged file).
    ``images``: the file of the images, where it is not ``path``."""
    try:
        labels = np.asarray(values)
    except ValueError as error:  # a ragged list
        raise CorruptFileError(f"{path}: the labels are not a list of integers ({shorten(error, as_text=True)})") from None
    if labels.dtype.kind not in "iuf" or labels.ndim != 1:
        raise CorruptFileError(f"{path} holds labels of type {labels.dtype} and shape {labels.shape}; {name} labels are integers")
    if len(labels) != count:
        raise CorruptFileError(f"{images or path} holds {count} images but {path} {len(labels)} labels")
    if labels.dtype.kind == "f":
        bad = ~np.isfinite(labels) | (labels != np.round(labels))
        if bad.any():
            raise CorruptFileError(f"{path} holds label {labels[bad][0]}; {name} labels are integers {lowest}..{highest}")
    outside = (labels < lowest) | (labels > highest)
    if outside.any():
        raise CorruptFileError(f"{path} holds label {shorten(labels[outside][0].item())}; {name} has classes {lowest}..{highest}")
    return labels.astype(np.int64)


def _read_idx(path: Path, item_shape: tuple[int, ...]) -> np.ndarray:
    """Read a uint8 IDX file (the MNIST format), gzip-compressed or not, header first: its
    dimensions must be (count, *item_shape) and its payload exactly that many bytes. An
    uncompressed file's size must equal what its header implies before the payload is read; a .gz
    is inflated to at most that size plus one byte (a small .gz cannot expand into gigabytes).
    Only a regular file is opened (``open_regular``); errors name the file."""
    try:
        with open_regular(path, MAX_IDX_FILE_BYTES) as raw:
            if path.suffix == ".gz":
                with gzip.GzipFile(fileobj=raw, mode="rb") as f:
                    return _read_idx_stream(f, path, item_shape, None)
            return _read_idx_stream(raw, path, item_shape, os.fstat(raw.fileno()).st_size)
    except (OSError, EOFError, zlib.error) as error:  # gzip.BadGzipFile is an OSError
        raise CorruptFileError(f"{path} cannot be read ({type(error).__name__}: {error}); a truncated or damaged file?") from error


def _read_idx_stream(f: BinaryIO, path: Path, item_shape: tuple[int, ...], file_size: int | None) -> np.ndarray:
    """The IDX array from ``f``; ``file_size``: the size of an uncompressed file (checked against
    the header before the payload is read), None for a gzip stream (read bounded instead)."""
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
    # An uncompressed file's size is known: a mismatch is refused before its payload is read. A
    # gzip stream's is not: at most one byte more than the header implies is inflated.
    held = size if file_size is None else file_size - 4 - len(header)
    if held == size:
        data = f.read(size + 1)
        held = len(data)
    if held != size:
        raise CorruptFileError(f"{path}: the header says {count} items of {item_shape} ({size} bytes) but the file holds {held if held <= size else 'more'}")
    return np.frombuffer(data, dtype=np.uint8).reshape(count, *item_shape)


def _progress(iterable: Iterable, total: int, desc: str) -> Iterable:
    # Text bar (not tqdm.auto: widgets never update in headless notebook logs), refreshed rarely.
    return tqdm(iterable, total=total, desc=desc, mininterval=5.0)


def _decode_images(paths: list[Path], mode: str, size: int, desc: str) -> tuple[np.ndarray, np.ndarray]:
    """Decode image files with PIL into uint8 (N, C, size, size); returns (images, ok_mask).

    Unreadable files are skipped (their ok_mask entry is False; the real notMNIST archive holds
    some); the caller warns once. A file that is no regular file, larger than MAX_IMAGE_FILE_BYTES
    or of more than MAX_IMAGE_PIXELS pixels is refused (CorruptFileError): it was not damaged, it
    was put there. Threads help because PIL releases the GIL while decoding.
    """
    channels = 3 if mode == "RGB" else 1
    out = np.zeros((len(paths), channels, size, size), dtype=np.uint8)
    ok = np.zeros(len(paths), dtype=bool)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for i, array in enumerate(_progress(pool.map(lambda p: _decode_image(p, mode, size), paths), len(paths), desc)):
            if array is not None:
                out[i] = array.reshape(size, size, channels).transpose(2, 0, 1)
                ok[i] = True
    return out, ok


def _decode_image(path: Path, mode: str, size: int) -> np.ndarray | None:
    """One image as uint8 (size, size[, channels]), or None where PIL cannot decode it."""
    from PIL import Image

    try:
        handle = open_regular(path, MAX_IMAGE_FILE_BYTES)
    except OSError:  # vanished or unreadable: skipped, as a file PIL cannot decode
        return None
    with handle:
        try:
            picture = Image.open(handle)
        except Image.DecompressionBombError as error:
            raise CorruptFileError(f"{path}: {error}") from None
        except (OSError, SyntaxError, ValueError):  # what PIL raises for truncated/corrupt files
            return None
        with picture:
            if picture.width * picture.height > MAX_IMAGE_PIXELS:  # from the header, before decoding
                raise CorruptFileError(f"{path} is a {picture.width}x{picture.height} image, more than the "
                                       f"{MAX_IMAGE_PIXELS} pixels an image of this data set may have")
            try:
                picture = picture.convert(mode)  # grey JPEGs in TinyImageNet become RGB here
                if picture.size != (size, size):
                    picture = picture.resize((size, size), Image.BILINEAR)
                return np.asarray(picture, dtype=np.uint8)
            except (OSError, SyntaxError, ValueError):
                return None


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
            if candidate.exists():  # not is_file(): a FIFO or device found here is refused by the reader, not skipped
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
        cls = _torchvision_class(name)
        if name == "svhn":
            files = [root / cls.split_list[s][1] for s in ("train", "test")]
        else:
            folder = root / cls.base_folder
            files = [folder / f for f, _ in cls.train_list + cls.test_list] + [folder / cls.meta["filename"]]
        missing = [f for f in files if not f.exists()]  # a special file is refused when read
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
        if not (folder / TINYIMAGENET_CACHE).exists():  # the cache stands in for the JPEG folders
            need += [folder / "train", folder / "val" / "images", folder / "val" / "val_annotations.txt"]
        missing = [p for p in need if not p.exists()]
        if missing:
            raise _not_found(name, root, _missing_detail(missing))


def _validate_name(name: str) -> None:
    if name not in SOURCES:
        raise ConfigError(f"unknown source {shorten(name)}; valid choices: {', '.join(SOURCES)}")


# ----------------------------------------------------------------------------- loaders

def _load_mnist_family(name: str, root: Path, download: bool) -> Source:
    """MNIST or Fashion-MNIST from the first folder holding its four IDX files (each plain or .gz),
    every file through `_read_idx`; with ``download``, torchvision fetches the official files."""
    folders = _mnist_dirs(name, root)
    files = next((found for found in map(_idx_files, folders) if found), None)
    if files is None and download:
        try:
            _torchvision_class(name)(str(root), train=True, download=True)  # all four files (md5-checked) into folders[0]
        except (RuntimeError, OSError) as err:
            raise _not_found(name, root, f"download failed: {err}") from err
        files = _idx_files(folders[0])
    if files is None:
        raise _not_found(name, root)
    sets = []
    for split in ("train", "test"):
        img_name, lab_name = _IDX_FILES[split]
        images = _read_idx(files[img_name], (28, 28))
        labels = _check_labels(_read_idx(files[lab_name], ()), 0, MNIST_FAMILY_CLASSES - 1, count=len(images),
                               name=name, path=files[lab_name], images=files[img_name])
        sets.append(ImageSet(torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels)))
    # torchvision (1.5 s to import) only once the files are read: a broken file is refused at once.
    return Source(name, sets[0], sets[1], tuple(_torchvision_class(name).classes))


def _torchvision_class(name: str) -> type:
    """torchvision's dataset class of ``name``: its file names, sums, URLs and class names."""
    import torchvision.datasets as tvd

    return getattr(tvd, _TV_CLASS[name])


def fake_manifest(root: str | Path) -> dict:
    """The manifest `adaqpacknet.data.fake` wrote under ``root`` (``{}`` where there is none):
    ``"sources"`` maps each fake source to its generator settings, ``"md5"`` each file written
    (path relative to ``root``) to its md5 sum. It only names the sums the files are checked
    against: every file still goes through its reader's checks (anyone can write a manifest)."""
    path = Path(root) / FAKE_MANIFEST
    if not path.exists():  # not is_file(): a FIFO or device here is refused by read_json
        return {}
    manifest = read_json(path)
    if not (isinstance(manifest, dict) and isinstance(manifest.get("sources"), dict) and isinstance(manifest.get("md5"), dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in manifest["md5"].items())):
        raise CorruptFileError(f"{path} is not a fake-data manifest (no 'sources' table and 'md5' table of file -> sum)")
    return manifest


def _expected_md5(name: str, root: Path) -> dict[str, str]:
    """The md5 sum each file of a CIFAR or SVHN source must have (path relative to ``root``): the
    official ones, or, where the root's fake-data manifest lists every file, the manifest's."""
    cls = _torchvision_class(name)
    if name == "svhn":  # the loader reads the train and test splits only (not "extra")
        official = {cls.split_list[s][1]: cls.split_list[s][2] for s in ("train", "test")}
    else:
        official = {f"{cls.base_folder}/{f}": md5 for f, md5 in cls.train_list + cls.test_list + [(cls.meta["filename"], cls.meta["md5"])]}
    recorded = fake_manifest(root).get("md5", {})
    return {f: recorded[f] for f in official} if all(f in recorded for f in official) else official


def _open_data_file(name: str, root: Path, relative: str, md5: str, max_bytes: int) -> BinaryIO:
    """``root/relative`` opened (a regular file of at most ``max_bytes``) once its md5 sum is
    ``md5``; a missing file or another sum is a DatasetNotFoundError, as torchvision's check was."""
    path = root / relative
    try:
        handle = open_regular(path, max_bytes)
    except FileNotFoundError:
        raise _not_found(name, root, _missing_detail([path])) from None
    digest = hashlib.md5(usedforsecurity=False)
    for chunk in iter(lambda: handle.read(1 << 20), b""):
        digest.update(chunk)
    if digest.hexdigest() != md5:
        handle.close()
        raise _not_found(name, root, f"{path} fails its md5 check: a damaged or changed copy")
    handle.seek(0)
    return handle


def _download(name: str, root: Path) -> None:
    """Fetch a CIFAR or SVHN source's official files with torchvision's (md5-checked) downloaders."""
    from torchvision.datasets.utils import download_and_extract_archive, download_url

    cls = _torchvision_class(name)
    try:
        if name == "svhn":
            for split in ("train", "test"):
                url, filename, md5 = cls.split_list[split]
                download_url(url, str(root), filename, md5)
        else:
            download_and_extract_archive(cls.url, str(root), filename=cls.filename, md5=cls.tgz_md5)
    except (RuntimeError, OSError) as err:
        raise _not_found(name, root, f"download failed: {err}") from err


def _load_checked(name: str, root: Path, download: bool) -> Source:
    """CIFAR-10/100 or SVHN through their own readers; with ``download``, files missing or failing
    their md5 check are fetched first."""
    reader = _read_svhn if name == "svhn" else _read_cifar
    try:
        return reader(name, root)
    except DatasetNotFoundError:
        if not download:
            raise
    _download(name, root)
    return reader(name, root)


# ----------------------------------------------------------------------------- CIFAR (pickles)

_NUMPY_RECONSTRUCT = np.empty(0).__reduce__()[0]  # numpy's _reconstruct, wherever this numpy keeps it


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings, numbers and numpy arrays only: CIFAR's python files are
    pickles, and an unrestricted unpickler runs whatever code a crafted file names. Every global
    other than the few an array needs is refused, and numpy's _reconstruct only as numpy's own
    pickles call it (an empty array, whose state then brings its bytes), so no tiny file can ask
    for a huge array. Python 2's strings are read as latin-1, as torchvision reads these files."""

    _RECONSTRUCT = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")}
    # A plain-number dtype, as numpy pickles one: dtype(spec, align, copy). No object dtype (its
    # state would be a list of arbitrary objects).
    _DTYPES = {f"{kind}{size}" for kind in "iu" for size in (1, 2, 4, 8)} | {"f4", "f8", "b1"}

    class _NDArray:
        """Stands for numpy.ndarray in a file: never called, only checked by ``_reconstruct``
        (the real class, called by a crafted file, would allocate any shape it is given)."""

    def __init__(self, file: BinaryIO, path: Path) -> None:
        super().__init__(file, encoding="latin1")
        self._path = path

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in self._RECONSTRUCT:
            return self._reconstruct
        if (module, name) == ("numpy", "ndarray"):
            return self._NDArray
        if (module, name) == ("numpy", "dtype"):
            return self._dtype
        raise CorruptFileError(f"{self._path} asks to load {shorten(module, as_text=True)}.{shorten(name, as_text=True)}; a data file may hold only "
                               "numpy arrays, lists, strings and numbers, so it is refused without running it")

    def _dtype(self, spec: object, align: object = False, copy: object = False) -> np.dtype:
        if spec not in self._DTYPES or align not in (0, 1) or copy not in (0, 1):
            raise CorruptFileError(f"{self._path} asks numpy for the dtype {shorten(spec)}; a data file may hold "
                                   f"only arrays of plain numbers ({', '.join(sorted(self._DTYPES))})")
        return np.dtype(spec, bool(align), bool(copy))

    def _reconstruct(self, cls: object, shape: object, dtype: object) -> np.ndarray:
        if cls is not self._NDArray or shape != (0,):
            raise CorruptFileError(f"{self._path} asks numpy for a {shorten(cls)} of shape {shorten(shape)}; "
                                   "numpy's pickles ask for an empty ndarray")
        return _NUMPY_RECONSTRUCT(np.ndarray, (0,), dtype)


def _unpickle(handle: BinaryIO, path: Path) -> object:
    """One CIFAR file through `_ArrayUnpickler`; any failure is a CorruptFileError naming it."""
    try:
        return _ArrayUnpickler(handle, path).load()
    except CorruptFileError:
        raise
    except (*_PARSE_ERRORS, MemoryError) as error:
        raise CorruptFileError(f"{path} is not a readable CIFAR file ({type(error).__name__}: {shorten(error, as_text=True)})") from None


def _cifar_batch(entry: object, path: Path, label_key: str, num_classes: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A data batch's images as uint8 (N, 3, 32, 32) (rows are R, G, B planes: NCHW flattened) and labels."""
    if not isinstance(entry, dict) or not isinstance(entry.get("data"), np.ndarray) or label_key not in entry:
        raise CorruptFileError(f"{path} is not a CIFAR data batch (a dict with 'data' and {label_key!r})")
    data = entry["data"]
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise CorruptFileError(f"{path} holds data of type {data.dtype} and shape {shorten(data.shape)}; expected uint8 (N, 3072)")
    labels = _check_labels(entry[label_key], 0, num_classes - 1, count=len(data), name=name, path=path)
    return data.reshape(-1, 3, 32, 32), labels


def _read_cifar(name: str, root: Path) -> Source:
    """CIFAR-10 or CIFAR-100 (python version), torchvision's file list in its order, each file's md5
    checked, then read by `_ArrayUnpickler` and checked (shapes, dtypes, labels, class names)."""
    cls = _torchvision_class(name)
    md5 = _expected_md5(name, root)
    num_classes = 10 if name == "cifar10" else 100
    label_key = "labels" if name == "cifar10" else "fine_labels"

    def read(filename: str) -> object:
        relative = f"{cls.base_folder}/{filename}"
        with _open_data_file(name, root, relative, md5[relative], MAX_CIFAR_FILE_BYTES) as handle:
            return _unpickle(handle, root / relative)

    sets = []
    for files in (cls.train_list, cls.test_list):
        batches = [_cifar_batch(read(f), root / cls.base_folder / f, label_key, num_classes, name) for f, _ in files]
        sets.append(ImageSet(torch.from_numpy(np.concatenate([x for x, _ in batches])),
                             torch.from_numpy(np.concatenate([y for _, y in batches]))))
    meta_path = root / cls.base_folder / cls.meta["filename"]
    meta = read(cls.meta["filename"])
    names = meta.get(cls.meta["key"]) if isinstance(meta, dict) else None
    if not isinstance(names, list) or len(names) != num_classes or not all(isinstance(n, str) for n in names):
        raise CorruptFileError(f"{meta_path} does not list {num_classes} class names under {cls.meta['key']!r}")
    return Source(name, sets[0], sets[1], tuple(names))


# ----------------------------------------------------------------------------- SVHN (MAT files)

def _read_svhn(name: str, root: Path) -> Source:
    """SVHN's train and test MAT files, each md5-checked and read by `_read_svhn_split`."""
    md5 = _expected_md5(name, root)
    cls = _torchvision_class(name)
    sets = [_read_svhn_split(name, root, cls.split_list[s][1], md5[cls.split_list[s][1]]) for s in ("train", "test")]
    return Source(name, sets[0], sets[1], tuple(str(i) for i in range(10)))


def _read_svhn_split(name: str, root: Path, filename: str, md5: str) -> ImageSet:
    """One SVHN MAT file: X uint8 (32, 32, 3, N) and y (N, 1) in 1..10 (10 is the digit 0). The
    declared shapes are read first (scipy's whosmat reads headers only) and must be paid for by the
    file: at most MAX_MAT_INFLATION times its size, so a compressed MAT file is no zlib bomb."""
    import scipy.io

    path = root / filename
    with _open_data_file(name, root, filename, md5, MAX_SVHN_FILE_BYTES) as handle:
        try:
            listed = scipy.io.whosmat(handle)
            names = [var for var, _, _ in listed]
            if len(set(names)) != len(names):
                # loadmat reads the first of a repeated name: the checked header must be the one read
                raise CorruptFileError(f"{path} declares a variable twice ({shorten(', '.join(names), as_text=True)}); "
                                       "an SVHN file holds X and y once each")
            declared = {var: (tuple(shape), kind) for var, shape, kind in listed}
            count = _svhn_count(declared, path)
            file_size = os.fstat(handle.fileno()).st_size
            if (3 * 32 * 32 + 8) * count > MAX_MAT_INFLATION * file_size:
                raise CorruptFileError(f"{path} declares {count} images in {file_size} bytes: more than the file can hold "
                                       f"(at most {MAX_MAT_INFLATION} times its size once inflated)")
            handle.seek(0)
            mat = scipy.io.loadmat(handle, variable_names=["X", "y"])
            images, y = mat["X"], mat["y"]
        except CorruptFileError:
            raise
        except _PARSE_ERRORS as error:
            raise CorruptFileError(f"{path} is not a readable SVHN MAT file ({type(error).__name__}: {shorten(error, as_text=True)})") from None
    if images.dtype != np.uint8 or images.shape != (32, 32, 3, count) or y.shape != (count, 1):
        raise CorruptFileError(f"{path} holds X {images.dtype} {shorten(images.shape)} and y {shorten(y.shape)}; "
                               f"its header declared uint8 (32, 32, 3, {count}) and ({count}, 1)")
    labels = _check_labels(y.reshape(-1), 1, 10, count=count, name=name, path=path)
    labels[labels == 10] = 0  # SVHN stores the digit 0 as 10
    return ImageSet(torch.from_numpy(np.ascontiguousarray(np.transpose(images, (3, 2, 0, 1)))), torch.from_numpy(labels))


# MAT classes of plain numbers (scipy's whosmat names them so); SVHN's labels are "double".
_MAT_NUMBERS = frozenset({"double", "single", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64"})


def _svhn_count(declared: dict[str, tuple[tuple[int, ...], str]], path: Path) -> int:
    """The image count an SVHN file's headers declare, if X and y are declared as SVHN's are."""
    if "X" not in declared or "y" not in declared:
        raise CorruptFileError(f"{path} holds variables {shorten(', '.join(declared), as_text=True)}; an SVHN file holds X and y")
    (x_shape, x_kind), (y_shape, y_kind) = declared["X"], declared["y"]
    if len(x_shape) != 4 or x_shape[:3] != (32, 32, 3) or x_kind != "uint8":
        raise CorruptFileError(f"{path} declares X as {shorten(x_kind, as_text=True)} {shorten(x_shape)}; expected uint8 (32, 32, 3, N)")
    if y_shape != (x_shape[3], 1) or y_kind not in _MAT_NUMBERS:
        raise CorruptFileError(f"{path} declares y as {shorten(y_kind, as_text=True)} {shorten(y_shape)}; expected numbers ({x_shape[3]}, 1)")
    return int(x_shape[3])


# ----------------------------------------------------------------------------- notMNIST, TinyImageNet

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


# A wnid names a folder and an annotation's image a file in one: plain names only (no '/', no '..').
_WNID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_FILE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,254}")


def _load_tinyimagenet(root: Path) -> Source:
    folder = root / "tiny-imagenet-200"
    wnids = _read_wnids(folder / "wnids.txt")
    cache = folder / TINYIMAGENET_CACHE
    arrays = _read_tinyimagenet_cache(cache, wnids) if cache.exists() else None
    if arrays is None:
        arrays = _decode_tinyimagenet(folder, wnids)
        _write_npz_atomic(cache, **arrays)
    sets = [ImageSet(torch.from_numpy(arrays[f"{s}_images"]), torch.from_numpy(arrays[f"{s}_labels"]))
            for s in ("train", "test")]
    return Source("tinyimagenet", sets[0], sets[1], tuple(wnids))


def _read_text(path: Path) -> str:
    """A small text file of the data set (a regular file of at most MAX_TEXT_FILE_BYTES, UTF-8)."""
    try:
        return read_regular(path, MAX_TEXT_FILE_BYTES).decode("utf-8")
    except UnicodeDecodeError as error:
        raise CorruptFileError(f"{path} is not UTF-8 text ({error})") from None


def _read_wnids(path: Path) -> list[str]:
    """TinyImageNet's class ids, sorted (the label of a class is its rank); each a plain name, once."""
    wnids = sorted(_read_text(path).split())
    bad = next((w for w in wnids if not _WNID.fullmatch(w)), None)
    if bad is not None or not wnids or len(set(wnids)) != len(wnids):
        problem = f"the wnid {shorten(bad)} is not a plain name" if bad is not None else "it lists no wnid" if not wnids else "a wnid is listed twice"
        raise CorruptFileError(f"{path}: {problem}")
    return wnids


# The cache's members: name -> (dtype, shape), N and W for the image and wnid counts.
_CACHE_LAYOUT = {"version": ("int64", ()), "wnids": ("U", ("W",)), "train_images": ("uint8", ("N", 3, 64, 64)),
                 "train_labels": ("int64", ("N",)), "test_images": ("uint8", ("M", 3, 64, 64)), "test_labels": ("int64", ("M",))}


def _read_tinyimagenet_cache(cache: Path, wnids: list[str]) -> dict[str, np.ndarray] | None:
    """The arrays of the cache the loader wrote (np.savez: stored, uncompressed .npy members), or
    None where it is stale (another cache version or other wnids). Before any member is read, each
    member must be stored uncompressed with a size that matches its .npy header, so that the cache
    costs no more memory than its size on disk; dtypes, shapes and labels are checked too."""
    reason = "remove it and it is rebuilt from the JPEGs"
    with open_regular(cache, MAX_CACHE_BYTES) as handle:
        try:
            with zipfile.ZipFile(handle) as archive:
                headers = _npz_headers(archive, cache, os.fstat(handle.fileno()).st_size)
                if headers.get("version") != (np.dtype(np.int64), ()):
                    raise CorruptFileError(f"{cache} has no version number; {reason}")
                if int(np.lib.format.read_array(archive.open("version.npy"))) != _CACHE_VERSION:
                    return None
                _check_cache_layout(headers, cache, len(wnids))
                if np.lib.format.read_array(archive.open("wnids.npy")).tolist() != wnids:
                    return None
                arrays = {name: np.lib.format.read_array(archive.open(f"{name}.npy"), allow_pickle=False) for name in headers}
        except CorruptFileError:
            raise
        except _PARSE_ERRORS as error:
            raise CorruptFileError(f"{cache} is not a readable cache ({type(error).__name__}: {shorten(error, as_text=True)}); {reason}") from None
    for split in ("train", "test"):
        _check_labels(arrays[f"{split}_labels"], 0, len(wnids) - 1, count=len(arrays[f"{split}_images"]),
                      name="tinyimagenet", path=cache)
    return arrays


def _npz_headers(archive: zipfile.ZipFile, path: Path, file_size: int) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
    """Member name -> (dtype, shape) from each .npy header, once every member is found stored
    uncompressed, exactly as large as its header implies, and all of them within the file."""
    headers: dict[str, tuple[np.dtype, tuple[int, ...]]] = {}
    members = archive.infolist()
    if sum(info.compress_size for info in members) > file_size:
        raise CorruptFileError(f"{path}: its members claim more bytes than its {file_size}")
    for info in members:
        name = info.filename.removesuffix(".npy")
        if not info.filename.endswith(".npy") or name in headers:
            raise CorruptFileError(f"{path} holds a member {shorten(info.filename)}; the cache holds {', '.join(_CACHE_LAYOUT)}")
        if info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size:
            raise CorruptFileError(f"{path}: member {name} is compressed ({info.file_size} bytes from {info.compress_size}); "
                                   "the package writes its cache uncompressed")
        with archive.open(info) as member:
            version = np.lib.format.read_magic(member)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if read_header is None:
                raise CorruptFileError(f"{path}: member {name} is .npy format {version}; the cache uses 1.0 or 2.0")
            shape, _, dtype = read_header(member)
            if dtype.hasobject or info.file_size != member.tell() + int(np.prod(shape, dtype=object)) * dtype.itemsize:
                raise CorruptFileError(f"{path}: member {name} declares {dtype} {shorten(shape)} in {info.file_size} bytes")
        headers[name] = (dtype, tuple(shape))
    return headers


def _check_cache_layout(headers: dict[str, tuple[np.dtype, tuple[int, ...]]], path: Path, num_wnids: int) -> None:
    """Every member of `_CACHE_LAYOUT` present, with its dtype and shape (the counts consistent)."""
    if set(headers) != set(_CACHE_LAYOUT):
        raise CorruptFileError(f"{path} holds members {shorten(', '.join(sorted(headers)), as_text=True)}; the cache holds {', '.join(_CACHE_LAYOUT)}; "
                               "remove it and it is rebuilt from the JPEGs")
    counts = {"W": num_wnids}
    for name, (kind, shape) in _CACHE_LAYOUT.items():
        dtype, actual = headers[name]
        matches = (dtype.kind == kind if len(kind) == 1 else dtype == np.dtype(kind)) and len(actual) == len(shape)
        if matches:
            for want, got in zip(shape, actual):  # a letter: the same count wherever it stands
                matches = matches and (got == counts.setdefault(want, got) if isinstance(want, str) else got == want)
        if not matches:
            raise CorruptFileError(f"{path}: member {name} is {dtype} {shorten(actual)}; expected {kind} {shape}")


def _decode_tinyimagenet(folder: Path, wnids: list[str]) -> dict[str, np.ndarray]:
    index = {w: i for i, w in enumerate(wnids)}
    train = [(p, index[w]) for w in wnids for p in sorted((folder / "train" / w / "images").glob("*.JPEG"))]
    test = _read_val_annotations(folder / "val" / "val_annotations.txt", index)
    out: dict[str, np.ndarray] = {"version": np.array(_CACHE_VERSION), "wnids": np.array(wnids)}
    skipped = 0
    for split, items in (("train", train), ("test", test)):
        images, ok = _decode_images([p for p, _ in items], "RGB", 64, f"TinyImageNet {split}")
        skipped += int((~ok).sum())
        out[f"{split}_images"] = images[ok]
        out[f"{split}_labels"] = np.array([y for _, y in items], dtype=np.int64)[ok]
    _warn_skipped("tinyimagenet", skipped)
    return out


def _read_val_annotations(path: Path, index: dict[str, int]) -> list[tuple[Path, int]]:
    """(image path, label) of every line of val_annotations.txt (tab-separated: file name, wnid, box).
    A line naming an unknown wnid, or an image that is not a plain file name in val/images, is refused."""
    items = []
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or not _FILE_NAME.fullmatch(fields[0]) or fields[1] not in index:
            raise CorruptFileError(f"{path}, line {number}: {shorten(line)} does not name an image file in "
                                   "val/images and a wnid of wnids.txt")
        items.append((path.parent / "images" / fields[0], index[fields[1]]))
    return items


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
    path = "scikit-learn's bundled digits (sklearn/datasets/data/digits.csv.gz)"
    pixels = np.asarray(bunch.images)
    if pixels.ndim != 3 or pixels.shape[1:] != (8, 8) or not np.isfinite(pixels).all() or pixels.min() < 0 or pixels.max() > 16:
        raise CorruptFileError(f"{path}: expected 8x8 images of values 0..16, got {pixels.dtype} {pixels.shape}")
    labels = _check_labels(bunch.target, 0, len(bunch.target_names) - 1, count=len(pixels), name="digits", path=path)
    # values are 0..16 -> 0..255, so that every source shares the uint8 convention
    images = torch.from_numpy(np.round(pixels * 255.0 / 16.0).astype(np.uint8)).unsqueeze(1)
    train, test = _split_fixed(images, torch.from_numpy(labels))
    return Source("digits", train, test, tuple(str(n) for n in bunch.target_names))


_LOADERS: dict[str, Callable[[Path, bool], Source]] = {
    "mnist": lambda root, dl: _load_mnist_family("mnist", root, dl),
    "fashion_mnist": lambda root, dl: _load_mnist_family("fashion_mnist", root, dl),
    "cifar10": lambda root, dl: _load_checked("cifar10", root, dl),
    "cifar100": lambda root, dl: _load_checked("cifar100", root, dl),
    "svhn": lambda root, dl: _load_checked("svhn", root, dl),
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
