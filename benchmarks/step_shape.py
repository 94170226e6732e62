"""The benchmarked step: the paper's ImageNet shape, its stages, the targets, and its inputs.

Shape: 1 new sample + 100 replayed codes (mixed pairwise into 50), 512 x 7 x 7 latent maps, PQ with
32 codebooks x 256 centroids (7 x 7 x 32 uint8 = 1,568 B per item), 1000 classes. The quantizer's
centroids and the buffer's codes are random: encode/decode cost does not depend on their values.
"""
import torch

from remind.quantizer import ProductQuantizer
from remind.replay_buffer import ReplayBuffer

C, H, W, M, KSUB = 512, 7, 7, 32, 256
NUM_CLASSES = 1000
NUM_REPLAY = 50  # mixed pairs; 2 x 50 = 100 codes are drawn per step
CODE_BYTES = H * W * M  # 1,568 B per item
REFERENCE_LIST_LEN = 959_665  # the reference ImageNet buffer cap
# The streamed part of ImageNet: classes 100-999 of ImageNet-1k train. Approximate: 900/1000 of
# its 1,281,167 images (the exact count depends on which 100 classes the base init took).
IMAGENET_STREAM_SAMPLES = 1_153_050
STAGES = ["encode", "sample", "decode", "augment", "update_f", "buffer_add"]

# Targets of the CPU run, set for a 2-core machine.
MAX_NON_F_FRACTION = 0.05
MAX_SAMPLE_EVICT_RATIO = 1.2
MAX_MEMORY_RATIO = 1.05


def make_quantizer(device, seed):
    """A trained-looking quantizer at the paper's shape, with random non-negative centroids. It
    quantizes each C-vector on its own, so it serves maps of any H x W."""
    gen = torch.Generator().manual_seed(seed)
    centroids = torch.rand(M, KSUB, C // M, generator=gen)  # non-negative, like post-ReLU features
    return ProductQuantizer.from_state_dict(
        {"d": C, "num_codebooks": M, "nbits": 8, "centroids": centroids}, device=device)


def fill_buffer(size, device, seed, chunk=1 << 16, map_size=H):
    """A buffer of capacity ``size`` filled with random codes of ``map_size`` x ``map_size`` maps
    (item i has id i), labels uniform over 1000 classes."""
    buf = ReplayBuffer((map_size, map_size, M), capacity=size, device=device, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    for start in range(0, size, chunk):
        n = min(chunk, size - start)
        codes = torch.randint(0, KSUB, (n, map_size, map_size, M), dtype=torch.uint8, generator=gen)
        labels = torch.randint(0, NUM_CLASSES, (n,), generator=gen)
        buf.add_batch(codes, labels, torch.arange(start, start + n))
    return buf
