"""Make ``import torchvision`` work beside a CPU-only torch build.

PyPI's torchvision wheel is CUDA-linked; next to a CPU torch its import fails with
``operator torchvision::nms does not exist``. Only in that case we register the two
operator schemas torchvision's Python layer expects and import again. torchvision's
C++ ops (nms, roi_align, image decoding) stay unavailable, so the project loads
images with PIL and writes its batched crops in pure torch. On a machine where the
builds match, the first import succeeds and nothing here runs.
"""
import sys

_LIBRARY = None  # the torch.library.Library must outlive the import


def ensure_torchvision():
    global _LIBRARY
    try:
        import torchvision  # noqa: F401
        return
    except RuntimeError as err:
        if "torchvision::nms" not in str(err):
            raise
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    import torch
    _LIBRARY = torch.library.Library("torchvision", "DEF")
    _LIBRARY.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _LIBRARY.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    import torchvision  # noqa: F401,F811
