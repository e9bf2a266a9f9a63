"""What the test files share (one home): the small training settings every quick run uses, and
data sources isolated per test."""

import pytest

from adaqpacknet.config import Config
from adaqpacknet.data import clear_source_cache
from adaqpacknet.data import sources as sources_mod

# One epoch and one retraining epoch per task on the CPU, no progress bars: any method learns three
# digits tasks in seconds. A test file that trains on split digits takes {**SMALL, "scenario": ...}.
SMALL = dict(num_tasks=3, epochs=1, finetune_epochs=1, batch_size=32, progress=False, device="cpu")


def small_config(scenario: str = "permuted_digits", **changes) -> Config:
    """A Config of ``SMALL`` on ``scenario``, with ``changes``."""
    return Config.from_dict({"scenario": scenario, **SMALL, **changes})


@pytest.fixture
def isolated_sources(tmp_path, monkeypatch):
    """Fresh sources (the in-process cache cleared) and no system-wide Fashion-MNIST (this machine
    has Debian's): a test sees only the data files it writes. Data test files use it for every test."""
    monkeypatch.setenv(sources_mod.FASHION_MNIST_DIR_ENV, str(tmp_path / "no-system-fashion-mnist"))
    clear_source_cache()
    yield
    clear_source_cache()
