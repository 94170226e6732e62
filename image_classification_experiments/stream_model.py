"""The REMIND learner of an image-classification stream, for any data set: its flags, the
network split, the model, and the base initialisation's buffer fill.

A stream script supplies G and F (a ResNet-18 split at ``--extract_features_from``) and the
number of classes; everything else (quantizer, replay buffer, the step's settings) comes from the
flags added by ``add_step_arguments``, with the same names and meaning in every script.
"""
import re

import numpy as np
import torch

from image_classification_experiments.imagenet_folders import DataError
from image_classification_experiments.stream_codecs import add_codec_argument, codec_kind, fill_codec_buffer, plan_codec
from remind.model import REMINDModel, StreamingConfig
from remind.networks import (NetworkError, block_after, build_resnet18, freeze, load_base_network, read_state_dict,
                             split_resnet)
from remind.quantizer import ProductQuantizer
from remind.replay_buffer import ReplayBuffer


def add_step_arguments(p, samples_per_class=1300):
    """The reference's flags of the split, the quantizer, replay, the lr rule and augmentation."""
    p.add_argument("--classifier", default="ResNet18_StartAt_Layer4_1",
                   help="F: ResNet18_StartAt_Layer<i>_<j>, or a block name such as layer4.1")
    p.add_argument("--extract_features_from", default="model.layer4.0", help="G's last block")
    p.add_argument("--weight_decay", type=float, default=1e-5)
    p.add_argument("--batch_size", type=int, default=128, help="images per G batch")
    # product quantizer
    p.add_argument("--num_codebooks", type=int, default=32)
    p.add_argument("--codebook_size", type=int, default=256)
    add_codec_argument(p)  # --latent_codec pq|raw|sq8 (stream_codecs)
    # replay
    p.add_argument("--rehearsal_samples", type=int, default=50, help="replayed samples per step")
    p.add_argument("--max_buffer_size", type=int, default=None, help="items (default: unlimited)")
    # learning rate
    p.add_argument("--lr_mode", choices=["step_lr_per_class", "constant"], default="step_lr_per_class")
    p.add_argument("--lr_step_size", type=int, default=100)
    p.add_argument("--start_lr", type=float, default=0.1)
    p.add_argument("--end_lr", type=float, default=0.001)
    p.add_argument("--samples_per_class", type=int, default=samples_per_class,
                   help="samples over which the per-class lr decays from start_lr to end_lr")
    # augmentation
    p.add_argument("--random_resized_crops", "--use_random_resized_crops", dest="random_resized_crops",
                   action="store_true", help="latent random resized crops (--use_random_resized_crops: "
                   "the reference's spelling)")
    p.add_argument("--use_mixup", action="store_true")
    p.add_argument("--mixup_alpha", type=float, default=0.1)
    # speed
    p.add_argument("--channels_last", action="store_true",
                   help="G and F in channels-last memory order: same math, other float rounding; on the "
                        "CPU 1.3x faster for 7 x 7 maps, slower for 2 x 2 (docs/performance.md)")


def first_plastic_block(classifier):
    """'ResNet18_StartAt_Layer4_1' (the reference's class name) or 'layer4.1' -> 'layer4.1'."""
    m = re.fullmatch(r"ResNet18_StartAt_Layer(\d)_(\d)", classifier)
    return f"layer{m.group(1)}.{m.group(2)}" if m else classifier


def check_step_arguments(args):
    """The split and the step's settings, checked before any work; returns F's first block."""
    args.extract_features_from = args.extract_features_from.removeprefix("model.")
    expected = block_after(args.extract_features_from)
    if first_plastic_block(args.classifier) != expected:
        raise DataError(f"--classifier {args.classifier} must start right after --extract_features_from "
                        f"{args.extract_features_from} (at {expected})")
    if args.rehearsal_samples < 0:
        raise DataError(f"--rehearsal_samples must be >= 0, got {args.rehearsal_samples}")
    if args.max_buffer_size is not None and args.max_buffer_size < 1:
        raise DataError(f"--max_buffer_size must be positive, got {args.max_buffer_size}")
    if args.codebook_size & (args.codebook_size - 1) or not 2 <= args.codebook_size <= 256:
        raise DataError(f"--codebook_size must be a power of two in 2..256, got {args.codebook_size}")
    return expected


def load_stream_network(args, class_order, class_folders, log=print):
    """(G, F) of the base network --classifier_ckpt, its fc with one row for each of the first
    --num_classes classes of ``class_order`` (the wnid of each label; ``class_folders``: all class
    folders sorted), taken by class name from the checkpoint's rows
    (``remind.networks.load_base_network``): our checkpoints record their class order, the
    reference's rows are the sorted folders, --ckpt_label_space states it for any other; a wider
    fc keeps the rows of those classes (logged). With --allow_fc_resize an fc of another size
    starts from a random init, said loudly."""
    n = args.num_classes
    if n > len(class_order):
        raise NetworkError(f"--num_classes {n}: the label files name only {len(class_order)} classes; pass "
                           f"--num_classes {len(class_order)} or fewer (and --streaming_max_class at most that)")
    if args.allow_fc_resize and read_state_dict(args.classifier_ckpt).get("fc.weight", torch.empty(0)).shape[0] != n:
        model = build_resnet18(n, args.classifier_ckpt, allow_fc_resize=True)
    else:
        try:
            model = load_base_network(args.classifier_ckpt, class_order, class_folders, num_classes=n,
                                      label_space=getattr(args, "ckpt_label_space", None),
                                      allow_fc_resize=args.allow_fc_resize, log=log)
        except NetworkError as err:
            if "no row for class" not in str(err):
                raise
            raise NetworkError(f"--num_classes {n}: {err}, or a --num_classes its fc covers") from None
    g, f = split_resnet(model, block_after(args.extract_features_from))
    return freeze(g), f


def streaming_config(args):
    return StreamingConfig(
        num_replay=args.rehearsal_samples, mixup=args.use_mixup, mixup_alpha=args.mixup_alpha,
        latent_crops=args.random_resized_crops, lr_mode=args.lr_mode, start_lr=args.start_lr,
        end_lr=args.end_lr, lr_step_size=args.lr_step_size, samples_per_class=args.samples_per_class,
        weight_decay=args.weight_decay, channels_last=args.channels_last)


def build_model(args, g, f, num_classes, channels, side, device):
    """REMINDModel over G and F with an untrained quantizer of ``channels``-dim vectors (replaced
    by the fitted one at base init or from a saved state) and a buffer of ``side`` x ``side`` maps."""
    pq = ProductQuantizer(channels, args.num_codebooks, int(np.log2(args.codebook_size)))
    if codec_kind(args) != "pq":  # the compression ablation: raw or sq8 latents at the PQ buffer's bytes
        codec, capacity, plan = plan_codec(args, channels, side)
        buffer = ReplayBuffer((side, side, codec.M), capacity=capacity, device=device, seed=args.seed + 1)
        model = REMINDModel(g, f, codec, buffer, num_classes, streaming_config(args), device=device, seed=args.seed)
        model.codec_plan = plan
        return model
    buffer = ReplayBuffer((side, side, args.num_codebooks), capacity=args.max_buffer_size, device=device,
                          seed=args.seed + 1)
    return REMINDModel(g, f, pq, buffer, num_classes, streaming_config(args), device=device, seed=args.seed)


@torch.no_grad()
def feature_shape(g, image_size):
    """(channels, side) of G's maps for ``image_size`` px inputs (one forward pass of zeros)."""
    out = g(torch.zeros(1, 3, image_size, image_size))
    return int(out.shape[1]), int(out.shape[2])


def read_codes(codes_file):
    """(codes, labels, ids) of a codes file (fit_pq.py's or ``remind.feature_store.encode_store``'s)."""
    import h5py

    try:
        with h5py.File(codes_file, "r") as f:
            return (torch.from_numpy(f["codes"][...]), torch.from_numpy(f["labels"][...]),
                    torch.from_numpy(f["indices"][...]))
    except (OSError, KeyError) as err:
        raise DataError(f"{codes_file}: not a codes file from fit_pq.py ({err})") from None


def fill_buffer(model, pq_file, codes_file, log, stream_items=None):
    """Base initialisation: the fitted quantizer replaces the model's, and every base-init item's
    codes go to the replay buffer. Returns (codes, labels) as stored. A --latent_codec raw/sq8 model
    fits its codec on the base-init features instead (``stream_codecs``; ``stream_items``: the
    stream's length, which sizes its buffer when --max_buffer_size is unlimited)."""
    if getattr(model, "codec_plan", None) is not None:
        return fill_codec_buffer(model, model.codec_plan, pq_file, codes_file, log, stream_items)
    want = model.quantizer
    q = ProductQuantizer.load(pq_file, device=model.device)
    if (q.d, q.M, q.ksub) != (want.d, want.M, want.ksub):
        raise DataError(f"{pq_file}: quantizer has d={q.d}, {q.M} codebooks of {q.ksub}; the flags ask for "
                        f"d={want.d}, {want.M} of {want.ksub}")
    model.quantizer = q
    codes, labels, ids = read_codes(codes_file)
    if tuple(codes.shape[1:]) != model.buffer.code_shape:
        raise DataError(f"{codes_file}: codes of shape {tuple(codes.shape[1:])}, expected "
                        f"{model.buffer.code_shape} (check --spatial_feat_dim / --image_size)")
    model.buffer.add_batch(codes, labels, ids)
    log(f"base init: {len(model.buffer)} items in the replay buffer "
        f"({model.buffer.nbytes / 2**20:.1f} MiB), quantizer d={q.d} M={q.M} k={q.ksub}")
    return codes, labels
