"""Data layer: raw sources (`sources`) and continual-learning scenarios (`scenarios`)."""

from .scenarios import (
    CLASS_ORDERS,
    SCENARIOS,
    BatchTransform,
    Scenario,
    ScenarioSpec,
    Task,
    TaskDataset,
    build_scenario,
    channel_stats,
    check_data_available,
    required_sources,
)
from .sources import (
    DEBIAN_FASHION_MNIST_DIR,
    FAKE_MANIFEST,
    FASHION_MNIST_DIR_ENV,
    SOURCES,
    DatasetNotFoundError,
    ImageSet,
    Source,
    check_source,
    clear_source_cache,
    fake_manifest,
    fashion_mnist_system_dir,
    load_source,
    stratified_split,
)

__all__ = [
    "CLASS_ORDERS", "SCENARIOS", "BatchTransform", "Scenario", "ScenarioSpec", "Task", "TaskDataset",
    "build_scenario", "channel_stats", "check_data_available", "required_sources",
    "DEBIAN_FASHION_MNIST_DIR", "FAKE_MANIFEST", "FASHION_MNIST_DIR_ENV", "SOURCES", "DatasetNotFoundError", "ImageSet",
    "Source", "check_source", "clear_source_cache", "fake_manifest", "fashion_mnist_system_dir", "load_source", "stratified_split",
]
