"""Networks, DReg, regularizers and the LightningModule that trains them."""

from lightning_modules.classifier import Classifier
from lightning_modules.dreg import DRegNet
from lightning_modules.nets import build_net, dreg_sites
from lightning_modules.regularizers import ActivityPenalty, UncertaintyWeight
from lightning_modules.settings import ConfigError, ModuleSettings
from lightning_modules.sites import resolve_site

__all__ = [
    "ActivityPenalty",
    "Classifier",
    "ConfigError",
    "DRegNet",
    "ModuleSettings",
    "UncertaintyWeight",
    "build_net",
    "dreg_sites",
    "resolve_site",
]
