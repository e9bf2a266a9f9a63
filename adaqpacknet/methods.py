"""Every method the package runs, by the name ``Config.method`` gives it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .classic import ClassicStrategy
from .config import AVALANCHE_METHODS, Config
from .continual import ContinualLearner
from .data import Scenario
from .learner import AdaQPacknet
from .results import folder_lock, remove_leftovers
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


def learner_for(config: Config, scenario: Scenario | None = None) -> ContinualLearner:
    """The learner of ``config.method``, built (data checked) but not yet run; on ``scenario`` when
    given (runs on the same data share one: ``experiments.run_configs``), else on its own."""
    return LEARNERS[config.method](config, scenario)


def run(config: Config, out_dir: str | Path | None = None) -> dict[str, Any]:
    """Build the learner for ``config`` and run it (resuming from ``out_dir`` if it holds a checkpoint)."""
    return run_learner(learner_for(config), out_dir)


def run_learner(learner: ContinualLearner, out_dir: str | Path | None = None) -> dict[str, Any]:
    """Run ``learner``; with ``out_dir``, under the folder's lock (a second process on the same run
    waits for the first), after removing what an interrupted write left behind, resuming from its
    checkpoint."""
    if out_dir is None:
        return learner.run()
    with folder_lock(out_dir):
        remove_leftovers(out_dir)
        return learner.run(out_dir)
