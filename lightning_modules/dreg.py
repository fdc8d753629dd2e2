"""Distinctive regularization (DReg) as a wrapper around any traceable ``nn.Module``.

The paper (Fig. 1c, Algorithm 1) replicates one conv layer into two parallel
branches R and L and trains both paths. Here the wrapped network *is* path R:
its site conv (and the BatchNorm right after it) are W_R, and a copy of them,
``branch_L``, is W_L. ``torch.fx`` splits the network's graph at the site:
nodes that do not depend on the site (the prefix, and side inputs such as a
residual shortcut) run once per batch; the site and every node downstream of
it (the suffix) run once per path. The wrapper knows nothing about which model
it wraps.

BatchNorm layers must already be in their final form (e.g. SyncBatchNorm) when
the network is wrapped: the traced graph holds references to the modules.
"""

from __future__ import annotations

import copy
import operator
from typing import Literal

import torch
from torch import fx, nn

from lightning_modules.sites import resolve_site

Path_ = Literal["R", "L"]


def resolve_conv_site(net: nn.Module, site: str) -> str:
    path = resolve_site(net, site)
    module = net.get_submodule(path)
    if not isinstance(module, nn.Conv2d):
        raise ValueError(f"DReg site {site!r} ({path}) is a {type(module).__name__}, not a Conv2d")
    return path


class _SquaredDistance(torch.autograd.Function):
    """``||a - b||^2`` whose backward forms ``2 (a - b)`` once and hands it to both inputs.

    Autograd's own graph for ``(a - b).pow(2).sum()`` makes twice the passes over the weights; at a
    large site (VGG16's R1: 2.36M weights) that was 2% of a small-batch CPU step
    (``python -m benchmarks dreg_overhead``).
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        diff = a - b
        ctx.save_for_backward(diff)
        return torch.dot(diff.flatten(), diff.flatten())

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        (diff,) = ctx.saved_tensors
        grad_a = diff * (2 * grad)
        return grad_a, -grad_a


def _assign(root: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, module)


class _SiteTracer(fx.Tracer):
    """Traces into the modules that contain the site and keeps every other module whole (a leaf).

    Python inside a leaf (a branch on ``self.training``, a fused BatchNorm + activation, stochastic depth) then
    runs as written on every call, instead of being frozen in the mode it was traced in.
    """

    def __init__(self, site: str) -> None:
        super().__init__()
        self.site = site

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return not self.site.startswith(module_qualified_name + ".")


class DRegNet(nn.Module):
    """A network whose ``site`` conv (+ following BN) is replicated into paths R and L.

    ``forward(x)`` returns ``(logits_R, logits_L)``; ``distance()`` is the differentiable
    ``||W_R - W_L||_F^2`` of paper Eq. 3; ``export(path)`` returns a plain copy of the network computing
    that path. The modules that contain the site are traced twice, in training and in evaluation mode, so
    that Python branching on ``self.training`` there is kept; ``forward`` runs the graph of the current mode.
    """

    def __init__(self, net: nn.Module, site: str, eps: float = 0.01, include_bias: bool = False) -> None:
        super().__init__()
        self.net = net
        self.site = resolve_conv_site(net, site)
        self.include_bias = include_bias
        graphs, bn_paths = {}, set()
        was_training = net.training
        try:
            for mode in (True, False):
                net.train(mode)
                graphs[mode], bn_path = self._split(_SiteTracer(self.site).trace(net))
                bn_paths.add(bn_path)
        except Exception as err:  # fx raises many types (TraceError is a ValueError); all mean "not traceable"
            if isinstance(err, ValueError) and not isinstance(err, fx.proxy.TraceError):
                raise  # ours: the site is called more than once
            raise ValueError(f"cannot split {type(net).__name__} with torch.fx: {err}") from err
        finally:
            net.train(was_training)
        if len(bn_paths) != 1:
            raise ValueError(f"DReg site {self.site!r} is followed by another module in training than in evaluation")
        (self.bn_path,) = bn_paths

        # W_L = W_R + eps * std(W_R) * N(0, 1): "slightly distinctive" (paper §3).
        conv_L = copy.deepcopy(net.get_submodule(self.site))
        with torch.no_grad():
            conv_L.weight.add_(eps * conv_L.weight.std() * torch.randn_like(conv_L.weight))
        self.branch_L = nn.ModuleDict({"conv": conv_L})
        if self.bn_path is not None:
            self.branch_L["bn"] = copy.deepcopy(net.get_submodule(self.bn_path))
        # Held outside the module tree: they share every parameter and buffer with `net` and `branch_L`.
        self.__dict__["_graphs"] = graphs
        self._link()

    def _split(self, graph: fx.Graph) -> tuple[fx.Graph, str | None]:
        """The two-path graph of one traced ``graph``, and the path of the BatchNorm that follows the site."""
        conv_nodes = [n for n in graph.nodes if n.op == "call_module" and n.target == self.site]
        if len(conv_nodes) != 1:
            raise ValueError(f"DReg site {self.site!r} is called {len(conv_nodes)} times; it must be called once")
        conv_node = conv_nodes[0]
        users = list(conv_node.users)
        bn_node = None
        if len(users) == 1 and users[0].op == "call_module":
            follows = self.net.get_submodule(users[0].target)
            bn_node = users[0] if isinstance(follows, nn.modules.batchnorm._BatchNorm) else None
        return self._two_path(graph, conv_node, bn_node), bn_node.target if bn_node is not None else None

    @staticmethod
    def _two_path(graph: fx.Graph, conv_node: fx.Node, bn_node: fx.Node | None) -> fx.Graph:
        """One graph computing the prefix once and the site + suffix for each path."""
        downstream: set[fx.Node] = set()
        for node in graph.nodes:  # graph.nodes is in topological order
            if node is conv_node or any(a in downstream for a in node.all_input_nodes):
                downstream.add(node)
        new = fx.Graph()
        env_R: dict[fx.Node, fx.Node] = {}
        env_L: dict[fx.Node, fx.Node] = {}
        output = None
        for node in graph.nodes:
            if node.op == "output":
                output = node
                continue
            env_R[node] = new.node_copy(node, lambda n: env_R[n])
            if node not in downstream:
                env_L[node] = env_R[node]
            elif node is conv_node:
                env_L[node] = new.call_module("branch_L.conv", (env_L[node.args[0]],))
            elif node is bn_node:
                env_L[node] = new.call_module("branch_L.bn", (env_L[node.args[0]],))
            else:
                env_L[node] = new.node_copy(node, lambda n: env_L[n])
        assert output is not None
        result_R = fx.map_arg(output.args[0], lambda n: env_R[n])
        result_L = fx.map_arg(output.args[0], lambda n: env_L[n])
        new.output((result_R, result_L))
        return new

    def _link(self) -> None:
        """(Re)build the runnable graphs over the current modules and tensors: after ``.to()``, ``.double()``
        and the like, a buffer used outside a module call is a new tensor, which a graph built before would miss."""
        modules: dict[str, object] = dict(self.net.named_modules())
        modules.update({f"branch_L.{k}": m for k, m in self.branch_L.items()})
        runnable = {}
        for mode, graph in self._graphs.items():
            attrs = {n.target: operator.attrgetter(n.target)(self.net) for n in graph.nodes if n.op == "get_attr"}
            runnable[mode] = fx.GraphModule({**modules, **attrs}, graph, class_name=f"DReg{type(self.net).__name__}")
        self.__dict__["_runnable"] = runnable

    def _apply(self, fn, recurse: bool = True):
        out = super()._apply(fn, recurse)
        self._link()
        return out

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._runnable[self.training](x)

    def branch_params(self, path: Path_) -> list[torch.Tensor]:
        """The parameters the DReg distance is taken over: the conv weight (and bias if asked)."""
        conv = self.net.get_submodule(self.site) if path == "R" else self.branch_L["conv"]
        params = [conv.weight]
        if self.include_bias and conv.bias is not None:
            params.append(conv.bias)
        if self.include_bias and self.bn_path is not None:
            bn = self.net.get_submodule(self.bn_path) if path == "R" else self.branch_L["bn"]
            params += [p for p in (bn.weight, bn.bias) if p is not None]
        return params

    def _flat(self, path: Path_) -> torch.Tensor:
        return torch.cat([p.reshape(-1) for p in self.branch_params(path)])

    def distance(self) -> torch.Tensor:
        """``||W_R - W_L||_F^2`` (paper Eq. 3), differentiable; per tensor, so no copy of the weights is made."""
        pairs = zip(self.branch_params("R"), self.branch_params("L"), strict=True)
        return sum(_SquaredDistance.apply(w_R, w_L) for w_R, w_L in pairs)

    def size(self) -> int:
        """N, the number of weights the distance is taken over."""
        return sum(p.numel() for p in self.branch_params("R"))

    def cosine_distance(self) -> torch.Tensor:
        """``||W_R/|W_R| - W_L/|W_L|||^2`` in [0, 4]: the bounded, scale-invariant variant (docs/method.md)."""
        w_R, w_L = self._flat("R"), self._flat("L")
        return (w_R / w_R.norm() - w_L / w_L.norm()).pow(2).sum()

    @torch.no_grad()
    def diagnostics(self) -> dict[str, float]:
        """Distance, both norms and the cosine similarity of the branches, logged every epoch."""
        w_R, w_L = self._flat("R"), self._flat("L")
        return {
            "distance": self.distance().item(),
            "norm_R": w_R.norm().item(),
            "norm_L": w_L.norm().item(),
            "cosine": torch.nn.functional.cosine_similarity(w_R, w_L, dim=0).item(),
        }

    def export(self, path: Path_) -> nn.Module:
        """A deep copy of the network computing ``path``, with no DReg structure."""
        if path not in ("R", "L"):
            raise ValueError(f"unknown DReg path {path!r}: choose 'R' or 'L'")
        net = copy.deepcopy(self.net)
        if path == "L":
            _assign(net, self.site, copy.deepcopy(self.branch_L["conv"]))
            if self.bn_path is not None:
                _assign(net, self.bn_path, copy.deepcopy(self.branch_L["bn"]))
        return net
