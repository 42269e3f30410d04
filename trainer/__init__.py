"""The trainer: when to retrain (policy, schedule, triggers), the run that fits candidates on curated
samples, the promotion gates, and the consumer that runs it (``flywheel process trainer``). The model
kinds it fits are the ``kinds`` package's; the registry it writes to is ``registry``'s."""

from trainer.exceptions import TrainerError

__all__ = ["TrainerError"]
