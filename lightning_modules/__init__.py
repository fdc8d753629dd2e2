"""Networks, DReg, regularizers and the LightningModule that trains them.

The settings (``lightning_modules.settings``) load without torch, so the run config and the analysis use them
without it; everything else loads on first use.
"""

from importlib import import_module
from typing import Any

_WHERE = {
    "ActivityPenalty": "regularizers", "Classifier": "classifier", "ConfigError": "settings", "DRegNet": "dreg",
    "ModuleSettings": "settings", "UncertaintyWeight": "regularizers", "build_net": "nets", "dreg_sites": "nets",
    "resolve_site": "sites",
}  # fmt: skip

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_WHERE[name]}"), name)
