"""Model package: card (JSON), network (MONAI DynUNet) and weights (plain state_dicts with SHA-256)."""

from .card import CardError, ModelCard, ParentRef, WeightsFile, bump_version, default_classes
from .network import architecture, build_network, count_parameters, encoder_modules, parameter_megabytes
from .package import MODEL_JSON, ModelPackage, load_package, save_package, zip_package

__all__ = [
    "MODEL_JSON",
    "CardError",
    "ModelCard",
    "ModelPackage",
    "ParentRef",
    "WeightsFile",
    "architecture",
    "build_network",
    "bump_version",
    "count_parameters",
    "default_classes",
    "encoder_modules",
    "load_package",
    "parameter_megabytes",
    "save_package",
    "zip_package",
]
