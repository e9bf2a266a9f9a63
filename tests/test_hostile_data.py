"""Hostile data files: each case writes a small data set in its real on-disk format (with
adaqpacknet.data.fake), makes one hostile change to one file, and the loader must refuse it with a
CorruptFileError naming the file, within bounded memory and time (``bounded.refused``), before any
training. The fake-data manifest is re-signed after every change (an attacker writes it too), so
no case is caught by a checksum: the manifest must switch no check off.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import zipfile
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import numpy as np
import pytest
import scipy.io
from bounded import refused

from adaqpacknet.data import FAKE_MANIFEST, clear_source_cache, fake, load_source
from adaqpacknet.data import sources as sources_mod
from adaqpacknet.results import CorruptFileError

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*loading fake data:UserWarning", "ignore:.*unreadable image:RuntimeWarning"),
    pytest.mark.usefixtures("isolated_sources"),  # tests/conftest.py: fresh sources, no system data
]

MARKER = "created-by-the-pickle"  # a crafted pickle's __reduce__ would create this file


@pytest.fixture(scope="module", autouse=True)
def torchvision_imported() -> None:
    """torchvision (the file lists and sums of CIFAR and SVHN) imported once, before any case is
    timed: its 1.5 s import is no cost of a hostile file."""
    import torchvision.datasets  # noqa: F401



# ----------------------------------------------------------------------------- hostile changes

def fifo(path: Path) -> None:
    path.unlink(missing_ok=True)
    os.mkfifo(path)


def dev_zero(path: Path) -> None:
    path.unlink(missing_ok=True)
    path.symlink_to("/dev/zero")


def oversized(limit: int) -> Callable[[Path], None]:
    def change(path: Path) -> None:
        with open(path, "ab") as f:  # sparse: costs no disk
            f.truncate(limit + 1)
    return change


def truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def appended(path: Path) -> None:
    path.write_bytes(path.read_bytes() + bytes(100))


def gzip_fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path.with_name(path.name + ".gz"))


def idx_count(count: int) -> Callable[[Path], None]:
    def change(path: Path) -> None:
        raw = bytearray(path.read_bytes())
        raw[4:8] = struct.pack(">I", count)
        path.write_bytes(bytes(raw))
    return change


def idx_first_label(value: int) -> Callable[[Path], None]:
    def change(path: Path) -> None:
        raw = bytearray(path.read_bytes())
        raw[8] = value
        path.write_bytes(bytes(raw))
    return change


def idx_drop_one_label(path: Path) -> None:
    raw = path.read_bytes()
    (count,) = struct.unpack(">I", raw[4:8])
    path.write_bytes(raw[:4] + struct.pack(">I", count - 1) + raw[8:-1])


class Creates:
    """Pickles as a call of open(path, "w"): unpickling it creates the file."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


class HugeArray:
    """Pickles as numpy's _reconstruct of a 70,000,000-object array (560 MB, zero-filled)."""

    def __reduce__(self):
        return np.empty(0).__reduce__()[0], (np.ndarray, (70_000_000,), "O")


def cifar(change: Callable[[dict, Path], object]) -> Callable[[Path], None]:
    """Rewrite a CIFAR pickle (as Python 2 wrote them) with ``change(entry, path)`` applied."""
    def rewrite(path: Path) -> None:
        entry = pickle.loads(path.read_bytes(), encoding="latin1")
        entry = change(entry, path) or entry
        fake._pickle(path, entry)
    return rewrite


def set_key(key: str, value) -> Callable[[dict, Path], None]:
    def change(entry: dict, path: Path) -> None:
        entry[key] = value(entry[key]) if callable(value) else value
    return change


def first(value) -> Callable[[list], list]:
    return lambda labels: [value] + labels[1:]


def svhn(x=None, y=None, compress: bool = False) -> Callable[[Path], None]:
    """Rewrite an SVHN MAT file with X and/or y changed (functions of the written ones)."""
    def rewrite(path: Path) -> None:
        mat = scipy.io.loadmat(path)
        new_x = x(mat["X"]) if x else mat["X"]
        new_y = y(mat["y"].copy()) if y else mat["y"]
        scipy.io.savemat(path, {"X": new_x, "y": new_y}, do_compression=compress)
    return rewrite


def svhn_label(value: float) -> Callable[[Path], None]:
    def change(y: np.ndarray) -> np.ndarray:
        y[0, 0] = value
        return y
    return svhn(y=change)


def svhn_declared_images(count: int) -> Callable[[Path], None]:
    """X's header says ``count`` images; the file holds those it held."""
    def change(path: Path) -> None:
        raw = path.read_bytes()
        held = scipy.io.whosmat(path)[0][1][3]
        dims = struct.pack("<4i", 32, 32, 3, held)
        assert raw.count(dims) == 1
        path.write_bytes(raw.replace(dims, struct.pack("<4i", 32, 32, 3, count)))
    return change


def svhn_x_twice(path: Path) -> None:
    """A compressed X of 5000 blank images first, then the file's own small X and y: loadmat reads
    the first X, so a check of the last one would let the first inflate."""
    first = io.BytesIO()
    scipy.io.savemat(first, {"X": np.zeros((32, 32, 3, 5000), np.uint8)}, do_compression=True)
    own = path.read_bytes()
    path.write_bytes(first.getvalue() + own[128:])  # MAT 5: a 128-byte header, then the variables


def png(width: int, height: int) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        from PIL import Image
        Image.new("L" if path.suffix == ".png" else "RGB", (width, height)).save(path)
    return write


def text(change: Callable[[str], str]) -> Callable[[Path], None]:
    return lambda path: path.write_text(change(path.read_text()))


def cache(change: Callable[[dict[str, np.ndarray]], None], writer=np.savez) -> Callable[[Path], None]:
    """Rewrite the TinyImageNet cache (the loader wrote it) with ``change`` applied to its arrays."""
    def rewrite(path: Path) -> None:
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
        change(arrays)
        with open(path, "wb") as f:
            writer(f, **arrays)
    return rewrite


def bomb(arrays: dict[str, np.ndarray]) -> None:
    """67 MB of images that deflate to 65 KB (np.savez_compressed writes it)."""
    arrays["train_images"] = np.zeros((5461, 3, 64, 64), dtype=np.uint8)
    arrays["train_labels"] = np.zeros(5461, dtype=np.int64)


def cache_label(value) -> Callable[[dict], None]:
    def change(arrays: dict[str, np.ndarray]) -> None:
        labels = arrays["train_labels"].astype(type(value))
        labels[0] = value
        arrays["train_labels"] = labels
    return change


def cache_lying_header(path: Path) -> None:
    """A stored train_images.npy whose header claims 1,000,000 images over the few it holds."""
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    with zipfile.ZipFile(path, "w") as archive:
        for name, array in arrays.items():
            member = io.BytesIO()
            if name == "train_images":
                np.lib.format.write_array_header_1_0(member, {"descr": "|u1", "fortran_order": False, "shape": (1_000_000, 3, 64, 64)})
                member.write(array.tobytes())
            else:
                np.lib.format.write_array(member, array)
            archive.writestr(f"{name}.npy", member.getvalue())


def cache_extra(arrays: dict[str, np.ndarray]) -> None:
    arrays["payload"] = np.arange(3)


def cache_objects(arrays: dict[str, np.ndarray]) -> None:
    arrays["train_labels"] = arrays["train_labels"].astype(object)


# ----------------------------------------------------------------------------- the cases

R, C, T = "MNIST/raw/", "cifar-10-batches-py/", "tiny-imagenet-200/"
CACHE = T + sources_mod.TINYIMAGENET_CACHE
REGULAR = "not a regular file"

# case -> (source, file, hostile change, message); a file under CACHE is first written by a load.
CASES: dict[str, tuple[str, str, Callable[[Path], None], str]] = {
    "IDX: a symlink to /dev/zero": ("mnist", R + "train-images-idx3-ubyte", dev_zero, REGULAR + r" \(it is a character device\)"),
    "IDX: a FIFO": ("mnist", R + "train-labels-idx1-ubyte", fifo, REGULAR + r" \(it is a FIFO\)"),
    "IDX.gz: a FIFO": ("mnist", R + "t10k-images-idx3-ubyte", gzip_fifo, r"ubyte.gz is not a regular file"),
    "IDX: larger than any IDX file": ("mnist", R + "train-images-idx3-ubyte", oversized(sources_mod.MAX_IDX_FILE_BYTES), "more than the"),
    "IDX: a header claiming 60,000,000 images": ("mnist", R + "train-images-idx3-ubyte", idx_count(60_000_000), "claims 60000000 items"),
    "IDX: more bytes than its header says": ("mnist", R + "train-images-idx3-ubyte", appended, "holds more"),
    "IDX: truncated": ("mnist", R + "t10k-images-idx3-ubyte", truncated, r"\(7840 bytes\) but the file holds 3912"),
    "IDX: a label out of range": ("mnist", R + "train-labels-idx1-ubyte", idx_first_label(10), "holds label 10; mnist has classes 0..9"),
    "IDX: fewer labels than images": ("mnist", R + "train-labels-idx1-ubyte", idx_drop_one_label, "holds 20 images but .* 19 labels"),
    "CIFAR: batches.meta runs code": ("cifar10", C + "batches.meta", cifar(lambda e, p: {"label_names": Creates(p.parent / MARKER)}), "asks to load io.open"),
    "CIFAR: a data batch runs code": ("cifar10", C + "data_batch_1", cifar(lambda e, p: set_key("data", Creates(p.parent / MARKER))(e, p)), "asks to load io.open"),
    "CIFAR: a 560 MB array asked of numpy": ("cifar10", C + "data_batch_2", cifar(lambda e, p: {"data": HugeArray()}), r"asks numpy for .* of shape \(70000000,\)"),
    "CIFAR: a label out of range": ("cifar10", C + "data_batch_1", cifar(set_key("labels", first(10))), "holds label 10; cifar10 has classes 0..9"),
    "CIFAR: a negative label": ("cifar10", C + "test_batch", cifar(set_key("labels", first(-1))), "holds label -1; cifar10 has classes 0..9"),
    "CIFAR: a NaN label": ("cifar10", C + "data_batch_3", cifar(set_key("labels", first(float("nan")))), "holds label nan"),
    "CIFAR: a label that is text": ("cifar10", C + "data_batch_3", cifar(set_key("labels", first("cat"))), "holds labels of type <U"),
    "CIFAR: fewer labels than images": ("cifar10", C + "data_batch_4", cifar(set_key("labels", lambda y: y[1:])), "holds 4 images but .* 3 labels"),
    "CIFAR: rows of 3000 values": ("cifar10", C + "data_batch_5", cifar(set_key("data", lambda x: x[:, :3000])), r"shape \(4, 3000\); expected uint8 \(N, 3072\)"),
    "CIFAR: images as floats": ("cifar10", C + "data_batch_5", cifar(set_key("data", lambda x: x.astype(float))), "holds data of type float64"),
    "CIFAR: not a dict": ("cifar10", C + "data_batch_1", cifar(lambda e, p: [1, 2, 3]), "is not a CIFAR data batch"),
    "CIFAR: truncated": ("cifar10", C + "data_batch_1", truncated, "is not a readable CIFAR file"),
    "CIFAR: five class names": ("cifar10", C + "batches.meta", cifar(set_key("label_names", lambda n: n[:5])), "does not list 10 class names"),
    "CIFAR: a FIFO": ("cifar10", C + "data_batch_2", fifo, REGULAR),
    "CIFAR: a symlink to /dev/zero": ("cifar10", C + "test_batch", dev_zero, REGULAR),
    "CIFAR: larger than any CIFAR file": ("cifar10", C + "data_batch_1", oversized(sources_mod.MAX_CIFAR_FILE_BYTES), "more than the"),
    "CIFAR-100: a fine label out of range": ("cifar100", "cifar-100-python/train", cifar(set_key("fine_labels", first(100))), "holds label 100; cifar100 has classes 0..99"),
    "SVHN: a label out of range": ("svhn", "train_32x32.mat", svhn_label(11), r"holds label 11\.0; svhn has classes 1..10"),
    "SVHN: a negative label": ("svhn", "test_32x32.mat", svhn_label(-1), r"holds label -1\.0; svhn has classes 1..10"),
    "SVHN: a NaN label": ("svhn", "train_32x32.mat", svhn_label(float("nan")), "holds label nan"),
    "SVHN: a fractional label": ("svhn", "train_32x32.mat", svhn_label(2.5), "holds label 2.5"),
    "SVHN: a zlib bomb (15 MB from 15 KB)": ("svhn", "train_32x32.mat", svhn(x=lambda x: np.zeros((32, 32, 3, 5000), np.uint8), y=lambda y: np.ones((5000, 1)), compress=True), "declares 5000 images in"),
    "SVHN: X's header claims 10,000,000 images": ("svhn", "train_32x32.mat", svhn_declared_images(10_000_000), r"declares y as double \(20, 1\)"),
    "SVHN: X declared twice, the first a zlib bomb": ("svhn", "train_32x32.mat", svhn_x_twice, "declares a variable twice"),
    "SVHN: images as floats": ("svhn", "test_32x32.mat", svhn(x=lambda x: x.astype(float)), "declares X as double"),
    "SVHN: no y": ("svhn", "test_32x32.mat", lambda p: scipy.io.savemat(p, {"X": scipy.io.loadmat(p)["X"]}), "holds variables X; an SVHN file holds X and y"),
    "SVHN: not a MAT file": ("svhn", "train_32x32.mat", lambda p: p.write_bytes(b"PK\x03\x04" + bytes(500)), "is not a readable SVHN MAT file"),
    "SVHN: truncated": ("svhn", "train_32x32.mat", truncated, "holds variables X; an SVHN file holds X and y"),
    "SVHN: a FIFO": ("svhn", "train_32x32.mat", fifo, REGULAR),
    "SVHN: a symlink to /dev/zero": ("svhn", "test_32x32.mat", dev_zero, REGULAR),
    "SVHN: larger than any SVHN file": ("svhn", "train_32x32.mat", oversized(sources_mod.MAX_SVHN_FILE_BYTES), "more than the"),
    "notMNIST: a 2000x2000 PNG": ("notmnist", "notMNIST_small/B/hostile.png", png(2000, 2000), "is a 2000x2000 image"),
    "notMNIST: a PNG that is a symlink to /dev/zero": ("notmnist", "notMNIST_small/C/hostile.png", dev_zero, REGULAR),
    "notMNIST: a PNG that is a FIFO": ("notmnist", "notMNIST_small/D/hostile.png", fifo, REGULAR),
    "notMNIST: a 16 MiB PNG": ("notmnist", "notMNIST_small/E/hostile.png", oversized(sources_mod.MAX_IMAGE_FILE_BYTES), "more than the"),
    "TinyImageNet: wnids.txt is a FIFO": ("tinyimagenet", T + "wnids.txt", fifo, REGULAR),
    "TinyImageNet: wnids.txt is a symlink to /dev/zero": ("tinyimagenet", T + "wnids.txt", dev_zero, REGULAR),
    "TinyImageNet: a wnid that climbs out": ("tinyimagenet", T + "wnids.txt", text(lambda t: t + "../../x\n"), "is not a plain name"),
    "TinyImageNet: a wnid listed twice": ("tinyimagenet", T + "wnids.txt", text(lambda t: t + t.split()[0] + "\n"), "a wnid is listed twice"),
    "TinyImageNet: an annotation of an unknown wnid": ("tinyimagenet", T + "val/val_annotations.txt", text(lambda t: t + "val_0.JPEG\tn99999999\t0\t0\t63\t63\n"), "line 201"),
    "TinyImageNet: an annotation that climbs out": ("tinyimagenet", T + "val/val_annotations.txt", text(lambda t: t.replace("val_0.JPEG", "../../train/x.JPEG")), "line 1"),
    "TinyImageNet: a JPEG that is a FIFO": ("tinyimagenet", T + "val/images/val_3.JPEG", fifo, REGULAR),
    "TinyImageNet: a 2048x2048 JPEG": ("tinyimagenet", T + "val/images/val_3.JPEG", png(2048, 2048), "is a 2048x2048 image"),
    "cache: an npz bomb (compressed members)": ("tinyimagenet", CACHE, cache(bomb, np.savez_compressed), "member .* is compressed"),
    "cache: a header claiming 1,000,000 images": ("tinyimagenet", CACHE, cache_lying_header, r"declares uint8 \(1000000, 3, 64, 64\)"),
    "cache: a label out of range": ("tinyimagenet", CACHE, cache(cache_label(200)), "holds label 200; tinyimagenet has classes 0..199"),
    "cache: NaN labels": ("tinyimagenet", CACHE, cache(cache_label(float("nan"))), "member train_labels is float64"),
    "cache: labels as pickled objects": ("tinyimagenet", CACHE, cache(cache_objects), "member train_labels declares object"),
    "cache: an extra member": ("tinyimagenet", CACHE, cache(cache_extra), "holds members payload, test_images"),
    "cache: a FIFO": ("tinyimagenet", CACHE, fifo, REGULAR),
    "cache: a symlink to /dev/zero": ("tinyimagenet", CACHE, dev_zero, REGULAR),
    "manifest: a FIFO": ("cifar10", FAKE_MANIFEST, fifo, REGULAR),
    "manifest: not a manifest": ("cifar10", FAKE_MANIFEST, lambda p: p.write_text("[]"), "is not a fake-data manifest"),
}


def sign(root: Path) -> None:
    """Record the md5 of every regular file in the manifest, as an attacker who writes it would."""
    manifest_path = root / FAKE_MANIFEST
    if not manifest_path.is_file():
        return
    manifest = json.loads(manifest_path.read_text())
    if not isinstance(manifest, dict):
        return
    for relative in manifest["md5"]:
        path = root / relative
        if path.is_file() and path.stat().st_size < (1 << 20):  # the oversized ones are refused unread
            manifest["md5"][relative] = fake._md5(path)
    manifest_path.write_text(json.dumps(manifest))


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_data_file(case, tmp_path):
    source, relative, change, message = CASES[case]
    root = tmp_path / "data"
    fake.write_fake_datasets(root, sources=[source], per_class=2, test_per_class=1)
    if relative == CACHE:
        load_source(source, root)  # the loader writes its cache
        clear_source_cache()
    path = root / relative
    change(path)
    sign(root)
    error = refused(lambda: load_source(source, root), CorruptFileError, message)
    assert str(path.parent.resolve()) in str(error) and path.name.split(".")[0] in str(error)
    assert not list(root.rglob(MARKER)), "the pickle ran code"


@pytest.mark.parametrize("images, target, message", [
    (np.full((4, 8, 8), np.nan), np.arange(4), "expected 8x8 images of values 0..16"),
    (np.full((4, 8, 8), 17.0), np.arange(4), "expected 8x8 images of values 0..16"),
    (np.zeros((4, 8, 8)), np.array([0, 1, 2, 10]), "holds label 10; digits has classes 0..9"),
    (np.zeros((4, 8, 8)), np.array([0, 1, 2]), "holds 4 images but .* 3 labels"),
], ids=["NaN pixels", "pixels above 16", "a label out of range", "fewer labels than images"])
def test_hostile_digits(images, target, message, monkeypatch):
    """scikit-learn's bundled digits are checked as any data file (a damaged installation)."""
    import sklearn.datasets

    monkeypatch.setattr(sklearn.datasets, "load_digits", lambda: SimpleNamespace(images=images, target=target, target_names=np.arange(10)))
    refused(lambda: load_source("digits", "."), CorruptFileError, message)


@pytest.mark.parametrize("arguments, message", [
    ({"name": "split_digits; rm -rf /"}, r"unknown scenario 'split_digits; rm -rf /'; valid choices: permuted_mnist"),
    ({"seed": -10**5000}, "seed must be a non-negative int, got <an int of 16610 bits>"),
    ({"val_fraction": "0.1"}, r"val_fraction must be in \(0, 1\), got '0.1'"),
    ({"val_fraction": float("nan")}, r"val_fraction must be in \(0, 1\), got nan"),
    ({"num_tasks": 10**5000}, "num_tasks=<an int of 16610 bits> is not possible for scenario 'split_digits'; valid range: 1..5"),
], ids=["a crafted scenario name", "a seed of 5000 digits", "a fraction as text", "a NaN fraction", "5000-digit num_tasks"])
def test_bad_scenario_arguments(arguments, message):
    """Scenario arguments are refused with the package's ConfigError, the value shortened."""
    from adaqpacknet.data import build_scenario
    from adaqpacknet.errors import ConfigError

    load_source("digits", ".")  # loaded before timing: num_tasks is checked against the loaded classes
    arguments = {"name": "split_digits", **arguments}
    refused(lambda: build_scenario(arguments.pop("name"), **arguments), ConfigError, message)


class _Allocates:
    """Pickles as a direct call of numpy.ndarray: 2^35 float64, 256 GiB, from a few bytes."""

    def __reduce__(self):
        return (np.ndarray, ((1 << 35,),))


class _ObjectDtype:
    """Pickles as numpy.dtype('O'): an object array, whose state may hold any object."""

    def __reduce__(self):
        return (np.dtype, ("O", False, True))


@pytest.mark.parametrize("payload, message", [
    (_Allocates(), "not a readable CIFAR file"),
    (_ObjectDtype(), "asks numpy for the dtype 'O'"),
], ids=["a direct call of numpy.ndarray", "an object dtype"])
def test_a_cifar_pickle_cannot_call_numpy_itself(payload, message, tmp_path):
    # The restricted unpickler admits numpy.ndarray only as _reconstruct's argument, and dtypes of
    # plain numbers only: numpy's own pickles need no more.
    blob = pickle.dumps({"data": payload, "labels": [0]}, protocol=4)
    refused(lambda: sources_mod._unpickle(io.BytesIO(blob), tmp_path / "data_batch_1"), CorruptFileError, message)
