"""Tests of the data layer on small files written in each dataset's real on-disk format."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
import torchvision.datasets.cifar
import torchvision.datasets.svhn
from PIL import Image

from adaqpacknet.data import (
    SCENARIOS,
    DatasetNotFoundError,
    build_scenario,
    check_data_available,
    clear_source_cache,
    load_source,
    required_sources,
    stratified_split,
)
from adaqpacknet.data import sources as sources_mod

# ----------------------------------------------------------------------------- fake data writers


def unique_images(n: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Random uint8 images whose first two bytes encode the index, so every image is distinct."""
    images = np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)
    flat = images.reshape(n, -1)
    flat[:, 0], flat[:, 1] = np.arange(n) // 256, np.arange(n) % 256
    return images


def balanced_labels(n: int, num_classes: int) -> np.ndarray:
    return np.arange(n) % num_classes


def key_list(images: torch.Tensor) -> list[bytes]:
    """One hashable key per image (the fakes' images are unique)."""
    return [bytes(row) for row in images.reshape(len(images), -1).numpy()]


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> None:
    data = b"\x00\x00\x08" + bytes([array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data += array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        with gzip.open(f"{path}.gz", "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def write_mnist_family(folder: Path, compress: bool, n_train: int = 100, n_test: int = 40, seed: int = 0) -> None:
    write_idx(folder / "train-images-idx3-ubyte", unique_images(n_train, (28, 28), seed), compress)
    write_idx(folder / "train-labels-idx1-ubyte", balanced_labels(n_train, 10), compress)
    write_idx(folder / "t10k-images-idx3-ubyte", unique_images(n_test, (28, 28), seed + 1), compress)
    write_idx(folder / "t10k-labels-idx1-ubyte", balanced_labels(n_test, 10), compress)


def write_cifar10(root: Path) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    images = unique_images(60, (3 * 32 * 32,), 2)
    for i in range(5):
        batch = {"data": images[i * 10 : (i + 1) * 10], "labels": balanced_labels(60, 10)[i * 10 : (i + 1) * 10].tolist()}
        (folder / f"data_batch_{i + 1}").write_bytes(pickle.dumps(batch, protocol=2))
    test = {"data": unique_images(20, (3 * 32 * 32,), 3), "labels": balanced_labels(20, 10).tolist()}
    (folder / "test_batch").write_bytes(pickle.dumps(test, protocol=2))
    meta = {"label_names": [f"c10_{i}" for i in range(10)]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))


def write_cifar100(root: Path) -> None:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for split, n, seed in (("train", 400, 4), ("test", 200, 5)):
        labels = balanced_labels(n, 100).tolist()
        entry = {"data": unique_images(n, (3 * 32 * 32,), seed), "fine_labels": labels,
                 "coarse_labels": [y // 5 for y in labels]}
        (folder / split).write_bytes(pickle.dumps(entry, protocol=2))
    meta = {"fine_label_names": [f"c100_{i}" for i in range(100)], "coarse_label_names": [str(i) for i in range(20)]}
    (folder / "meta").write_bytes(pickle.dumps(meta, protocol=2))


def write_svhn(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name, n, seed in (("train_32x32.mat", 60, 6), ("test_32x32.mat", 20, 7)):
        x = unique_images(n, (32, 32, 3), seed).transpose(1, 2, 3, 0)  # SVHN stores (32, 32, 3, N)
        digits = balanced_labels(n, 10)
        y = np.where(digits == 0, 10, digits).astype(np.uint8).reshape(n, 1)  # SVHN writes digit 0 as 10
        scipy.io.savemat(root / name, {"X": x, "y": y})


def write_notmnist(root: Path, per_class: int = 5) -> None:
    rng = np.random.default_rng(8)
    for letter in "ABCDEFGHIJ":
        folder = root / "notMNIST_small" / letter
        folder.mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8), "L").save(folder / f"img{i}.png")
    # The real archive holds a few unreadable files; the loader must skip them.
    (root / "notMNIST_small" / "A" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")


def write_tinyimagenet(root: Path, num_classes: int = 10, per_class: int = 3, val_per_class: int = 2) -> list[str]:
    folder = root / "tiny-imagenet-200"
    wnids = [f"n{i:08d}" for i in range(num_classes)]
    rng = np.random.default_rng(9)
    (folder / "val" / "images").mkdir(parents=True)
    # wnids.txt is not sorted in the real archive either: classes follow sorted order.
    (folder / "wnids.txt").write_text("\n".join(reversed(wnids)) + "\n")
    annotations = []
    for c, wnid in enumerate(wnids):
        images = folder / "train" / wnid / "images"
        images.mkdir(parents=True)
        for i in range(per_class):
            mode = "L" if i == 0 else "RGB"  # the real set has greyscale JPEGs among RGB ones
            shape = (64, 64) if mode == "L" else (64, 64, 3)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(images / f"{wnid}_{i}.JPEG")
        for i in range(val_per_class):
            name = f"val_{c * val_per_class + i}.JPEG"
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / "val" / "images" / name)
            annotations.append(f"{name}\t{wnid}\t0\t0\t63\t63")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(annotations) + "\n")
    return wnids


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Every test sees fresh sources and no system-wide Fashion-MNIST (this machine has Debian's)."""
    monkeypatch.setenv(sources_mod.FASHION_MNIST_DIR_ENV, str(tmp_path / "no-system-fashion-mnist"))
    clear_source_cache()
    yield
    clear_source_cache()


@pytest.fixture
def md5_free(monkeypatch):
    """torchvision's CIFAR and SVHN classes check the md5 of the official files (`check_integrity`
    in `_check_integrity` and `_load_meta`). Synthetic files can never match, so replace only the
    checksum comparison: file existence is still checked, and the parsing code is torchvision's."""
    def exists_only(fpath, md5=None):
        return os.path.isfile(fpath)

    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", exists_only)
    monkeypatch.setattr(torchvision.datasets.svhn, "check_integrity", exists_only)


@pytest.fixture
def all_fake(tmp_path, monkeypatch, md5_free) -> Path:
    root = tmp_path / "data"
    write_mnist_family(root / "MNIST" / "raw", compress=False)
    debian = tmp_path / "debian-fashion-mnist"
    write_mnist_family(debian, compress=True, seed=20)
    monkeypatch.setenv(sources_mod.FASHION_MNIST_DIR_ENV, str(debian))
    write_cifar10(root)
    write_cifar100(root)
    write_svhn(root)
    write_notmnist(root)
    write_tinyimagenet(root)
    return root


# ----------------------------------------------------------------------------- sources


def test_mnist_torchvision_layout(tmp_path):
    write_mnist_family(tmp_path / "MNIST" / "raw", compress=False)
    src = load_source("mnist", tmp_path)
    assert src.train.images.shape == (100, 1, 28, 28) and src.train.images.dtype == torch.uint8
    assert src.test.images.shape == (40, 1, 28, 28)
    assert src.train.labels.dtype == torch.int64
    assert torch.equal(src.train.labels, torch.arange(100) % 10)
    assert torch.equal(src.train.images[:, 0], torch.from_numpy(unique_images(100, (28, 28), 0)))
    assert len(src.class_names) == 10


def test_mnist_gzip_in_raw_folder(tmp_path):
    write_mnist_family(tmp_path / "MNIST" / "raw", compress=True)
    src = load_source("mnist", tmp_path)
    assert torch.equal(src.train.images[:, 0], torch.from_numpy(unique_images(100, (28, 28), 0)))


def test_fashion_mnist_debian_folder(tmp_path, monkeypatch):
    debian = tmp_path / "debian"
    write_mnist_family(debian, compress=True, seed=20)
    monkeypatch.setenv(sources_mod.FASHION_MNIST_DIR_ENV, str(debian))
    src = load_source("fashion_mnist", tmp_path / "data")
    assert src.train.images.shape == (100, 1, 28, 28)
    assert torch.equal(src.train.images[:, 0], torch.from_numpy(unique_images(100, (28, 28), 20)))
    assert src.class_names[0] == "T-shirt/top"


def test_fashion_mnist_root_before_debian(tmp_path, monkeypatch):
    debian = tmp_path / "debian"
    write_mnist_family(debian, compress=True, seed=20)
    write_mnist_family(tmp_path / "data" / "FashionMNIST" / "raw", compress=False, seed=30)
    monkeypatch.setenv(sources_mod.FASHION_MNIST_DIR_ENV, str(debian))
    src = load_source("fashion_mnist", tmp_path / "data")
    assert torch.equal(src.train.images[:, 0], torch.from_numpy(unique_images(100, (28, 28), 30)))


def test_fashion_mnist_constant_is_the_fallback(tmp_path, monkeypatch):
    debian = tmp_path / "debian"
    write_mnist_family(debian, compress=True, seed=20)
    monkeypatch.delenv(sources_mod.FASHION_MNIST_DIR_ENV)
    monkeypatch.setattr(sources_mod, "DEBIAN_FASHION_MNIST_DIR", debian)
    assert len(load_source("fashion_mnist", tmp_path / "data").train) == 100


def test_cifar10_and_cifar100(tmp_path, md5_free):
    write_cifar10(tmp_path)
    write_cifar100(tmp_path)
    c10 = load_source("cifar10", tmp_path)
    assert c10.train.images.shape == (50, 3, 32, 32) and c10.test.images.shape == (20, 3, 32, 32)
    # torchvision stores rows as CHW planes: our NCHW tensor must be exactly the pickled bytes
    assert torch.equal(c10.train.images.reshape(50, -1), torch.from_numpy(unique_images(60, (3072,), 2)[:50]))
    assert c10.class_names == tuple(f"c10_{i}" for i in range(10))
    c100 = load_source("cifar100", tmp_path)
    assert c100.train.images.shape == (400, 3, 32, 32)
    assert torch.equal(c100.train.labels, torch.arange(400) % 100)
    assert c100.class_names[99] == "c100_99"


def test_svhn(tmp_path, md5_free):
    write_svhn(tmp_path)
    src = load_source("svhn", tmp_path)
    assert src.train.images.shape == (60, 3, 32, 32) and src.train.images.dtype == torch.uint8
    assert torch.equal(src.train.labels, torch.arange(60) % 10)  # label 10 became digit 0
    expected = torch.from_numpy(unique_images(60, (32, 32, 3), 6)).permute(0, 3, 1, 2)
    assert torch.equal(src.train.images, expected)


def test_notmnist_skips_corrupt_file_and_splits(tmp_path):
    write_notmnist(tmp_path)
    with pytest.warns(RuntimeWarning, match="skipped 1 unreadable"):
        src = load_source("notmnist", tmp_path)
    assert src.class_names == tuple("ABCDEFGHIJ")
    assert src.train.images.shape == (40, 1, 28, 28) and src.test.images.shape == (10, 1, 28, 28)
    assert torch.equal(torch.bincount(src.test.labels), torch.ones(10, dtype=torch.int64))  # stratified
    clear_source_cache()
    with pytest.warns(RuntimeWarning):
        again = load_source("notmnist", tmp_path)
    assert torch.equal(again.test.images, src.test.images)  # fixed split


def test_tinyimagenet_and_cache(tmp_path):
    wnids = write_tinyimagenet(tmp_path)
    src = load_source("tinyimagenet", tmp_path)
    assert src.class_names == tuple(wnids)
    assert src.train.images.shape == (30, 3, 64, 64) and src.test.images.shape == (20, 3, 64, 64)
    assert torch.equal(src.train.labels, torch.arange(10).repeat_interleave(3))
    assert torch.equal(src.test.labels, torch.arange(10).repeat_interleave(2))
    grey = src.train.images[0]
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])  # grey JPEG -> RGB
    cache = tmp_path / "tiny-imagenet-200" / "adaqpacknet_cache.npz"
    assert cache.is_file() and not list(cache.parent.glob("*.tmp*"))
    # The cache alone is enough once written: remove the JPEGs and load again.
    for jpeg in (tmp_path / "tiny-imagenet-200").rglob("*.JPEG"):
        jpeg.unlink()
    clear_source_cache()
    again = load_source("tinyimagenet", tmp_path)
    assert torch.equal(again.train.images, src.train.images) and torch.equal(again.test.labels, src.test.labels)


def test_digits(tmp_path):
    src = load_source("digits", tmp_path / "ignored")
    assert src.train.images.shape[1:] == (1, 8, 8) and src.train.images.dtype == torch.uint8
    total = len(src.train) + len(src.test)
    assert total == 1797 and abs(len(src.test) - 0.2 * total) < 10
    assert int(src.train.images.max()) == 255 and int(src.train.images.min()) == 0


def test_unknown_source():
    with pytest.raises(ValueError, match=r"'nope'.*mnist.*digits"):
        load_source("nope", "data")


@pytest.mark.parametrize("name, paths, instruction", [
    ("mnist", ["MNIST/raw"], "download=True"),
    ("fashion_mnist", ["FashionMNIST/raw", "no-system-fashion-mnist"], "apt-get install dataset-fashion-mnist"),
    ("cifar10", ["cifar-10-batches-py"], "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"),
    ("cifar100", ["cifar-100-python"], "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"),
    ("svhn", ["train_32x32.mat", "test_32x32.mat"], "http://ufldl.stanford.edu/housenumbers/train_32x32.mat"),
    ("notmnist", ["notMNIST_small"], "http://yaroslavvb.com/upload/notMNIST/notMNIST_small.tar.gz"),
    ("tinyimagenet", ["tiny-imagenet-200"], "http://cs231n.stanford.edu/tiny-imagenet-200.zip"),
])
def test_missing_data_message(tmp_path, name, paths, instruction):
    root = tmp_path / "empty"
    for load in (lambda: load_source(name, root), lambda: sources_mod.check_source(name, root)):
        with pytest.raises(DatasetNotFoundError) as info:
            load()
        message = str(info.value)
        assert f"'{name}'" in message and instruction in message
        for path in paths:
            assert path in message
    assert isinstance(info.value, FileNotFoundError)


def test_md5_failure_is_dataset_not_found(tmp_path):
    write_cifar10(tmp_path)  # without md5_free: torchvision rejects the synthetic files
    with pytest.raises(DatasetNotFoundError, match="cifar10"):
        load_source("cifar10", tmp_path)


# ----------------------------------------------------------------------------- scenarios


def test_registry_and_required_sources():
    assert set(SCENARIOS) == {"permuted_mnist", "permuted_fashion_mnist", "permuted_digits", "split_cifar100",
                              "split_fashion_mnist", "split_digits", "five_datasets", "tinyimagenet"}
    assert required_sources("five_datasets") == ("cifar10", "mnist", "svhn", "fashion_mnist", "notmnist")
    assert SCENARIOS["tinyimagenet"].default_model == "tinyimagenet_conv"


def test_stratified_split_disjoint_and_exact():
    labels = torch.arange(103) % 4
    keep, held = stratified_split(labels, 0.1, np.random.default_rng(1))
    assert set(keep.tolist()).isdisjoint(held.tolist()) and len(keep) + len(held) == 103
    for c in range(4):
        assert int((labels[held] == c).sum()) == round(int((labels == c).sum()) * 0.1)


def test_permuted_scenario():
    scenario = build_scenario("permuted_digits", num_tasks=4, seed=3)
    assert scenario.num_tasks == 4 and scenario.classes_per_task == (10,) * 4
    assert scenario.input_shape == (1, 8, 8) and scenario.default_model == "mlp"
    perms = [t.train.transform.permutation for t in scenario.tasks]
    for perm in perms:
        assert torch.equal(perm.sort().values, torch.arange(64))  # a bijection
    assert torch.equal(perms[0], torch.arange(64))  # task 0 is the identity
    assert all(not torch.equal(perms[i], perms[j]) for i in range(4) for j in range(i + 1, 4))
    # The test split is the same images for every task: task k's input is task 0's, permuted.
    x0 = scenario.tasks[0].test.__getitems__(list(range(20)))[0]
    x2 = scenario.tasks[2].test.__getitems__(list(range(20)))[0]
    assert torch.equal(x2.flatten(1), x0.flatten(1)[:, perms[2]])
    # Normalised by the source's train statistics.
    train0 = scenario.tasks[0].train.__getitems__(list(range(len(scenario.tasks[0].train))))[0]
    assert abs(float(train0.mean())) < 0.1 and abs(float(train0.std()) - 1) < 0.1
    # Deterministic by seed; another seed gives other permutations; more tasks keep the first ones.
    same = build_scenario("permuted_digits", num_tasks=4, seed=3)
    for a, b in zip(scenario.tasks, same.tasks):
        assert torch.equal(a.train.images, b.train.images) and torch.equal(a.val.labels, b.val.labels)
        assert torch.equal(a.train.transform.permutation, b.train.transform.permutation)
    other = build_scenario("permuted_digits", num_tasks=2, seed=4)
    assert not torch.equal(other.tasks[1].train.transform.permutation, perms[1])
    longer = build_scenario("permuted_digits", num_tasks=6, seed=3)
    assert torch.equal(longer.tasks[3].train.transform.permutation, perms[3])


def test_split_scenario(tmp_path, monkeypatch):
    debian = tmp_path / "debian"
    write_mnist_family(debian, compress=True, n_train=400, seed=20)
    monkeypatch.setenv(sources_mod.FASHION_MNIST_DIR_ENV, str(debian))
    scenario = build_scenario("split_fashion_mnist", root=tmp_path, val_fraction=0.2)
    source = load_source("fashion_mnist", tmp_path)
    assert scenario.num_tasks == 5 and scenario.input_shape == (1, 28, 28)
    assert [t.classes for t in scenario.tasks] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    assert scenario.tasks[1].name == "classes 2-3"
    seen: set[int] = set()
    for task in scenario.tasks:
        assert seen.isdisjoint(task.classes)
        seen |= set(task.classes)
        for ds in (task.train, task.val, task.test):
            assert set(ds.labels.tolist()) == {0, 1}
        # train and val partition the source's training images of these classes (images are unique)
        key = lambda images: set(key_list(images))  # noqa: E731
        train, val = key(task.train.images), key(task.val.images)
        mask = torch.isin(source.train.labels, torch.tensor(task.classes))
        assert train.isdisjoint(val) and train | val == key(source.train.images[mask])
        assert len(task.val) == round(0.2 * int(mask.sum()))  # 40 per class -> 8 held out each
        assert int((task.val.labels == 0).sum()) == int((task.val.labels == 1).sum())
        # labels were remapped in class order: head label i is source class task.classes[i]
        source_label = dict(zip(key_list(source.train.images), source.train.labels.tolist()))
        for row, y in zip(key_list(task.val.images), task.val.labels.tolist()):
            assert task.classes[y] == source_label[row]
        assert len(task.test) == int(torch.isin(source.test.labels, torch.tensor(task.classes)).sum())
    # seeded validation split: another seed holds out other images
    other = build_scenario("split_fashion_mnist", root=tmp_path, val_fraction=0.2, seed=1)
    assert not torch.equal(other.tasks[0].val.images, scenario.tasks[0].val.images)


def test_split_digits_default_val_and_shuffled_order():
    fixed = build_scenario("split_digits")
    assert fixed.default_model == "small_conv" and fixed.input_shape == (1, 8, 8)
    n_train = sum(len(t.train) + len(t.val) for t in fixed.tasks)
    assert abs(sum(len(t.val) for t in fixed.tasks) - 0.1 * n_train) < 10
    shuffled = build_scenario("split_digits", class_order="shuffled", seed=5)
    groups = [t.classes for t in shuffled.tasks]
    assert sorted(c for g in groups for c in g) == list(range(10)) and groups != [t.classes for t in fixed.tasks]
    assert groups == [t.classes for t in build_scenario("split_digits", class_order="shuffled", seed=5).tasks]
    with pytest.raises(ValueError, match="random"):
        build_scenario("split_digits", class_order="random")
    with pytest.raises(ValueError, match="split scenarios only"):
        build_scenario("permuted_digits", class_order="shuffled")


def test_split_cifar100_fake(tmp_path, md5_free):
    write_cifar100(tmp_path)
    scenario = build_scenario("split_cifar100", root=tmp_path, num_tasks=3)
    assert scenario.input_shape == (3, 32, 32) and scenario.default_model == "alexnet"
    assert scenario.tasks[2].classes == tuple(range(20, 30))
    assert len(scenario.tasks[0].train) + len(scenario.tasks[0].val) == 40


def test_five_datasets(all_fake):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the corrupt notMNIST file
        scenario = build_scenario("five_datasets", root=all_fake)
    assert [t.name for t in scenario.tasks] == ["cifar10", "mnist", "svhn", "fashion_mnist", "notmnist"]
    assert scenario.input_shape == (3, 32, 32) and scenario.default_model == "resnet18_reduced"
    for task in scenario.tasks:
        for ds in (task.train, task.val, task.test):
            x, y = ds.__getitems__(list(range(len(ds))))
            assert x.shape == (len(ds), 3, 32, 32) and x.dtype == torch.float32
            assert 0 <= int(y.min()) and int(y.max()) <= 9
    x, _ = scenario.tasks[1].train[0]  # MNIST: padded by 2 and repeated to 3 channels
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
    assert torch.allclose(x[0, :2], x[0, 0, 0].expand(2, 32))  # the black border, normalised
    assert build_scenario("five_datasets", root=all_fake, num_tasks=2).num_tasks == 2


def test_tinyimagenet_scenario(tmp_path):
    write_tinyimagenet(tmp_path, per_class=4)
    scenario = build_scenario("tinyimagenet", root=tmp_path, num_tasks=2)
    assert scenario.input_shape == (3, 64, 64) and scenario.default_model == "tinyimagenet_conv"
    assert [t.classes for t in scenario.tasks] == [(0, 1, 2, 3, 4), (5, 6, 7, 8, 9)]
    assert [len(t.train) + len(t.val) for t in scenario.tasks] == [20, 20]
    assert [len(t.test) for t in scenario.tasks] == [10, 10]
    with pytest.raises(ValueError, match=r"num_tasks=40.*1\.\.2"):
        build_scenario("tinyimagenet", root=tmp_path)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"'split_mnist'.*permuted_mnist.*tinyimagenet"):
        build_scenario("split_mnist")
    with pytest.raises(ValueError, match=r"num_tasks=6.*1\.\.5"):
        build_scenario("split_digits", num_tasks=6)
    with pytest.raises(ValueError, match=r"num_tasks=0"):
        build_scenario("permuted_digits", num_tasks=0)
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="val_fraction"):
            build_scenario("split_digits", val_fraction=bad)
    with pytest.raises(ValueError, match="'nope'"):
        required_sources("nope")


def test_check_data_available(tmp_path):
    check_data_available("split_digits", tmp_path)  # bundled: always there
    with pytest.raises(DatasetNotFoundError, match="cifar10"):
        check_data_available("five_datasets", tmp_path)
    with pytest.raises(DatasetNotFoundError, match="fashion_mnist"):
        build_scenario("split_fashion_mnist", root=tmp_path)


def test_getitems_matches_getitem_and_dataloader():
    task = build_scenario("permuted_digits", num_tasks=2).tasks[1]
    indices = [5, 0, 17, 3]
    x, y = task.train.__getitems__(indices)
    assert torch.equal(x, torch.stack([task.train[i][0] for i in indices]))
    assert torch.equal(y, torch.stack([task.train[i][1] for i in indices]))
    assert torch.equal(task.train[-1][0], task.train[len(task.train) - 1][0])
    with pytest.raises(IndexError):
        task.train[len(task.train)]
    loader = torch.utils.data.DataLoader(task.train, batch_size=64, shuffle=False, collate_fn=lambda batch: batch)
    xb, yb = next(iter(loader))
    assert xb.shape == (64, 1, 8, 8) and torch.equal(yb, task.train.labels[:64])
    clone = pickle.loads(pickle.dumps(task.train))  # DataLoader workers pickle the dataset
    assert torch.equal(clone.__getitems__(indices)[0], x)
