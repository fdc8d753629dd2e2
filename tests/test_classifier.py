"""The LightningModule in real Trainer fits on small random data (CPU)."""

import lightning as L
import pytest
import torch
import torchvision
from torch.utils.data import DataLoader, TensorDataset

from lightning_modules import Classifier, DRegNet


def loader(n: int = 64, classes: int = 10, batch: int = 32, size: int = 32) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(n, 3, size, size, generator=g), torch.randint(0, classes, (n,), generator=g))
    return DataLoader(data, batch_size=batch)


def fit(model: Classifier, epochs: int = 2, **loaders) -> L.Trainer:
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, loaders.get("train", loader()), loaders.get("val", loader(32)))
    return trainer


@pytest.mark.parametrize("name", ["vgg16", "resnet18", "mobilenetv2"])
@pytest.mark.parametrize("site", [None, "R1"])
def test_two_epoch_fit_of_each_network(name, site):
    torch.manual_seed(0)
    model = Classifier(model=name, num_classes=10, width=0.125, dreg_site=site)
    trainer = fit(model)
    metrics = trainer.callback_metrics
    assert trainer.current_epoch == 2 and model.diverged_epoch is None
    assert torch.isfinite(metrics["train/loss"])
    assert 0.0 <= metrics["val/acc"] <= 1.0
    if site:
        assert {"train/ce_R", "train/ce_L", "train/dreg", "val/acc_R", "val/acc_L", "dreg/cosine"} <= set(metrics)
        assert metrics["val/acc"] == max(metrics["val/acc_R"], metrics["val/acc_L"])
        assert model.selected_path in ("R", "L")
    else:
        assert "train/ce" in metrics and "val/acc_R" not in metrics


def test_non_finite_loss_stops_the_run_as_diverged():
    torch.manual_seed(0)
    model = Classifier(model="resnet18", num_classes=10, width=0.125, dreg_site="R1", dreg_lambda=1e30, lr=10.0)
    trainer = fit(model, epochs=5, train=loader(128, batch=16))
    assert model.diverged_epoch is not None
    assert trainer.current_epoch < 5


def test_selected_path_survives_a_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = Classifier(model="resnet18", num_classes=10, width=0.125, dreg_site="R1")
    trainer = fit(model, epochs=1)
    model.selected_path = "L"
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    restored = Classifier.load_from_checkpoint(tmp_path / "last.ckpt")
    assert restored.selected_path == "L"
    restored.eval()
    x = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(restored.export().eval()(x), model.eval()(x)[1])


def test_dreg_on_a_network_the_suite_does_not_define():
    """The README example: DReg on a torchvision ResNet18, by module path."""
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10)
    model = Classifier(net=net, num_classes=10, dreg_site="layer4.1.conv2", dreg_lambda=0.1)
    assert isinstance(model.net, DRegNet)
    logits_R, logits_L = model(torch.randn(2, 3, 64, 64))
    assert logits_R.shape == logits_L.shape == (2, 10)
    exported = model.export()
    assert type(exported) is torchvision.models.ResNet


def test_warmup_ramps_the_learning_rate():
    torch.manual_seed(0)
    model = Classifier(model="resnet18", num_classes=10, width=0.125, lr=0.4, warmup_fraction=2 / 3)
    lrs = []

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    trainer = L.Trainer(
        max_epochs=3,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Record()],
    )
    trainer.fit(model, loader(64, batch=16))
    # 4 steps per epoch, 12 in all, warm-up over 2/3 of them (8 steps): lr = 0.4 * (step + 1) / 8, then 0.4.
    assert lrs[:8] == pytest.approx([0.4 * (s + 1) / 8 for s in range(8)])
    assert lrs[8:] == pytest.approx([0.4] * 4)


class Oracle(Classifier):
    """Its paths answer from the input: x[:, 0, 0, 0] is the label, x[:, 1, 0, 0] says which path is right."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y, right_is_L = x[:, 0, 0, 0].long(), x[:, 1, 0, 0].bool()
        good = torch.nn.functional.one_hot(y, 10).float()
        bad = torch.nn.functional.one_hot((y + 1) % 10, 10).float()
        flag = right_is_L[:, None]
        return torch.where(flag, bad, good), torch.where(flag, good, bad)


def oracle_loader(right_is_L: bool, n: int = 40) -> DataLoader:
    y = torch.arange(n) % 10
    x = torch.zeros(n, 3, 4, 4)
    x[:, 0, 0, 0], x[:, 1, 0, 0] = y.float(), float(right_is_L)
    return DataLoader(TensorDataset(x, y), batch_size=16)


def test_the_path_is_chosen_on_validation_and_the_test_measures_that_path_alone():
    """L is right on validation, R on the test split: the selected path is L and test/acc is L's (0%), not
    the better path on the test set (100%); both paths' test accuracies are logged apart."""
    model = Oracle(model="resnet18", num_classes=10, width=0.0625, dreg_site="R1")
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    (val,) = trainer.validate(model, oracle_loader(right_is_L=True), verbose=False)
    assert (val["val/acc_R"], val["val/acc_L"], val["val/acc"]) == (0.0, 1.0, 1.0)
    assert model.selected_path == "L"
    (test,) = trainer.test(model, oracle_loader(right_is_L=False), verbose=False)
    assert (test["test/acc_R"], test["test/acc_L"], test["test/acc"]) == (1.0, 0.0, 0.0)
    trainer.validate(model, oracle_loader(right_is_L=False), verbose=False)  # the last validation decides
    assert model.selected_path == "R"


def test_scaling_and_warmup_reach_the_optimizer_step_by_step():
    """lr 0.1, linear scaling at batch 1024 against 256: 0.4, reached over the first half of 12 steps."""
    torch.manual_seed(0)
    model = Classifier(model="resnet18", num_classes=10, width=0.125, lr=0.1, lr_scaling="linear", batch_size=1024,
                       warmup_fraction=0.5)  # fmt: skip
    lrs = []

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    trainer = L.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[Record()])  # fmt: skip
    trainer.fit(model, loader(64, batch=16))
    assert lrs == pytest.approx([0.4 * (s + 1) / 6 for s in range(6)] + [0.4] * 6)


def test_learned_weights_have_no_weight_decay():
    model = Classifier(model="resnet18", num_classes=10, width=0.125, activity_site="R1", activity_alpha=0.1,
                       activity_learnable=True)  # fmt: skip
    plain, learned = model.configure_optimizers().param_groups
    assert learned["params"] == [model.activity_weight.s] and learned["weight_decay"] == 0.0
    assert plain["weight_decay"] == 5e-4 and all(p is not model.activity_weight.s for p in plain["params"])
    assert sum(p.numel() for p in plain["params"]) + 1 == sum(p.numel() for p in model.parameters())


def test_divergence_is_checked_once_per_optimizer_step():
    """4 micro-batches per step (accumulation): one host decision per optimizer step, and a non-finite loss
    in any micro-batch ends the run as diverged."""
    torch.manual_seed(0)
    model = Classifier(model="resnet18", num_classes=10, width=0.125, dreg_site="R1")
    calls = []
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accumulate_grad_batches=4)  # fmt: skip
    decide = trainer.strategy.reduce_boolean_decision
    trainer.strategy.reduce_boolean_decision = lambda value, all=True: calls.append(value) or decide(value, all)
    trainer.fit(model, loader(128, batch=8))  # 16 micro-batches, 4 optimizer steps
    assert calls == [True] * 4 and model.diverged_epoch is None

    original = model._loss_terms

    def third_is_nan(x, y):
        terms = original(x, y)
        if len(calls) == 5 and not hasattr(third_is_nan, "done"):  # inside the second step
            third_is_nan.done = True
            terms["loss"] = terms["loss"] * float("nan")
        return terms

    model._loss_terms = third_is_nan
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accumulate_grad_batches=4)  # fmt: skip
    trainer.strategy.reduce_boolean_decision = lambda value, all=True: calls.append(value) or decide(value, all)
    trainer.fit(model, loader(128, batch=8))
    assert calls[4:] == [True, False] and model.diverged_epoch == 0 and trainer.global_step == 2  # of 8
