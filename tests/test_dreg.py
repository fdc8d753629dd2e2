"""DRegNet, the loss and the regularizers, each against a hand computation on a tiny network."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from tiny import Tiny
from torch import nn
from torch.func import functional_call

from lightning_modules import ActivityPenalty, Classifier, ConfigError, DRegNet, UncertaintyWeight


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(8, 3, 6, 6, generator=g), torch.randint(0, 3, (8,), generator=g)


def make(lam: float = 0.1, **kw) -> Classifier:
    torch.manual_seed(0)
    return Classifier(net=Tiny(), num_classes=3, dreg_site="R1", dreg_lambda=lam, **kw)


def path_L_params(model: Classifier) -> dict[str, torch.Tensor]:
    """The L path as parameters of the plain network: W_L and BN_L swapped in at the site."""
    d = model.net
    return {
        "conv2.weight": d.branch_L["conv"].weight,
        "bn2.weight": d.branch_L["bn"].weight,
        "bn2.bias": d.branch_L["bn"].bias,
    }


def test_loss_and_its_three_terms(batch):
    x, y = batch
    model = make(lam=0.3)
    terms = model._loss_terms(x, y)
    plain = model.net.net
    ce_R = F.cross_entropy(plain(x), y)
    ce_L = F.cross_entropy(functional_call(plain, path_L_params(model), (x,)), y)
    dist = (plain.conv2.weight - model.net.branch_L["conv"].weight).pow(2).sum()
    torch.testing.assert_close(terms["ce_R"], ce_R)
    torch.testing.assert_close(terms["ce_L"], ce_L)
    torch.testing.assert_close(terms["dreg"], dist)
    torch.testing.assert_close(terms["loss"], ce_R + ce_L - 0.3 * dist)


def test_path_loss_mean_halves_the_ce_sum(batch):
    x, y = batch
    terms = make(lam=0.3, path_loss="mean")._loss_terms(x, y)
    torch.testing.assert_close(terms["loss"], (terms["ce_R"] + terms["ce_L"]) / 2 - 0.3 * terms["dreg"])


def test_grad_of_W_R_is_ce_R_grad_minus_penalty_grad(batch):
    """Paper Eq. 5: dL/dW_R = dCE_R/dW_R - 2 lambda (W_R - W_L)."""
    x, y = batch
    lam = 0.5
    model = make(lam=lam)
    model._loss_terms(x, y)["loss"].backward()
    W_R, W_L = model.net.net.conv2.weight, model.net.branch_L["conv"].weight
    reference = Tiny()
    reference.load_state_dict(model.net.net.state_dict())
    (g_ce_R,) = torch.autograd.grad(F.cross_entropy(reference(x), y), reference.conv2.weight)
    torch.testing.assert_close(W_R.grad, g_ce_R - 2 * lam * (W_R - W_L).detach())


def test_shared_prefix_gets_the_sum_of_both_paths_gradients(batch):
    x, y = batch
    model = make()
    model._loss_terms(x, y)["loss"].backward()
    plain = model.net.net
    params = {k: v.detach().requires_grad_() for k, v in plain.named_parameters()}
    ce_R = F.cross_entropy(functional_call(plain, params, (x,)), y)
    ce_L = F.cross_entropy(functional_call(plain, {**params, **path_L_params(model)}, (x,)), y)
    (g_R,) = torch.autograd.grad(ce_R, params["conv1.weight"])
    (g_L,) = torch.autograd.grad(ce_L, params["conv1.weight"])
    torch.testing.assert_close(plain.conv1.weight.grad, g_R + g_L)


def test_changing_W_L_leaves_logits_R_unchanged(batch):
    x, _ = batch
    model = make().eval()
    before_R, before_L = model(x)
    with torch.no_grad():
        model.net.branch_L["conv"].weight.mul_(-3.0)
    after_R, after_L = model(x)
    torch.testing.assert_close(before_R, after_R)
    assert not torch.allclose(before_L, after_L)


def test_prefix_runs_once_site_and_suffix_once_per_path(batch):
    x, _ = batch
    net = make().net
    calls = {"conv1": 0, "conv2": 0, "conv_L": 0, "fc": 0}
    for name, module in [
        ("conv1", net.net.conv1),
        ("conv2", net.net.conv2),
        ("conv_L", net.branch_L["conv"]),
        ("fc", net.net.fc),
    ]:
        module.register_forward_hook(lambda *_, name=name: calls.__setitem__(name, calls[name] + 1))
    net(x)
    assert calls == {"conv1": 1, "conv2": 1, "conv_L": 1, "fc": 2}


def test_initial_distance_is_positive_and_small():
    """W_L = W_R + eps std(W_R) z with z the next N(0, 1) draw: the distance is eps^2 std^2 ||z||^2, exactly."""
    torch.manual_seed(0)
    tiny = Tiny()
    state = torch.get_rng_state()
    net = DRegNet(tiny, "conv2", eps=0.01)
    torch.set_rng_state(state)
    w = net.net.conv2.weight
    z = torch.randn_like(w)
    torch.testing.assert_close(net.branch_L["conv"].weight, w + 0.01 * w.std() * z)
    assert net.distance().item() == pytest.approx(0.01**2 * w.std().item() ** 2 * z.pow(2).sum().item(), rel=1e-5)
    assert 0 < net.distance().item() / w.pow(2).sum().item() < 1e-3


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_distance_value_and_gradients_by_hand(layout):
    """d/dW_R ||W_R - W_L||^2 = 2 (W_R - W_L) = -d/dW_L, biases included when asked, any memory layout."""
    torch.manual_seed(0)
    net = DRegNet(Tiny(), "conv2", eps=0.5, include_bias=True).to(memory_format=layout)
    w_R, w_L = net.branch_params("R"), net.branch_params("L")
    assert len(w_R) == 3  # conv weight, BN weight, BN bias
    (3.0 * net.distance()).backward()
    pairs = list(zip(w_R, w_L, strict=True))
    assert net.distance().item() == pytest.approx(sum((a - b).pow(2).sum().item() for a, b in pairs))
    for a, b in pairs:
        torch.testing.assert_close(a.grad, 6.0 * (a - b).detach())
        torch.testing.assert_close(b.grad, -6.0 * (a - b).detach())


@pytest.mark.parametrize("path", ["R", "L"])
def test_export_matches_the_path_and_has_no_dreg_structure(batch, path):
    x, y = batch
    model = make()
    model.train()
    for _ in range(2):  # move running stats and weights away from their copies
        model._loss_terms(x, y)["loss"].backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.1 * p.grad
                p.grad = None
    model.eval()
    logits = dict(zip("RL", model(x), strict=True))
    exported = model.net.export(path).eval()
    assert type(exported) is Tiny
    assert not any(isinstance(m, DRegNet) for m in exported.modules())
    torch.testing.assert_close(exported(x), logits[path])


def test_site_by_r_name_and_bad_sites():
    assert DRegNet(Tiny(), "R2").site == "conv1"
    with pytest.raises(ValueError, match="R9"):
        DRegNet(Tiny(), "R9")
    with pytest.raises(ValueError, match="not a Conv2d"):
        DRegNet(Tiny(), "bn1")
    with pytest.raises(ValueError, match="nope"):
        DRegNet(Tiny(), "nope")


def test_activity_penalty_value_and_gradient(batch):
    x, _ = batch
    net = Tiny().train()
    captured = {}
    net.bn1.register_forward_hook(lambda m, i, out: captured.update(a=out))
    l1, l2 = ActivityPenalty(net, "bn1", "l1"), ActivityPenalty(net, "bn1", "l2")
    net(x)
    a = captured["a"]
    a.retain_grad()
    torch.testing.assert_close(l1.value(), a.abs().sum((1, 2, 3)).mean())
    value = l2.value()
    torch.testing.assert_close(value, a.pow(2).sum((1, 2, 3)).mean())
    value.backward()
    torch.testing.assert_close(a.grad, 2 * a.detach() / a.shape[0])  # d/da of the per-sample mean


def test_activity_penalty_does_not_depend_on_the_batch_size():
    net = Tiny().eval()  # eval BN: each sample's activation is independent of the others
    penalty = ActivityPenalty(net, "conv1", "l2")
    net.conv1.train()
    x = torch.randn(4, 3, 6, 6)
    net(x)
    whole = penalty.value()
    net(x[:2]), net(x[2:])
    torch.testing.assert_close(penalty.value(), whole)


def test_uncertainty_weight_gradient_and_that_it_moves(batch):
    w = UncertaintyWeight(0.5)
    term = torch.tensor(2.0)
    w(term).backward()
    assert w.s.grad.item() == pytest.approx(1 - math.exp(-0.5) * 2.0)
    x, y = batch
    torch.manual_seed(0)
    model = Classifier(net=Tiny(), num_classes=3, activity_site="bn1", activity_alpha=1.0, activity_learnable=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        model._loss_terms(x, y)["loss"].backward()
        opt.step()
    assert abs(model.activity_weight.s.item()) > 1e-3


def growth_ratios(form: str, steps: int, lr: float = 0.1, mu: float = 0.9, lam: float = 0.1, wd: float = 5e-4):
    torch.manual_seed(0)
    model = make(lam=lam, dreg_form=form)
    x, y = torch.randn(16, 3, 6, 6), torch.randint(0, 3, (16,))
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=mu, weight_decay=wd)
    norms = []
    for _ in range(steps):
        opt.zero_grad()
        model._loss_terms(x, y)["loss"].backward()
        opt.step()
        norms.append(math.sqrt(model.net.distance().item()))
    return model, [b / a for a, b in itertools.pairwise(norms)]


def test_distance_grows_by_the_analytic_root_under_momentum():
    """docs/method.md §1: ||W_R - W_L|| grows per step by the largest root of r^2 - (1+mu+lr(4 lambda - wd)) r + mu."""
    lr, mu, lam, wd = 0.1, 0.9, 0.1, 5e-4
    b = 1 + mu + lr * (4 * lam - wd)
    root = (b + math.sqrt(b * b - 4 * mu)) / 2
    assert root == pytest.approx(1.172, abs=1e-3)
    _, ratios = growth_ratios("frobenius", 80, lr, mu, lam, wd)
    assert ratios[-1] == pytest.approx(root, rel=2e-3)
    assert ratios[-10] == pytest.approx(root, rel=2e-3)


def test_cosine_form_stays_bounded():
    model, _ = growth_ratios("cosine", 80)
    assert 0 <= model.net.cosine_distance().item() <= 4
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert model.net.diagnostics()["norm_L"] < 100


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dreg_learnable": True}, "run off to infinity"),
        ({"dreg_form": "l1"}, "dreg_form"),
        ({"path_loss": "max"}, "path_loss"),
        ({"dreg_lambda": float("nan")}, "dreg_lambda"),
        ({"lr": float("inf")}, "lr"),
        ({"lr": -1.0}, "lr"),
        ({"lr_scaling": "cubic"}, "lr_scaling"),
        ({"momentum": 0.0, "nesterov": True}, "nesterov"),
        ({"activity_learnable": True}, "activity_site"),
    ],
)
def test_bad_settings_raise_a_config_error(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Classifier(net=Tiny(), num_classes=3, dreg_site="R1", **kwargs)


@pytest.mark.parametrize(("rule", "expected"), [("none", 0.1), ("linear", 0.8), ("sqrt", 0.1 * math.sqrt(8))])
def test_lr_scaling_rules(rule, expected):
    model = Classifier(net=Tiny(), num_classes=3, lr=0.1, lr_scaling=rule, batch_size=2048, lr_base_batch=256)
    assert model.learning_rate() == pytest.approx(expected)


# --- networks from outside the suite: Python that branches on the mode, BatchNorm subclasses, loose buffers --


class HalveInTraining(nn.Module):
    """A custom module outside torch.nn whose forward branches on ``self.training`` (like stochastic depth)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 0.5 if self.training else x


class BNReLU(nn.BatchNorm2d):
    """A BatchNorm subclass fused with its activation, defined outside torch.nn (as model zoos do)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(super().forward(x))


class ScaledBlock(nn.Module):
    """The block holding the site: a BN subclass after it, a buffer used outside any module call, a mode branch."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn = BNReLU(8)
        self.register_buffer("scale", torch.full((1, 8, 1, 1), 1.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.conv(x)) * self.scale
        return y + x if self.training else y - x


class ZooNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), BNReLU(8), HalveInTraining())
        self.block = ScaledBlock()
        self.drop = HalveInTraining()
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.block(self.stem(x))).mean((2, 3)))


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("convert", [None, "double"])
def test_a_model_zoo_network_splits_in_both_modes(mode, convert):
    """Branches on self.training (in the site's block and elsewhere), a BatchNorm subclass applying its
    activation right after the site, and a buffer used outside a module call: both paths equal their exports
    in training and evaluation mode, also after a dtype conversion."""
    torch.manual_seed(0)
    dreg = DRegNet(ZooNet(), "block.conv", eps=0.5)
    assert dreg.bn_path == "block.bn" and isinstance(dreg.branch_L["bn"], BNReLU)
    if convert:
        dreg = getattr(dreg, convert)()
    dtype = torch.float64 if convert else torch.float32
    x = torch.randn(4, 3, 8, 8, dtype=dtype)
    for _ in range(2):  # the running statistics move in training mode: do it the same way in each copy
        dreg.train()
        exported = [dreg.export(p).train() for p in ("R", "L")]
        getattr(dreg, mode)()
        for net in exported:
            getattr(net, mode)()
        out_R, out_L = dreg(x)
        torch.testing.assert_close(out_R, exported[0](x))
        torch.testing.assert_close(out_L, exported[1](x))
    assert not torch.allclose(out_R, out_L)


def test_the_loose_buffer_follows_the_network_to_a_new_dtype():
    dreg = DRegNet(ZooNet(), "block.conv").eval()
    x = torch.randn(2, 3, 8, 8)
    before = dreg(x)[0]
    dreg.net.block.scale.mul_(2)  # in place: the graph reads the live buffer
    assert not torch.allclose(dreg(x)[0], before)
    dreg = dreg.double()
    assert dreg(x.double())[0].dtype == torch.float64


# --- the other readings, the diagnostics, and the errors, against hand computations ------------------------


def test_cosine_distance_and_diagnostics_by_hand():
    torch.manual_seed(0)
    net = DRegNet(Tiny(), "conv2", eps=0.5)
    a, b = net.net.conv2.weight.detach().flatten(), net.branch_L["conv"].weight.detach().flatten()
    cos = float(a @ b / (a.norm() * b.norm()))
    assert net.cosine_distance().item() == pytest.approx(2 - 2 * cos, rel=1e-5)
    assert net.diagnostics() == pytest.approx(
        {"distance": float((a - b).pow(2).sum()), "norm_R": float(a.norm()), "norm_L": float(b.norm()), "cosine": cos},
        rel=1e-5,
    )


@pytest.mark.parametrize("form", ["cosine", "norm"])
def test_the_loss_of_each_reading(batch, form):
    x, y = batch
    model = make(lam=0.3, dreg_form=form)
    terms = model._loss_terms(x, y)
    penalty = model.net.cosine_distance() if form == "cosine" else model.net.distance().sqrt()
    torch.testing.assert_close(terms["dreg"], penalty)
    torch.testing.assert_close(terms["loss"], terms["ce_R"] + terms["ce_L"] - 0.3 * penalty)


def test_the_mse_reading_and_its_gradient_by_hand(batch):
    """SPEC 8.2: lambda mean((W_R - W_L)^2) over the N weights; dL/dW_R = dCE_R/dW_R - 2 lambda (W_R - W_L) / N."""
    x, y = batch
    lam = 0.5
    model = make(lam=lam, dreg_form="mse")
    terms = model._loss_terms(x, y)
    W_R, W_L = model.net.net.conv2.weight, model.net.branch_L["conv"].weight
    n = W_R.numel()
    assert model.net.size() == n == 4 * 4 * 3 * 3
    torch.testing.assert_close(terms["dreg"], F.mse_loss(W_R, W_L))
    terms["loss"].backward()
    reference = Tiny()
    reference.load_state_dict(model.net.net.state_dict())
    (g_ce_R,) = torch.autograd.grad(F.cross_entropy(reference(x), y), reference.conv2.weight)
    torch.testing.assert_close(W_R.grad, g_ce_R - 2 * lam * (W_R - W_L).detach() / n)


def test_the_mse_reading_cannot_make_the_distance_grow_where_n_exceeds_4_lambda_over_wd():
    """SPEC 8.2: the penalty's root has 4 lambda / N for 4 lambda; with N = 144 > 4 lambda / wd at lambda 0.01,
    wd 5e-4 (80), weight decay wins: the branches stay as close as the two paths' cross-entropies put them."""
    _, frobenius = growth_ratios("frobenius", 60, lam=0.01)
    _, mse = growth_ratios("mse", 60, lam=0.01)
    assert math.prod(frobenius[-20:]) > 1.5 and math.prod(mse[-20:]) < 1  # 1.80 and 0.994 when written


class BiasNoBN(Tiny):
    """conv2 with a bias and no BatchNorm after it: a ReLU follows the site."""

    def __init__(self) -> None:
        super().__init__()
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        return self.fc(F.relu(self.conv2(x)).mean((2, 3)))


def test_a_conv_bias_and_a_site_without_batchnorm(batch):
    x, _ = batch
    torch.manual_seed(0)
    net = DRegNet(BiasNoBN(), "conv2", eps=0.5, include_bias=True).eval()
    assert net.bn_path is None and "bn" not in net.branch_L
    w_R, w_L = net.branch_params("R"), net.branch_params("L")
    assert [p.shape for p in w_R] == [(4, 4, 3, 3), (4,)]
    by_hand = sum((p - q).pow(2).sum().item() for p, q in zip(w_R, w_L, strict=True))
    assert net.distance().item() == pytest.approx(by_hand)
    torch.testing.assert_close(net.export("L").eval()(x), net(x)[1])
    assert len(DRegNet(BiasNoBN(), "conv2").branch_params("R")) == 1  # the bias only when asked


class Twice(Tiny):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        return self.fc(self.conv2(self.conv2(x)).mean((2, 3)))


class Untraceable(Tiny):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # control flow on a tensor's value: torch.fx cannot trace it
            x = -x
        return super().forward(x)


def test_errors_for_networks_that_cannot_be_split():
    with pytest.raises(ValueError, match=r"is called 2 times; it must be called once"):
        DRegNet(Twice(), "conv2")
    with pytest.raises(ValueError, match=r"cannot split Untraceable with torch\.fx"):
        DRegNet(Untraceable(), "conv2")
    with pytest.raises(ValueError, match="unknown DReg path 'X'"):
        DRegNet(Tiny(), "conv2").export("X")


def test_export_of_a_torchvision_network_computes_its_path():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    dreg = DRegNet(torchvision.models.resnet18(num_classes=7), "layer4.1.conv2", eps=0.5).eval()
    x = torch.randn(2, 3, 32, 32)
    logits = dict(zip("RL", dreg(x), strict=True))
    for path in "RL":
        exported = dreg.export(path).eval()
        assert type(exported) is torchvision.models.ResNet
        torch.testing.assert_close(exported(x), logits[path])
    assert not torch.allclose(logits["R"], logits["L"])


def test_activity_penalty_downstream_of_the_site_averages_the_paths(batch):
    """An activity site after the DReg site runs once per path: the penalty is the mean of the two."""
    x, y = batch
    torch.manual_seed(0)
    model = Classifier(net=Tiny(), num_classes=3, dreg_site="R1", dreg_eps=0.5, activity_site="fc",
                       activity_alpha=0.5, activity_norm="l2")  # fmt: skip
    terms = model._loss_terms(x, y)
    logits_R, logits_L = model.net(x)
    model.activity.value()  # forget the second forward's values
    by_hand = 0.5 * (logits_R.pow(2).sum(1).mean() + logits_L.pow(2).sum(1).mean()) / 2
    torch.testing.assert_close(terms["activity"], by_hand)
