"""What the test files share: the small training settings every quick run uses (one home)."""

from adaqpacknet.config import Config

# One epoch and one retraining epoch per task on the CPU, no progress bars: any method learns three
# digits tasks in seconds. A test file that trains on split digits takes {**SMALL, "scenario": ...}.
SMALL = dict(num_tasks=3, epochs=1, finetune_epochs=1, batch_size=32, progress=False, device="cpu")


def small_config(scenario: str = "permuted_digits", **changes) -> Config:
    """A Config of ``SMALL`` on ``scenario``, with ``changes``."""
    return Config.from_dict({"scenario": scenario, **SMALL, **changes})
