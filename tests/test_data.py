"""Tests of the data layer on small files written in each dataset's real on-disk format.

Every file comes from the fake-data generator (adaqpacknet.data.fake): the tests check that the
loaders return exactly the images and labels it wrote, and that the generator itself is faithful
(deterministic, every paper scenario buildable from its folder).
"""

from __future__ import annotations

import json
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from adaqpacknet.data import (
    FAKE_MANIFEST,
    SCENARIOS,
    DatasetNotFoundError,
    build_scenario,
    check_data_available,
    clear_source_cache,
    load_source,
    required_sources,
    stratified_split,
)
from adaqpacknet.data import fake
from adaqpacknet.data import sources as sources_mod

PAPER_SCENARIOS = ("permuted_mnist", "split_cifar100", "five_datasets", "tinyimagenet")
# Every generated source says it is fake when loaded; the tests that check it use pytest.warns.
pytestmark = [
    pytest.mark.filterwarnings("ignore:.*loading fake data:UserWarning"),
    pytest.mark.usefixtures("isolated_sources"),  # tests/conftest.py: fresh sources, no system data
]

# ----------------------------------------------------------------------------- helpers


def generate(root: Path, *sources: str, per_class: int, test_per_class: int, seed: int = 0) -> dict:
    """Write ``sources`` with the generator; returns source -> (train, test) as numpy arrays it wrote."""
    fake.write_fake_datasets(root, sources=sources, per_class=per_class, test_per_class=test_per_class, seed=seed)
    return {s: fake.source_images(s, per_class=per_class, test_per_class=test_per_class, seed=seed) for s in sources}


def mnist_like(n_per_class: int, test_per_class: int, seed: int) -> tuple[fake.Split, fake.Split]:
    train, test = fake.fake_images(10, [n_per_class, test_per_class], (1, 28, 28), seed)
    return train, test


def key_list(images: torch.Tensor) -> list[bytes]:
    """One hashable key per image (the fakes' images are distinct: see test_split_scenario)."""
    return [bytes(row) for row in images.reshape(len(images), -1).numpy()]


def files_of(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def same(loaded: torch.Tensor, written: np.ndarray) -> bool:
    return torch.equal(loaded, torch.from_numpy(np.ascontiguousarray(written)))



@pytest.fixture(scope="module")
def paper_root(tmp_path_factory) -> Path:
    """One generated root with the defaults (what the paper-dry profile uses), shared by the module."""
    root = tmp_path_factory.mktemp("paper-data")
    fake.write_fake_datasets(root)
    return root


# ----------------------------------------------------------------------------- sources


def test_mnist_torchvision_layout(tmp_path):
    (train, test), = generate(tmp_path, "mnist", per_class=10, test_per_class=4).values()
    assert sorted(p.name for p in (tmp_path / "MNIST" / "raw").iterdir()) == [
        "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", "train-images-idx3-ubyte", "train-labels-idx1-ubyte"]
    with pytest.warns(UserWarning, match=r"mnist: loading fake data .* mean nothing"):  # every fake source says so
        src = load_source("mnist", tmp_path)
    assert src.train.images.shape == (100, 1, 28, 28) and src.train.images.dtype == torch.uint8
    assert src.test.images.shape == (40, 1, 28, 28)
    assert src.train.labels.dtype == torch.int64
    assert same(src.train.labels, train[1]) and same(src.test.labels, test[1])
    assert torch.equal(torch.bincount(src.train.labels), torch.full((10,), 10))
    assert same(src.train.images, train[0]) and same(src.test.images, test[0])
    assert len(src.class_names) == 10


def test_mnist_gzip_in_raw_folder(tmp_path):
    train, test = mnist_like(10, 4, seed=1)
    written = fake.write_mnist_family(tmp_path / "MNIST" / "raw", train, test, compress=True)
    assert all(p.suffix == ".gz" for p in written)
    src = load_source("mnist", tmp_path)
    assert same(src.train.images, train[0]) and same(src.test.labels, test[1])


def test_fashion_mnist_debian_folder(tmp_path, monkeypatch):
    debian = tmp_path / "debian"
    train, test = mnist_like(10, 4, seed=20)
    fake.write_mnist_family(debian, train, test, compress=True)
    monkeypatch.setenv(sources_mod.FASHION_MNIST_DIR_ENV, str(debian))
    src = load_source("fashion_mnist", tmp_path / "data")
    assert src.train.images.shape == (100, 1, 28, 28)
    assert same(src.train.images, train[0])
    assert src.class_names[0] == "T-shirt/top"


def test_fashion_mnist_root_before_debian(tmp_path, monkeypatch):
    debian = tmp_path / "debian"
    fake.write_mnist_family(debian, *mnist_like(10, 4, seed=20), compress=True)
    (train, _), = generate(tmp_path / "data", "fashion_mnist", per_class=10, test_per_class=4, seed=30).values()
    monkeypatch.setenv(sources_mod.FASHION_MNIST_DIR_ENV, str(debian))
    src = load_source("fashion_mnist", tmp_path / "data")
    assert same(src.train.images, train[0])


def test_fashion_mnist_constant_is_the_fallback(tmp_path, monkeypatch):
    debian = tmp_path / "debian"
    fake.write_mnist_family(debian, *mnist_like(10, 4, seed=20), compress=True)
    monkeypatch.delenv(sources_mod.FASHION_MNIST_DIR_ENV)
    monkeypatch.setattr(sources_mod, "DEBIAN_FASHION_MNIST_DIR", debian)
    assert len(load_source("fashion_mnist", tmp_path / "data").train) == 100


def test_cifar10_and_cifar100(tmp_path):
    written = generate(tmp_path, "cifar10", "cifar100", per_class=5, test_per_class=2)
    with pytest.warns(UserWarning, match=r"cifar10: loading fake data .* mean nothing"):
        c10 = load_source("cifar10", tmp_path)
    (train, test) = written["cifar10"]
    assert c10.train.images.shape == (50, 3, 32, 32) and c10.test.images.shape == (20, 3, 32, 32)
    # torchvision stores rows as CHW planes: our NCHW tensor must be exactly the pickled bytes,
    # batch after batch (5 training batches, as the published folder)
    assert len(list((tmp_path / "cifar-10-batches-py").glob("data_batch_*"))) == 5
    assert same(c10.train.images, train[0]) and same(c10.train.labels, train[1]) and same(c10.test.images, test[0])
    assert c10.class_names == fake.CIFAR10_CLASSES
    with pytest.warns(UserWarning, match="cifar100: loading fake data"):
        c100 = load_source("cifar100", tmp_path)
    (train, test) = written["cifar100"]
    assert c100.train.images.shape == (500, 3, 32, 32) and c100.test.images.shape == (200, 3, 32, 32)
    assert same(c100.train.labels, train[1]) and same(c100.train.images, train[0])
    assert torch.equal(torch.bincount(c100.train.labels), torch.full((100,), 5))
    assert c100.class_names[99] == "fine_99"


def test_cifar_files_are_python2_pickles(tmp_path):
    """As the published files: protocol 2, image rows as raw Python 2 strings, so that only a
    latin1 (or bytes) load reads them and a row costs 3072 bytes."""
    (train, _), = generate(tmp_path, "cifar10", per_class=5, test_per_class=2).values()
    raw = (tmp_path / "cifar-10-batches-py" / "data_batch_1").read_bytes()
    assert raw[:2] == b"\x80\x02" and len(raw) < 10 * 3072 + 2000
    with pytest.raises(UnicodeDecodeError):
        pickle.loads(raw)
    batch = pickle.loads(raw, encoding="latin1")
    assert sorted(batch) == ["batch_label", "data", "filenames", "labels"]
    assert batch["data"].dtype == np.uint8 and np.array_equal(batch["data"], train[0][:10].reshape(10, -1))


def test_svhn(tmp_path):
    (train, test), = generate(tmp_path, "svhn", per_class=6, test_per_class=2).values()
    raw = scipy.io.loadmat(tmp_path / "train_32x32.mat")
    assert raw["X"].shape == (32, 32, 3, 60) and raw["X"].dtype == np.uint8 and raw["y"].shape == (60, 1)
    assert set(np.unique(raw["y"])) == set(range(1, 11))  # SVHN writes digit 0 as 10
    with pytest.warns(UserWarning, match="svhn: loading fake data"):
        src = load_source("svhn", tmp_path)
    assert src.train.images.shape == (60, 3, 32, 32) and src.train.images.dtype == torch.uint8
    assert same(src.train.labels, train[1]) and int(src.train.labels.min()) == 0  # label 10 became digit 0
    assert same(src.train.images, train[0]) and same(src.test.images, test[0])


def test_md5_failure_is_dataset_not_found(tmp_path):
    """Fakes pass torchvision's md5 check only against the generator's manifest: without it, or
    with a file changed since, they are rejected like any corrupt copy."""
    generate(tmp_path, "cifar10", "svhn", per_class=2, test_per_class=1)
    manifest = tmp_path / FAKE_MANIFEST
    text = manifest.read_text()
    manifest.unlink()
    for name in ("cifar10", "svhn"):
        with pytest.raises(DatasetNotFoundError, match=name):
            load_source(name, tmp_path)
    manifest.write_text(text)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    batch.write_bytes(batch.read_bytes()[:-1] + b"\x00")  # one byte changed after the manifest was written
    with pytest.raises(DatasetNotFoundError, match="cifar10"):
        load_source("cifar10", tmp_path)


def test_notmnist_skips_corrupt_file_and_splits(tmp_path):
    generate(tmp_path, "notmnist", per_class=3, test_per_class=2)
    assert len(list((tmp_path / "notMNIST_small").rglob("*.png"))) == 51  # 50 images + the unreadable one
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
    train, val = fake.fake_images(10, [3, 2], (3, 64, 64), seed=9, grain=8)  # the generator's TinyImageNet noise
    fake.write_tinyimagenet(tmp_path, train, val, grey_every=7)
    wnids = fake.fake_wnids(10)
    listed = (tmp_path / "tiny-imagenet-200" / "wnids.txt").read_text().split()
    assert sorted(listed) == wnids and listed != wnids  # unsorted, as in the real archive
    src = load_source("tinyimagenet", tmp_path)
    assert src.class_names == tuple(wnids)
    assert src.train.images.shape == (30, 3, 64, 64) and src.test.images.shape == (20, 3, 64, 64)
    assert torch.equal(src.train.labels, torch.arange(10).repeat_interleave(3))  # sorted wnids, sorted files
    assert same(src.test.labels, val[1])  # val_annotations.txt order
    # The loader reads class by class: the first written image is its class's image 0.
    grey = src.train.images[3 * int(train[1][0])]
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])  # grey JPEG -> RGB
    # JPEG is lossy, but the pixels are where they were written: swapped rows and columns, or
    # channels in BGR order, would be several times further off.
    written = torch.from_numpy(val[0]).float()
    error = lambda expected: float((src.test.images.float() - expected).abs().mean())  # noqa: E731
    assert error(written) < 12.0
    assert error(written.transpose(2, 3)) > 3 * error(written) and error(written[:, [2, 1, 0]]) > 3 * error(written)
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
    assert scenario.input_shape == (1, 8, 8) == SCENARIOS["permuted_digits"].input_shape and scenario.default_model == "mlp"
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
    # One validation split for the source: every task trains and validates on the same images (in
    # its own permutation), so no task validates on images another task trains on.
    for task in scenario.tasks[1:]:
        assert torch.equal(task.train.images, scenario.tasks[0].train.images)
        assert torch.equal(task.val.images, scenario.tasks[0].val.images)
        assert torch.equal(task.val.labels, scenario.tasks[0].val.labels)
    assert len(scenario.tasks[0].train) + len(scenario.tasks[0].val) == len(load_source("digits", "data").train)


def test_split_scenario(tmp_path, monkeypatch):
    debian = tmp_path / "debian"
    fake.write_mnist_family(debian, *mnist_like(40, 4, seed=20), compress=True)
    monkeypatch.setenv(sources_mod.FASHION_MNIST_DIR_ENV, str(debian))
    scenario = build_scenario("split_fashion_mnist", root=tmp_path, val_fraction=0.2)
    source = load_source("fashion_mnist", tmp_path)
    assert len(set(key_list(source.train.images))) == len(source.train)  # the fakes' images are distinct
    assert scenario.num_tasks == 5 and scenario.input_shape == (1, 28, 28) == SCENARIOS["split_fashion_mnist"].input_shape
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
    assert fixed.default_model == "small_conv" and fixed.input_shape == (1, 8, 8) == SCENARIOS["split_digits"].input_shape
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


def test_split_cifar100_fake(tmp_path):
    generate(tmp_path, "cifar100", per_class=4, test_per_class=1)
    with pytest.warns(UserWarning, match="fake data"):
        scenario = build_scenario("split_cifar100", root=tmp_path, num_tasks=3)
    assert scenario.input_shape == (3, 32, 32) and scenario.default_model == "alexnet"
    assert scenario.tasks[2].classes == tuple(range(20, 30))
    assert len(scenario.tasks[0].train) + len(scenario.tasks[0].val) == 40


def test_five_datasets(paper_root):
    # Fashion-MNIST comes from the generated root alone (the system folder is hidden by `isolated_sources`).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the corrupt notMNIST file; the fake-data notices
        scenario = build_scenario("five_datasets", root=paper_root)
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
    assert build_scenario("five_datasets", root=paper_root, num_tasks=2).num_tasks == 2


def test_tinyimagenet_scenario(tmp_path):
    fake.write_tinyimagenet(tmp_path, *fake.fake_images(10, [4, 2], (3, 64, 64), seed=9))
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


# ----------------------------------------------------------------------------- the fake-data generator


def test_generator_is_deterministic(tmp_path):
    """Same seed -> byte-identical files (no timestamps: the MAT-file header, gzip); another seed differs."""
    for folder, seed in (("a", 0), ("b", 0), ("c", 1)):
        fake.write_fake_datasets(tmp_path / folder, per_class=2, test_per_class=1, seed=seed)
    a, b, c = (files_of(tmp_path / f) for f in "abc")
    assert a == b
    # (notMNIST's file names follow the shuffled order, so only the other paths are shared)
    shared = [k for k in a if not k.startswith("notMNIST_small/")]
    assert set(shared) <= set(c) and all(a[k] != c[k] for k in shared if k.endswith((".JPEG", "-ubyte", "_batch", ".mat")))
    manifest = json.loads(a[FAKE_MANIFEST])
    assert set(manifest["md5"]) == set(a) - {FAKE_MANIFEST}
    assert manifest["sources"]["cifar100"] == {"per_class": 2, "test_per_class": 1, "seed": 0}
    # gzip-compressed IDX files too (Debian's layout): mtime 0, no name
    train, test = mnist_like(2, 1, seed=3)
    first = fake.write_idx(tmp_path / "x" / "idx", train[0], compress=True).read_bytes()
    assert fake.write_idx(tmp_path / "y" / "idx", train[0], compress=True).read_bytes() == first


def test_generated_root_serves_every_paper_scenario(paper_root):
    """check-data passes and every paper scenario builds (2 tasks) from a generated root alone."""
    sizes = {}
    for scenario in PAPER_SCENARIOS:
        check_data_available(scenario, paper_root)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the corrupt notMNIST file; the fake-data notices
            built = build_scenario(scenario, root=paper_root, num_tasks=2)
        assert built.num_tasks == 2
        sizes[scenario] = [(len(t.train), len(t.val), len(t.test)) for t in built.tasks]
        x, y = built.tasks[1].train.__getitems__(list(range(4)))
        assert x.shape == (4, *built.input_shape) and torch.isfinite(x).all()
        # Config checks a network against the spec's shape before any data is read: it must be the data's.
        assert built.input_shape == SCENARIOS[scenario].input_shape, scenario
    # default per_class 8, test max(2, 8 // 4) = 2; one validation image per class
    assert sizes == {"permuted_mnist": [(70, 10, 20)] * 2, "split_cifar100": [(70, 10, 20)] * 2,
                     "five_datasets": [(70, 10, 20)] * 2, "tinyimagenet": [(35, 5, 10)] * 2}
    assert build_scenario("tinyimagenet", root=paper_root).num_tasks == 40  # 200 wnids: the protocol's 40 tasks
    assert len(load_source("cifar100", paper_root).class_names) == 100


def test_generated_classes_are_learnable(paper_root):
    """A nearest-class-mean rule beats chance by far on every generated source: a network can learn."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in fake.FAKE_SOURCES:
            src = load_source(name, paper_root)
            x, y = src.train.images.flatten(1).float(), src.train.labels
            means = torch.stack([x[y == c].mean(0) for c in range(src.num_classes)])
            predicted = torch.cdist(src.test.images.flatten(1).float(), means).argmin(1)
            accuracy = float((predicted == src.test.labels).float().mean())
            assert accuracy > 5 / src.num_classes, (name, accuracy)


def test_generator_never_overwrites_real_data(tmp_path):
    real = tmp_path / "cifar-10-batches-py"
    real.mkdir()
    (real / "data_batch_1").write_bytes(b"real data")
    with pytest.raises(FileExistsError, match="cifar-10-batches-py"):
        fake.write_fake_datasets(tmp_path, sources=["cifar10"], per_class=2)
    assert (real / "data_batch_1").read_bytes() == b"real data"
    # A generated root is rewritten in place: stale files of a larger earlier run disappear.
    fake.write_fake_datasets(tmp_path / "gen", sources=["notmnist"], per_class=4, test_per_class=1)
    fake.write_fake_datasets(tmp_path / "gen", sources=["notmnist"], per_class=2, test_per_class=1)
    assert len(list((tmp_path / "gen" / "notMNIST_small").rglob("*.png"))) == 31


@pytest.mark.parametrize("kwargs, message", [
    ({"per_class": 1}, "per_class must be an int >= 2, got 1"),
    ({"per_class": 2.5}, "per_class must be an int >= 2, got 2.5"),
    ({"test_per_class": 0}, "test_per_class must be an int >= 1, got 0"),
    ({"seed": -1}, "seed must be an int >= 0, got -1"),
    ({"sources": ["cifar10", "imagenet"]}, r"sources=\['cifar10', 'imagenet'\].*mnist"),
])
def test_generator_rejects_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        fake.write_fake_datasets(tmp_path, **kwargs)


def test_generator_command_line(tmp_path, capsys):
    assert fake.main([str(tmp_path / "data"), "--per-class", "2", "--sources", "mnist", "svhn"]) == 0
    out = capsys.readouterr().out
    assert "mnist" in out and "svhn" in out and "mean nothing" in out
    check_data_available("permuted_mnist", tmp_path / "data")
    assert fake.main([str(tmp_path / "data"), "--per-class", "0"]) == 1
    assert "per_class must be an int >= 2, got 0" in capsys.readouterr().err


def test_no_evaluation_batch_is_dominated_by_one_class(tmp_path):
    # notMNIST is stored letter by letter and a stratified validation split keeps the source order:
    # unshuffled, a batch of 20 would hold two classes, and batch-statistics BatchNorm would
    # normalise each batch by those two classes' statistics.
    # Only 5-datasets' sources: all of them at 200 a class took 15 GB (TinyImageNet's 200 classes).
    fake.write_fake_datasets(tmp_path, per_class=200, test_per_class=50, sources=SCENARIOS["five_datasets"].sources)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scenario = build_scenario("five_datasets", root=tmp_path)
    batch = 20
    for task in scenario.tasks:
        for split in (task.val, task.test):
            assert len(split) >= 5 * batch
            for start in range(0, len(split) - batch + 1, batch):
                labels = split.labels[start : start + batch]
                assert len(labels.unique()) >= min(len(task.classes), batch) // 2, (task.name, start, labels.tolist())
    # The test order is fixed for every run seed; validation follows the run's own split.
    other = build_scenario("five_datasets", root=tmp_path, seed=1, num_tasks=1)
    assert torch.equal(other.tasks[0].test.labels, scenario.tasks[0].test.labels)
    assert torch.equal(other.tasks[0].test.images, scenario.tasks[0].test.images)
