"""Training the searched child: ``qnas retrain`` (:mod:`.retraining`; settings in :mod:`.config`)."""
from .._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "RetrainConfig": "config", "PAPER_LR": "config", "LR_REFERENCE_BATCH": "config",
    "RetrainResult": "retraining", "retrain": "retraining", "load_retrained": "retraining",
})
