"""Train 3 steps on 1 or 2 CPU processes (gloo DDP) and save the parameters, for tests/test_ddp_equivalence.py.

Usage: python tests/ddp_equivalence.py DATA_DIR OUT.pt DEVICES {frozen,ghost}
DReg and the activity penalty are on, augmentation is off. `frozen` keeps BatchNorm in eval mode, so
each sample's output does not depend on which device it lands on; `ghost` is normal training, where
BatchNorm normalizes over each device's own micro-batch. lr 0.01: with BatchNorm frozen at its
initial statistics the network is unnormalized, and lr 0.1 overflows within 2 steps.
"""

import sys

import lightning as L
import torch

from datamodules import CIFAR10DataModule
from lightning_modules import Classifier


class FrozenBatchNorm(L.Callback):
    """BatchNorm in eval mode during training (Lightning puts the model in train mode every epoch)."""

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: object, idx: int) -> None:
        for module in pl_module.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()


def main(data_dir: str, out: str, devices: int, batchnorm: str) -> None:
    L.seed_everything(0, verbose=False)
    model = Classifier(
        model="resnet18", num_classes=10, width=0.125, dreg_site="R1", dreg_lambda=0.1,
        activity_site="R2", activity_alpha=1e-3, lr=0.01, momentum=0.9,
    )  # fmt: skip
    data = CIFAR10DataModule(data_dir=data_dir, batch_size=32, val_size=0, augment=False, verify=False, seed=0)
    trainer = L.Trainer(
        max_steps=3, accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto",
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, use_distributed_sampler=False,
        callbacks=[FrozenBatchNorm()] if batchnorm == "frozen" else [],
    )  # fmt: skip
    trainer.fit(model, data)
    if trainer.is_global_zero:
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
