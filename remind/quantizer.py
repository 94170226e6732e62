"""Product quantization of feature vectors: faiss trains the codebooks, torch encodes and decodes.

Encoding and decoding run in torch on the tensor's own device, so a streaming step on CUDA never
copies features or codes to the host. The codes equal faiss ``compute_codes`` (argmin of the
squared distance per sub-space) except at exact near-ties, where float rounding may pick the other
of two equidistant centroids.
"""
import warnings

import numpy as np
import torch

from remind.threads import intra_op_threads
from remind.errors import InputError


class QuantizerError(InputError, ValueError):
    """Invalid quantizer configuration or training data."""


# Encoding at most this many vectors (one 7 x 7 map is 49) runs on one CPU thread.
SERIAL_ENCODE_MAX_VECTORS = 1024


def _code_dtype(nbits):
    return torch.uint8 if nbits <= 8 else torch.int32


class MapCodec:
    """Feature maps through a per-vector codec (``encode``/``decode`` on [..., d]): every spatial
    position of a map is one vector, codes are stored channels-last."""

    def encode_maps(self, maps):
        """[N, C, H, W] feature maps -> [N, H, W, M] codes."""
        return self.encode(maps.permute(0, 2, 3, 1))

    def decode_maps(self, codes, memory_format=torch.contiguous_format):
        """[N, H, W, M] codes -> [N, C, H, W] float32 feature maps, contiguous in ``memory_format``
        (channels-last is the decode's own order: no copy)."""
        return self.decode(codes).permute(0, 3, 1, 2).contiguous(memory_format=memory_format)


class ProductQuantizer(MapCodec):
    """M sub-quantizers of 2**nbits centroids each over d-dimensional vectors (d divisible by M)."""

    def __init__(self, d, num_codebooks=32, nbits=8, device="cpu"):
        d, num_codebooks, nbits = int(d), int(num_codebooks), int(nbits)
        if num_codebooks < 1 or d < 1 or d % num_codebooks != 0:
            raise QuantizerError(
                f"dimension d={d} must be a positive multiple of the number of codebooks "
                f"M={num_codebooks}")
        if not (1 <= nbits <= 8 or nbits == 16):
            raise QuantizerError(f"bits per code must be in 1..8 or 16, got {nbits}")
        self.d, self.M, self.nbits = d, num_codebooks, nbits
        self.dsub, self.ksub = d // num_codebooks, 2 ** nbits
        self.code_dtype = _code_dtype(nbits)
        self.centroids = None  # [M, ksub, dsub] float32
        self._sq_norms = None  # [M, ksub], cached for encoding
        self._row_offsets = None  # [M] int32: m * ksub, cached for decoding
        self.device = torch.device(device)

    # ----------------------------------------------------------------------------- training
    def fit(self, x, seed=0, max_train_per_centroid=256):
        """Train with faiss. Each row of x is one training vector (a spatial position of a map)."""
        import faiss

        x = np.ascontiguousarray(np.asarray(x, dtype=np.float32).reshape(-1, self.d))
        if x.shape[0] < self.ksub:
            raise QuantizerError(
                f"the quantizer needs at least {self.ksub} training vectors (2**nbits), "
                f"got {x.shape[0]}")
        if not np.isfinite(x).all():
            raise QuantizerError("training vectors contain NaN or inf")
        pq = faiss.ProductQuantizer(self.d, self.M, self.nbits)
        pq.cp.seed = int(seed)
        pq.cp.max_points_per_centroid = int(max_train_per_centroid)
        # faiss prints one warning per sub-quantizer below 39 points per centroid; say it once.
        if x.shape[0] < pq.cp.min_points_per_centroid * self.ksub:
            warnings.warn(f"product quantizer: {x.shape[0]} training vectors for {self.ksub} centroids "
                          f"(faiss suggests at least {pq.cp.min_points_per_centroid * self.ksub})")
        pq.cp.min_points_per_centroid = 1
        pq.verbose = False
        pq.train(x)
        cents = faiss.vector_to_array(pq.centroids).reshape(self.M, self.ksub, self.dsub)
        self._set_centroids(torch.from_numpy(cents.copy()))
        return self

    def to_faiss(self):
        """A faiss ProductQuantizer holding the same centroids (for checks and interop)."""
        import faiss

        pq = faiss.ProductQuantizer(self.d, self.M, self.nbits)
        faiss.copy_array_to_vector(
            self.centroids.detach().cpu().numpy().astype(np.float32).ravel(), pq.centroids)
        return pq

    def _set_centroids(self, centroids):
        self._require_shape(centroids)
        self.centroids = centroids.to(self.device, torch.float32).contiguous()
        self._sq_norms = (self.centroids ** 2).sum(-1)
        self._row_offsets = torch.arange(self.M, device=self.device, dtype=torch.int32) * self.ksub

    def _require_shape(self, centroids):
        expected = (self.M, self.ksub, self.dsub)
        if tuple(centroids.shape) != expected:
            raise QuantizerError(f"centroid table has shape {tuple(centroids.shape)}, expected {expected}")

    def _require_fitted(self):
        if self.centroids is None:
            raise QuantizerError("the product quantizer is not trained: call fit() or load() first")

    # ------------------------------------------------------------------------ encode/decode
    def encode(self, x, chunk=4096):
        """[..., d] float -> [..., M] codes (uint8 for nbits <= 8), on x's device."""
        self._require_fitted()
        if x.shape[-1] != self.d:
            raise QuantizerError(f"vectors have dimension {x.shape[-1]}, quantizer expects {self.d}")
        lead = x.shape[:-1]
        flat = x.reshape(-1, self.M, self.dsub).to(self.centroids.device, torch.float32)
        out = torch.empty(flat.shape[0], self.M, dtype=self.code_dtype, device=flat.device)
        small = flat.shape[0] <= SERIAL_ENCODE_MAX_VECTORS
        with intra_op_threads(1 if small else None, flat.device):
            for s in range(0, flat.shape[0], chunk):
                sub = flat[s:s + chunk].transpose(0, 1)  # [M, n, dsub]
                # ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2; ||x||^2 does not change the argmin.
                # baddbmm fuses the scale and add into the product (same values, one pass).
                dist = torch.baddbmm(self._sq_norms.unsqueeze(1), sub, self.centroids.transpose(1, 2),
                                     alpha=-2.0)
                # min's indices are argmin's (the first minimum), at about half the CPU cost.
                out[s:s + chunk] = dist.min(-1).indices.transpose(0, 1)
        return out.reshape(*lead, self.M).to(x.device)

    def decode(self, codes):
        """[..., M] codes -> [..., d] float32 reconstructions, on the codes' device."""
        self._require_fitted()
        if codes.shape[-1] != self.M:
            raise QuantizerError(f"codes have {codes.shape[-1]} sub-codes, quantizer expects {self.M}")
        lead = codes.shape[:-1]
        # Flat gather from the [M * ksub, dsub] table: row m * ksub + code, one int32 add (uint8
        # codes promote to int32) then index_select, which copies whole rows (about 10x faster on
        # the CPU than advanced indexing, same values).
        rows = torch.add(codes.reshape(-1, self.M).to(self.centroids.device), self._row_offsets)
        rec = self.centroids.reshape(-1, self.dsub).index_select(0, rows.reshape(-1))
        return rec.reshape(*lead, self.d).to(codes.device)

    # ----------------------------------------------------------------------------- state
    def to(self, device):
        self.device = torch.device(device)
        if self.centroids is not None:
            self._set_centroids(self.centroids)
        return self

    @property
    def nbytes(self):
        if self.centroids is None:
            return 0
        return self.centroids.numel() * self.centroids.element_size()

    def state_dict(self):
        self._require_fitted()
        return {"d": self.d, "num_codebooks": self.M, "nbits": self.nbits,
                "centroids": self.centroids.detach().cpu().clone()}

    @classmethod
    def from_state_dict(cls, state, device="cpu"):
        try:
            pq = cls(state["d"], state["num_codebooks"], state["nbits"], device=device)
            centroids = state["centroids"]
        except KeyError as err:
            raise QuantizerError(f"quantizer state lacks the entry {err}") from None
        pq._set_centroids(torch.as_tensor(np.asarray(centroids)) if not torch.is_tensor(centroids)
                          else centroids)
        return pq

    def save(self, path):
        """Plain .npz arrays (no pickle), written atomically."""
        from remind.checkpoint import atomic_write

        state = self.state_dict()
        with atomic_write(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, d=np.int64(state["d"]), num_codebooks=np.int64(state["num_codebooks"]),
                         nbits=np.int64(state["nbits"]), centroids=state["centroids"].numpy())

    @classmethod
    def load(cls, path, device="cpu"):
        try:
            with np.load(path, allow_pickle=False) as z:
                state = {k: z[k] for k in z.files}
        except (OSError, ValueError) as err:
            raise QuantizerError(f"{path}: not a readable quantizer file ({err})") from None
        for k in ("d", "num_codebooks", "nbits"):
            if k in state:
                state[k] = int(state[k])
        try:
            return cls.from_state_dict(state, device=device)
        except QuantizerError as err:
            raise QuantizerError(f"{path}: {err}") from None

    def __repr__(self):
        return (f"ProductQuantizer(d={self.d}, num_codebooks={self.M}, nbits={self.nbits}, "
                f"trained={self.centroids is not None}, device={self.device})")
