"""On a GPU: the same computation as on the CPU, in the layout and precision the presets use there."""

import pytest
import torch

from datamodules import CIFAR10DataModule, write_fake_cifar
from lightning_modules import Classifier

pytestmark = pytest.mark.cuda


def test_a_bf16_channels_last_dreg_step_on_the_gpu_keeps_the_distance_in_float32():
    torch.manual_seed(0)
    model = Classifier(model="vgg16", num_classes=10, width=0.25, dreg_site="R1", channels_last=True).cuda()
    x = torch.randn(64, 3, 32, 32, device="cuda").contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (64,), device="cuda")
    with torch.autocast("cuda", torch.bfloat16):
        terms = model._loss_terms(x, y)
    assert terms["dreg"].dtype == torch.float32 and terms["ce_R"].dtype == torch.float32
    terms["loss"].backward()
    assert model.net.branch_L["conv"].weight.grad.is_contiguous(memory_format=torch.channels_last)


def test_both_paths_on_the_gpu_equal_their_exports_and_the_cpu():
    torch.manual_seed(0)
    model = Classifier(model="resnet18", num_classes=10, width=0.25, dreg_site="R1", dreg_eps=0.5).eval()
    x = torch.randn(8, 3, 32, 32)
    cpu = model(x)
    model = model.cuda()
    gpu = model(x.cuda())
    for path, on_cpu, on_gpu in zip("RL", cpu, gpu, strict=True):
        torch.testing.assert_close(on_gpu.cpu(), on_cpu, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(model.net.export(path).eval()(x.cuda()), on_gpu)


def test_the_device_loader_gives_the_gpu_the_cpus_batches(tmp_path):
    data = write_fake_cifar(tmp_path, "cifar10", n_train=300, n_test=0)
    batches = []
    for device in ("cpu", "cuda"):
        dm = CIFAR10DataModule(data_dir=data, batch_size=50, val_size=0, verify=False)
        dm.setup()
        dm._device = lambda device=device: torch.device(device)
        batches.append([(x.cpu(), y.cpu()) for x, y in dm.train_dataloader()])
    for (a, b), (c, d) in zip(*batches, strict=True):
        torch.testing.assert_close(a, c, rtol=0, atol=1e-6)
        assert torch.equal(b, d)
