"""REMIND: streaming learning that replays product-quantized feature maps."""
from remind._torchvision_compat import ensure_torchvision

ensure_torchvision()

__version__ = "0.1.0"
