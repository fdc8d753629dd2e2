"""Where a regularizer attaches: an R-name of docs/method.md §1 (``R1`` = closest to the output) or a module path."""

from __future__ import annotations

import re

from torch import nn

from lightning_modules.nets import dreg_sites


def resolve_site(net: nn.Module, site: str) -> str:
    """The module path that ``site`` names in ``net``; ValueError with the valid choices otherwise."""
    if re.fullmatch(r"[Rr]\d+", site):
        sites = dreg_sites(net)
        if site.upper() not in sites:
            raise ValueError(f"unknown site {site!r}: this network has {', '.join(sites)}")
        return sites[site.upper()]
    if site not in dict(net.named_modules()) or not site:
        raise ValueError(f"unknown site {site!r}: not a module path of {type(net).__name__} (see net.named_modules())")
    return site
