"""Training the searched child: ``qnas retrain`` (see :mod:`qnas.train.retrain`)."""
from .retrain import (DEFAULT_LR, LR_REFERENCE_BATCH, PAPER_LR, RetrainConfig, RetrainResult,
                      load_retrained, retrain)

__all__ = ["RetrainConfig", "RetrainResult", "retrain", "load_retrained", "DEFAULT_LR",
           "PAPER_LR", "LR_REFERENCE_BATCH"]
