"""Training and fine-tuning: datasets, planning, caching, losses, transforms, loop, DDP, cross-validation.

Python API::

    from ichseg.train import TrainConfig, FinetuneConfig, train, finetune
    package = train(TrainConfig(datasets=[Path("Dataset001")], output=Path("models/ich-1.0.0"), steps=2000))
    newer = finetune(FinetuneConfig(datasets=[Path("corrected")], model=package, output=Path("models/ich-1.1.0"),
                                    replay=[Path("Dataset001")], replay_fraction=0.3, freeze_encoder=True))

``run_training``/``run_finetune`` return a ``TrainResult`` (package path, plan, per-fold loop results).
Note: the name ``ichseg.train.finetune`` is the function; import the module's other names with
``from ichseg.train.finetune import ...``.
"""

from __future__ import annotations

from .api import TrainResult, run_training, train
from .config import FinetuneConfig, TrainConfig
from .finetune import finetune, run_finetune

__all__ = ["TrainConfig", "FinetuneConfig", "TrainResult", "train", "finetune", "run_training", "run_finetune"]
