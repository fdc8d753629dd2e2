"""The LightningModule: a CIFAR network with optional DReg and activity regularization.

The loss is assembled in ``_loss_terms``; lambda enters there, in one line,
next to the two cross-entropy terms (docs/method.md §1, paper Eq. 3).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.amp.autocast_mode import is_autocast_available
from torchmetrics.classification import MulticlassAccuracy

from lightning_modules.dreg import DRegNet
from lightning_modules.nets import build_net
from lightning_modules.regularizers import ActivityPenalty, UncertaintyWeight
from lightning_modules.settings import ConfigError, ModuleSettings, scaled_lr, warmup_factor


class Classifier(L.LightningModule):
    """Image classifier with optional DReg (two paths) and an optional activity penalty.

    ``net`` may be any ``nn.Module`` (e.g. a torchvision model); otherwise ``model``/``num_classes``/``width``
    build one of the suite's CIFAR networks. Its settings are declared in ``lightning_modules/settings.py``.
    """

    def __init__(self, num_classes: int = 10, batch_size: int = 128, net: nn.Module | None = None, **settings: Any):
        """``batch_size`` is the global batch (the scaling rules use it); ``settings`` are ModuleSettings'."""
        super().__init__()
        unknown = sorted(set(settings) - {f.name for f in dataclasses.fields(ModuleSettings)})
        if unknown:
            raise ConfigError(f"unknown setting(s) {', '.join(unknown)}: see lightning_modules/settings.py")
        self.settings = s = ModuleSettings(**settings)
        s.check()
        self.save_hyperparameters({"num_classes": num_classes, "batch_size": batch_size, **dataclasses.asdict(s)})
        base = net if net is not None else build_net(s.model, num_classes, s.width)
        if s.sync_batchnorm:  # before wrapping: DRegNet's graph holds the BatchNorm modules it was built with
            base = nn.SyncBatchNorm.convert_sync_batchnorm(base)
        # Hooked before wrapping, so the hook sees the base network's module paths.
        self.activity = ActivityPenalty(base, s.activity_site, s.activity_norm) if s.activity_site else None
        self.activity_weight = UncertaintyWeight() if s.activity_learnable else None
        self.dreg = s.dreg_site is not None
        self.net = DRegNet(base, s.dreg_site, s.dreg_eps, s.dreg_include_bias) if self.dreg else base
        if s.channels_last:  # NHWC convs run ~1.5x faster on CPUs with oneDNN and on tensor-core GPUs
            self.net.to(memory_format=torch.channels_last)
        paths = ("R", "L") if self.dreg else ("",)
        self.val_acc = nn.ModuleDict({p or "net": MulticlassAccuracy(num_classes, average="micro") for p in paths})
        self.test_acc = copy.deepcopy(self.val_acc)
        self.selected_path = "R"
        self.diverged_epoch: int | None = None
        self._finite: torch.Tensor | None = None  # all micro-batch losses of this optimizer step finite

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        return self.net(x)

    def _loss_terms(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        hp = self.settings
        terms: dict[str, torch.Tensor] = {}
        if self.dreg:
            logits_R, logits_L = self.net(x)
            terms["ce_R"] = F.cross_entropy(logits_R, y)
            terms["ce_L"] = F.cross_entropy(logits_L, y)
            ce = terms["ce_R"] + terms["ce_L"] if hp.path_loss == "sum" else (terms["ce_R"] + terms["ce_L"]) / 2
            terms["dreg"] = self._dreg_term()
            # paper Eq. 3 (docs/method.md): L = CE_R + CE_L - lambda * ||W_R - W_L||_F^2
            loss = ce - hp.dreg_lambda * terms["dreg"]
        else:
            terms["ce"] = loss = F.cross_entropy(self.net(x), y)
        if self.activity is not None:
            terms["activity"] = hp.activity_alpha * self.activity.value()
            weighted = self.activity_weight(terms["activity"]) if self.activity_weight else terms["activity"]
            loss = loss + weighted
        terms["loss"] = loss
        return terms

    def _dreg_term(self) -> torch.Tensor:
        """The distance that lambda multiplies, per ``dreg_form``; in float32 also under bf16 autocast."""
        kind = self.device.type
        with torch.autocast(kind, enabled=False) if is_autocast_available(kind) else contextlib.nullcontext():
            if self.settings.dreg_form == "frobenius":
                return self.net.distance()  # ||W_R - W_L||^2, as Eq. 3 writes it
            if self.settings.dreg_form == "norm":
                return self.net.distance().sqrt()  # ||W_R - W_L||: bounded by weight decay
            if self.settings.dreg_form == "mse":
                return self.net.distance() / self.net.size()  # mean((W_R - W_L)^2), as F.mse_loss(W_R, W_L)
            return self.net.cosine_distance()

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        terms = self._loss_terms(x, y)
        finite = terms["loss"].isfinite()  # on the device: no host sync per micro-batch
        self._finite = finite if self._finite is None else self._finite & finite
        self.log_dict(
            {f"train/{k}": v.detach() for k, v in terms.items()}, on_step=False, on_epoch=True, sync_dist=True
        )
        self.log("loss", terms["loss"].detach(), prog_bar=True, on_step=True, on_epoch=False, logger=False)
        return terms["loss"]

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Once per optimizer step (not per micro-batch): did any micro-batch's loss turn non-finite, on any rank?

        Then the run ends as `diverged` (docs/method.md §5): this step's gradients are zeroed and the Trainer
        stops; the epoch's metrics row is not written.
        """
        finite, self._finite = bool(self._finite), None
        if not self.trainer.strategy.reduce_boolean_decision(finite, all=True):
            self.diverged_epoch = self.current_epoch
            self.trainer.should_stop = True
            optimizer.zero_grad(set_to_none=False)

    def on_train_start(self) -> None:
        if self.dreg:  # the initial distance (docs/method.md §1: > 0 and logged), before any step
            for logger in self.loggers:
                logger.log_metrics({"dreg/initial_distance": self.net.diagnostics()["distance"]}, step=0)

    def on_train_epoch_end(self) -> None:
        self.log("train/lr", self.optimizers().param_groups[0]["lr"])
        if self.dreg:
            self.log_dict({f"dreg/{k}": v for k, v in self.net.diagnostics().items()})

    def _eval_step(self, batch: tuple[torch.Tensor, torch.Tensor], metrics: nn.ModuleDict) -> None:
        x, y = batch
        out = self(x)
        for (_, metric), logits in zip(metrics.items(), out if self.dreg else (out,), strict=True):
            metric.update(logits, y)

    def _eval_epoch_end(self, stage: str, metrics: nn.ModuleDict) -> dict[str, float]:
        acc = {name: metric.compute() for name, metric in metrics.items()}
        for metric in metrics.values():
            metric.reset()
        if not self.dreg:
            self.log(f"{stage}/acc", acc["net"], prog_bar=True)
            return {"net": float(acc["net"])}
        self.log_dict({f"{stage}/acc_R": acc["R"], f"{stage}/acc_L": acc["L"]})
        return {k: float(v) for k, v in acc.items()}

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.val_acc)

    def on_validation_epoch_end(self) -> None:
        acc = self._eval_epoch_end("val", self.val_acc)
        if self.dreg:
            # The model that would be selected is the better path on validation (paper Fig. 1d); the last
            # validated epoch decides which path is exported and tested.
            self.log("val/acc", max(acc["R"], acc["L"]), prog_bar=True)
            if not self.trainer.sanity_checking:
                self.selected_path = "R" if acc["R"] >= acc["L"] else "L"

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.test_acc)

    def on_test_epoch_end(self) -> None:
        acc = self._eval_epoch_end("test", self.test_acc)
        if self.dreg:  # the path chosen on validation, measured once; never the better one on the test set
            self.log("test/acc", acc[self.selected_path])

    def learning_rate(self) -> float:
        """The base LR after the optional batch-size scaling rule (docs/method.md §4)."""
        hp = self.settings
        return scaled_lr(hp.lr, hp.lr_scaling, self.hparams.batch_size, hp.lr_base_batch)

    def configure_optimizers(self) -> Any:
        hp = self.settings
        learned = [p for m in (self.activity_weight,) if m is not None for p in m.parameters()]
        learned_ids = {id(p) for p in learned}
        groups = [{"params": [p for p in self.parameters() if id(p) not in learned_ids]}]
        if learned:  # the learned weights' log-scale s must not be pulled to 0 by weight decay
            groups.append({"params": learned, "weight_decay": 0.0})
        optimizer = torch.optim.SGD(groups, lr=self.learning_rate(), **hp.sgd())
        if hp.warmup_fraction <= 0:
            return optimizer
        warmup_steps = max(1.0, hp.warmup_fraction * self.trainer.estimated_stepping_batches)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_factor(step, warmup_steps))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["selected_path"] = self.selected_path

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.selected_path = checkpoint.get("selected_path", "R")

    def export(self) -> nn.Module:
        """The selected path as a plain network (docs/method.md §1), ready for ``torch.save`` or inference."""
        return self.net.export(self.selected_path) if self.dreg else copy.deepcopy(self.net)
