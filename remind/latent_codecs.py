"""Latent codecs for the compression ablation: replay at equal memory without product quantization.

Two drop-in replacements for ``remind.quantizer.ProductQuantizer`` as the streaming learner uses it
(``fit``, ``encode``/``decode``, ``encode_maps``/``decode_maps``, ``to``, ``device``, ``d``, ``M``,
``nbytes``, ``state_dict``/``from_state_dict``, ``save``/``load``):

- ``RawLatents``: uncompressed float32 latents, each value stored as its 4 bytes (a uint8 view in
  the machine's byte order, little-endian on every platform torch supports), so decode is exact;
- ``ScalarQuantizer``: ``nbits`` (default 8) per value, per-channel affine over the range seen in
  ``fit``: ``code = round((clamp(x, lo, hi) - lo) / (hi - lo) * L)`` with ``L = 2**nbits - 1``,
  decoded as ``lo + code * (hi - lo) / L``; the error inside [lo, hi] is at most half a step.

Codes are uint8 with ``M`` bytes per d-dimensional vector (``M = 4 d`` raw, ``d`` scalar), so a
replay buffer of feature maps has ``code_shape = (H, W, codec.M)`` exactly as with PQ (``M``
sub-codes of one byte). ``items_at_equal_memory`` sizes a codec's buffer to the PQ buffer's bytes.

States carry a ``kind`` ("raw", "scalar"); ``codec_from_state_dict`` and ``load_codec`` dispatch on
it, and treat a state or file without one as a ``ProductQuantizer``'s (which saves none).
"""
import numpy as np
import torch

from remind.quantizer import MapCodec, ProductQuantizer, QuantizerError


class LatentCodecError(QuantizerError):
    """Invalid codec configuration, training data, codes or saved state."""


def _float_rows(x, d):
    """Training vectors as a float32 numpy array [n, d] (from numpy or torch, any leading shape)."""
    if torch.is_tensor(x):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float32)
    if x.size == 0 or x.shape[-1] != d:
        raise LatentCodecError(f"training vectors have shape {x.shape}, expected [..., {d}] with at least one")
    x = x.reshape(-1, d)
    if not np.isfinite(x).all():
        raise LatentCodecError("training vectors contain NaN or inf")
    return x


class _Codec(MapCodec):
    """What every codec shares: maps <-> vectors, device, checks and the npz file format."""

    kind = None
    code_dtype = torch.uint8

    def __init__(self, d, device="cpu"):
        d = int(d)
        if d < 1:
            raise LatentCodecError(f"dimension d must be positive, got {d}")
        self.d = d
        self.device = torch.device(device)

    def _check_vectors(self, x):
        if x.shape[-1] != self.d:
            raise LatentCodecError(f"vectors have dimension {x.shape[-1]}, the codec expects {self.d}")

    def _check_codes(self, codes):
        if codes.shape[-1] != self.M:
            raise LatentCodecError(f"codes have {codes.shape[-1]} bytes per vector, the codec expects {self.M}")
        if codes.dtype != torch.uint8:
            raise LatentCodecError(f"codes must be uint8, got {codes.dtype}")

    def to(self, device):
        self.device = torch.device(device)
        return self

    def save(self, path):
        """Plain .npz arrays (no pickle), written atomically; ``kind`` names the codec."""
        from remind.checkpoint import atomic_write

        arrays = {k: (v.numpy() if torch.is_tensor(v) else np.asarray(v))
                  for k, v in self.state_dict().items()}
        with atomic_write(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)

    @classmethod
    def load(cls, path, device="cpu"):
        codec = load_codec(path, device=device)
        if not isinstance(codec, cls):
            raise LatentCodecError(f"{path}: holds a {type(codec).__name__}, not a {cls.__name__}")
        return codec


class RawLatents(_Codec):
    """Uncompressed float32 latents: each vector's d values as 4 d bytes; decode is exact."""

    kind = "raw"

    @property
    def M(self):
        return 4 * self.d

    nbytes = 0  # no table: the codes are the latents

    def fit(self, x, seed=0):
        """Nothing to learn; checks the vectors' dimension and values (the same errors as PQ)."""
        _float_rows(x, self.d)
        return self

    def encode(self, x):
        """[..., d] float -> [..., 4 d] uint8 (a fresh tensor on x's device, never aliasing x)."""
        self._check_vectors(x)
        out = torch.empty(x.shape, dtype=torch.float32, device=x.device).copy_(x.detach())
        return out.view(torch.uint8)

    def decode(self, codes):
        """[..., 4 d] uint8 -> [..., d] float32, bit-exact; a view of ``codes`` when it is contiguous
        and 4-byte aligned (the streaming step's gathered batches always are), else a copy."""
        self._check_codes(codes)
        codes = codes.contiguous()
        if codes.storage_offset() % 4:
            codes = codes.clone()
        return codes.view(torch.float32)

    def state_dict(self):
        return {"kind": self.kind, "d": self.d}

    @classmethod
    def from_state_dict(cls, state, device="cpu"):
        _require_kind(state, cls.kind)
        return cls(_entry(state, "d"), device=device)

    def __repr__(self):
        return f"RawLatents(d={self.d}, bytes_per_vector={self.M}, device={self.device})"


class ScalarQuantizer(_Codec):
    """Per-channel affine scalar quantization to ``nbits`` (1..8) per value, one byte per value."""

    kind = "scalar"

    def __init__(self, d, nbits=8, device="cpu"):
        super().__init__(d, device)
        nbits = int(nbits)
        if not 1 <= nbits <= 8:
            raise LatentCodecError(f"bits per value must be in 1..8, got {nbits}")
        self.nbits, self.levels = nbits, 2 ** nbits - 1
        self.lo = self.hi = None  # [d] float32, the per-channel range

    @property
    def M(self):
        return self.d

    @property
    def nbytes(self):
        return 0 if self.lo is None else 2 * 4 * self.d

    def fit(self, x, seed=0):
        """Per-channel min and max of the training vectors (rows of x); deterministic (seed unused)."""
        x = _float_rows(x, self.d)
        self._set_range(torch.from_numpy(x.min(0)), torch.from_numpy(x.max(0)))
        return self

    def _set_range(self, lo, hi):
        lo, hi = torch.as_tensor(lo), torch.as_tensor(hi)
        if tuple(lo.shape) != (self.d,) or tuple(hi.shape) != (self.d,):
            raise LatentCodecError(f"ranges have shapes {tuple(lo.shape)} and {tuple(hi.shape)}, expected ({self.d},)")
        if not (torch.isfinite(lo).all() and torch.isfinite(hi).all()) or bool((hi < lo).any()):
            raise LatentCodecError("ranges must be finite with lo <= hi in every channel")
        self.lo = lo.to(self.device, torch.float32).contiguous()
        self.hi = hi.to(self.device, torch.float32).contiguous()
        # A constant channel (hi == lo) gets a unit width: its code is 0 and decodes to lo exactly.
        width = self.hi - self.lo
        self._width = torch.where(width > 0, width, torch.ones_like(width))
        self._step = self._width / self.levels

    def _require_fitted(self):
        if self.lo is None:
            raise LatentCodecError("the scalar quantizer is not fitted: call fit() or load() first")

    def encode(self, x):
        """[..., d] float -> [..., d] uint8 codes, on x's device."""
        self._require_fitted()
        self._check_vectors(x)
        lo, hi = self.lo.to(x.device), self.hi.to(x.device)
        clamped = torch.minimum(torch.maximum(x.detach().float(), lo), hi)
        scaled = (clamped - lo) / self._width.to(x.device) * self.levels
        return scaled.round_().clamp_(0, self.levels).to(torch.uint8)  # round half to even

    def decode(self, codes):
        """[..., d] uint8 codes -> [..., d] float32 values, on the codes' device."""
        self._require_fitted()
        self._check_codes(codes)
        return torch.addcmul(self.lo.to(codes.device), codes.float(), self._step.to(codes.device))

    def to(self, device):
        super().to(device)
        if self.lo is not None:
            self._set_range(self.lo, self.hi)
        return self

    def state_dict(self):
        self._require_fitted()
        return {"kind": self.kind, "d": self.d, "nbits": self.nbits,
                "lo": self.lo.detach().cpu().clone(), "hi": self.hi.detach().cpu().clone()}

    @classmethod
    def from_state_dict(cls, state, device="cpu"):
        _require_kind(state, cls.kind)
        sq = cls(_entry(state, "d"), _entry(state, "nbits"), device=device)
        sq._set_range(_tensor(_entry(state, "lo")), _tensor(_entry(state, "hi")))
        return sq

    def __repr__(self):
        return (f"ScalarQuantizer(d={self.d}, nbits={self.nbits}, fitted={self.lo is not None}, "
                f"device={self.device})")


CODECS = {RawLatents.kind: RawLatents, ScalarQuantizer.kind: ScalarQuantizer}
PQ_KIND = "pq"


def _entry(state, key):
    try:
        value = state[key]
    except KeyError:
        raise LatentCodecError(f"codec state lacks the entry {key!r}") from None
    return value


def _tensor(value):
    return value if torch.is_tensor(value) else torch.from_numpy(np.array(value, dtype=np.float32))


def _kind(state):
    kind = state.get("kind", PQ_KIND)
    return str(kind.item() if isinstance(kind, np.ndarray) else kind)


def _require_kind(state, kind):
    if _kind(state) != kind:
        raise LatentCodecError(f"codec state is of kind {_kind(state)!r}, expected {kind!r}")


def codec_from_state_dict(state, device="cpu"):
    """Any codec from its ``state_dict``: by ``kind``; a state without one is a ProductQuantizer's."""
    kind = _kind(state)
    if kind == PQ_KIND:
        return ProductQuantizer.from_state_dict(state, device=device)
    if kind not in CODECS:
        raise LatentCodecError(f"unknown codec kind {kind!r} (known: {PQ_KIND}, {', '.join(CODECS)})")
    return CODECS[kind].from_state_dict(state, device=device)


def load_codec(path, device="cpu"):
    """Any codec saved with ``save`` (a ProductQuantizer's file has no ``kind``)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            state = {k: z[k] for k in z.files}
    except (OSError, ValueError) as err:
        raise LatentCodecError(f"{path}: not a readable codec file ({err})") from None
    if _kind(state) == PQ_KIND:
        return ProductQuantizer.load(path, device=device)
    for key in ("d", "nbits"):
        if key in state:
            state[key] = int(state[key])
    try:
        return codec_from_state_dict(state, device=device)
    except LatentCodecError as err:
        raise LatentCodecError(f"{path}: {err}") from None


def code_bytes_per_item(codec, height, width):
    """Bytes of one item's codes in a replay buffer of [height, width] feature maps."""
    return int(height) * int(width) * int(codec.M)


def items_at_equal_memory(pq_items, pq_code_bytes_per_item, codec_bytes_per_item):
    """How many items of ``codec_bytes_per_item`` fit in the bytes of ``pq_items`` PQ items
    (codes only: labels and ids cost the same per item for every codec). At least one must fit."""
    pq_items, pq_bytes, codec_bytes = int(pq_items), int(pq_code_bytes_per_item), int(codec_bytes_per_item)
    if pq_items < 1 or pq_bytes < 1 or codec_bytes < 1:
        raise LatentCodecError(f"equal memory needs positive sizes, got {pq_items} items of {pq_bytes} bytes "
                               f"and {codec_bytes} bytes per codec item")
    items = pq_items * pq_bytes // codec_bytes
    if items < 1:
        raise LatentCodecError(f"not one item of {codec_bytes} bytes fits in {pq_items} x {pq_bytes} bytes")
    return items
