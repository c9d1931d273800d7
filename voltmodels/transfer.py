"""Transfer of the Li CGCNN to another working ion, and the models it is compared with.

Methods, all evaluated on the same split of the target ion:
  li_direct  the Li model applied as is;
  scratch    a CGCNN of the same architecture trained on the ion alone;
  freeze     the paper's layer-freezing transfer: embedding and convolutions fixed, only the
             hidden FC layer and the output retrained;
  finetune   every layer retrained from the Li weights at a low learning rate (the paper's other
             scenario).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from voltmodels.graphs.featurize import GraphSettings
from voltmodels.model import CGCNN
from voltmodels.training import GraphSet, TrainConfig, TrainResult, train

METHODS = ("li_direct", "scratch", "freeze", "finetune")
TRANSFER_MODES = ("freeze", "finetune")  # the `mode` param chooses among these
#: Registered for the ion; `@champion` goes to whichever has the lowest validation MAE. Scratch is a
#: candidate too: on several ions a CGCNN trained on the ion alone rivals the transferred ones.
REGISTERED_METHODS = ("scratch", "freeze", "finetune")
MIN_ROWS = 20  # below this a train/val/test split leaves nothing meaningful to test


@dataclass(frozen=True)
class TransferConfig:
    epochs: int = 200
    patience: int = 30
    batch_size: int = 32
    lr_freeze: float = 3e-3
    lr_finetune: float = 3e-4
    lr_scratch: float = 2e-3
    weight_decay: float = 1e-5
    seed: int = 0


def fit_method(method: str, base: CGCNN, sets: dict[str, GraphSet], settings: GraphSettings, config: TransferConfig) -> tuple[CGCNN, TrainResult | None]:
    """The model of one method for one split (li_direct is the base model, untouched)."""
    if method == "li_direct":
        return base, None
    if method == "scratch":
        model, lr, trainable = CGCNN(base.config), config.lr_scratch, "all"
    elif method == "freeze":
        model, lr, trainable = copy.deepcopy(base), config.lr_freeze, "head"
    elif method == "finetune":
        model, lr, trainable = copy.deepcopy(base), config.lr_finetune, "all"
    else:
        raise ValueError(f"unknown transfer method {method!r}")
    train_config = TrainConfig(
        epochs=config.epochs,
        learning_rate=lr,
        weight_decay=config.weight_decay,
        batch_size=config.batch_size,
        patience=config.patience,
        seed=config.seed,
        trainable=trainable,
    )
    result = train(model, sets["train"], sets["val"], settings, train_config, progress=False)
    return result.model, result
