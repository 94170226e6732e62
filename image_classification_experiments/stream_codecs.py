"""The compression ablation of an image-classification stream: ``--latent_codec raw|sq8`` replays
uncompressed float32 latents or 8-bit scalar codes instead of PQ codes, in the PQ buffer's bytes.

``stream_model.build_model`` asks ``plan_codec`` for the codec and the buffer size, and
``stream_model.fill_buffer`` hands base initialisation to ``fill_codec_buffer`` when the codec is not
the PQ. Everything else (the step, evaluation, outputs, states, ``--resume``) is the PQ run's: a
codec has the quantizer's interface (``remind.latent_codecs``) and its state names its kind.

Equal memory counts the codes only (labels and ids cost the same per item for every codec):
- ``--max_buffer_size N``: the codec's buffer holds ``floor(N * pq_bytes / codec_bytes)`` items,
  pq_bytes = H * W * num_codebooks and codec_bytes = H * W * M (M = 4 * channels raw, channels sq8);
- no ``--max_buffer_size`` (the PQ buffer keeps everything): the bytes of a PQ buffer holding every
  item of the run, base initialisation plus the whole stream, so the cap is
  ``floor((base items + streamed items) * pq_bytes / codec_bytes)`` (the scripts pass the stream's
  length to ``fill_buffer``).
The codec is fitted like the PQ: on the same sample of the base-init feature vectors
(``--max_train_vectors``, default 262144, and ``--seed``): sq8 takes each channel's min and max,
raw only checks them. The base-init items are then encoded from their stored features (the file
beside the PQ's codes) and added to the buffer in stream order, as the PQ codes are.
"""
import dataclasses
import os

import h5py
import torch

from image_classification_experiments.imagenet_folders import DataError
from remind import feature_store as fs
from remind.latent_codecs import RawLatents, ScalarQuantizer, code_bytes_per_item, items_at_equal_memory
from remind.quantizer import ProductQuantizer
from remind.replay_buffer import ReplayBuffer

LATENT_CODECS = ("pq", "raw", "sq8")
DEFAULT_MAX_TRAIN_VECTORS = 262144  # fit_pq.py's default sample of base-init vectors


@dataclasses.dataclass
class CodecPlan:
    """A non-PQ codec run: what base initialisation needs to fit the codec and size the buffer."""

    kind: str
    pq_bytes: int  # one item's PQ codes: H * W * num_codebooks
    max_buffer_size: object  # the PQ buffer's cap in items (None: unlimited)
    max_vectors: int
    seed: int


def add_codec_argument(p):
    p.add_argument("--latent_codec", choices=LATENT_CODECS, default="pq",
                   help="what the buffer stores: PQ codes (default), raw float32 latents or 8-bit scalar codes; "
                        "raw and sq8 hold as many items as fit in the PQ buffer's bytes")


def codec_kind(args):
    return getattr(args, "latent_codec", "pq") or "pq"


def make_codec(kind, channels):
    if kind == "raw":
        return RawLatents(channels)
    if kind == "sq8":
        return ScalarQuantizer(channels, nbits=8)
    raise DataError(f"--latent_codec must be one of {', '.join(LATENT_CODECS)}, got {kind!r}")


def plan_codec(args, channels, side):
    """(codec, buffer capacity, CodecPlan) for ``--latent_codec`` raw or sq8 (unfitted codec)."""
    kind = codec_kind(args)
    codec = make_codec(kind, channels)
    pq_bytes = side * side * args.num_codebooks
    capacity = None
    if args.max_buffer_size is not None:
        capacity = items_at_equal_memory(args.max_buffer_size, pq_bytes, code_bytes_per_item(codec, side, side))
    max_vectors = getattr(args, "max_train_vectors", DEFAULT_MAX_TRAIN_VECTORS)
    return codec, capacity, CodecPlan(kind, pq_bytes, args.max_buffer_size, max_vectors, args.seed)


def features_file_for(codes_file):
    """The base-init features the codes were made from: the codes file's ``features_file``
    attribute (fit_pq.py writes it) when that file exists, else ``base_init_features.h5`` beside it."""
    try:
        with h5py.File(codes_file, "r") as f:
            named = f.attrs.get("features_file")
    except OSError as err:
        raise DataError(f"{codes_file}: not a codes file ({err})") from None
    named = named.decode() if isinstance(named, bytes) else named
    if named and os.path.isfile(named):
        return named
    return os.path.join(os.path.dirname(codes_file), "base_init_features.h5")


def _encode_store(codec, store, device, chunk=256):
    n = store.shape[0]
    return torch.cat([codec.encode(torch.from_numpy(store.maps(a, min(a + chunk, n))).to(device)).cpu()
                      for a in range(0, n, chunk)])


def fill_codec_buffer(model, plan, pq_file, codes_file, log, stream_items=None):
    """Base initialisation for a raw/sq8 run: the codec fitted on the base-init features, their
    codes into the buffer (sized now when the PQ buffer is unlimited). Returns (codes, labels)."""
    pq, codec, buffer = ProductQuantizer.load(pq_file), model.quantizer, model.buffer
    with fs.open_feature_store(features_file_for(codes_file), columns=("labels", "indices")) as store:
        n, h, w, c = store.shape
        if c != codec.d or pq.d != c or (h, w) != buffer.code_shape[:2]:
            raise DataError(f"{store.path}: {c}-channel {h} x {w} maps; the run expects {codec.d} channels of "
                            f"{buffer.code_shape[0]} x {buffer.code_shape[1]} (and the PQ d={pq.d})")
        codec.fit(fs.sample_vectors(store, plan.max_vectors, plan.seed))
        codec.to(model.device)
        codes = _encode_store(codec, store, model.device)
        labels = torch.from_numpy(store.column("labels")).long()
        ids = torch.from_numpy(store.column("indices")).long()
    if plan.max_buffer_size is None:
        if stream_items is None:
            raise DataError(f"--latent_codec {plan.kind} without --max_buffer_size: the run's length is needed "
                            "to size the buffer at the unlimited PQ buffer's bytes")
        capacity = items_at_equal_memory(n + int(stream_items), plan.pq_bytes, code_bytes_per_item(codec, h, w))
        model.buffer = ReplayBuffer(buffer.code_shape, capacity=capacity, device=buffer.device, seed=plan.seed + 1)
    model.buffer.add_batch(codes.to(model.device), labels, ids)
    log(f"base init: {plan.kind} latents (fitted on the base-init features), buffer cap {model.buffer.capacity} "
        f"items at the PQ buffer's bytes ({plan.pq_bytes} B per PQ item, {h * w * codec.M} B per {plan.kind} "
        f"item); {len(model.buffer)} items ({model.buffer.nbytes / 2**20:.1f} MiB)")
    return codes, labels
