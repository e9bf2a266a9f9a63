"""Every method the package runs, by the name ``Config.method`` gives it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .classic import ClassicStrategy
from .config import AVALANCHE_METHODS, Config
from .continual import ContinualLearner
from .learner import AdaQPacknet
from .upper_bounds import Independent, Joint
from .wsn import WSN

LEARNERS: dict[str, type[ContinualLearner]] = {
    "ada_qpacknet": AdaQPacknet,
    "packnet": AdaQPacknet,
    "wsn": WSN,
    "independent": Independent,
    "joint": Joint,
    **{name: ClassicStrategy for name in AVALANCHE_METHODS},
}


def learner_for(config: Config) -> ContinualLearner:
    """The learner of ``config.method``, built (data checked) but not yet run."""
    return LEARNERS[config.method](config)


def run(config: Config, out_dir: str | Path | None = None) -> dict[str, Any]:
    """Build the learner for ``config`` and run it (resuming from ``out_dir`` if it holds a checkpoint)."""
    return learner_for(config).run(out_dir)
