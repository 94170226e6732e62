"""Image-classification experiments: ImageNet-style folders, base init, features, PQ, streaming."""
