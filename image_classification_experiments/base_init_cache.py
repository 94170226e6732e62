"""The base-init cache of the streaming script: G's features of the base-init images, the product
quantizer fitted on them and their codes (``pq.npz`` and ``base_init_codes.h5`` in
``--base_init_dir``), made when absent with the functions of extract_features.py and fit_pq.py
(the same files those scripts write with their default settings).

The streaming flags read here: --images_dir --label_dir --classifier_ckpt --extract_features_from
--min_class --base_init_classes --image_size --batch_size --num_workers --device --num_classes
--allow_fc_resize --max_per_class --skip_corrupt_images --num_codebooks --codebook_size --seed and,
when the streaming script has them, --ckpt_label_space (default None: from the checkpoint),
--eval_resize_ratio (default 256/224) and --progress (default on)."""
import os

import h5py

from image_classification_experiments.extract_features import FeatureSettings, extract_base_init_features
from image_classification_experiments.imagenet_data import DEFAULT_EVAL_RESIZE_RATIO
from image_classification_experiments.fit_pq import fit_and_encode
from image_classification_experiments.imagenet_folders import DataError


def check_cached_ratio(args):
    """The cached features must come from the evaluation transform this run uses: codes of
    differently cropped images would silently mix two transforms in one buffer. (A features file
    made before the ratio was recorded used the default.)"""
    features_file = os.path.join(args.base_init_dir, "base_init_features.h5")
    if not os.path.isfile(features_file):
        return
    with h5py.File(features_file, "r") as f:
        cached = float(f.attrs.get("eval_resize_ratio", DEFAULT_EVAL_RESIZE_RATIO))
    wanted = getattr(args, "eval_resize_ratio", DEFAULT_EVAL_RESIZE_RATIO)
    if cached != wanted:
        raise DataError(f"{features_file} was extracted with --eval_resize_ratio {cached:g}, this run uses "
                        f"{wanted:g}; pass the same ratio, or another --base_init_dir to build a new cache")


def ensure_base_init_cache(args, log):
    """pq.npz and base_init_codes.h5 in --base_init_dir; made from the streaming flags when absent."""
    pq_file = os.path.join(args.base_init_dir, "pq.npz")
    codes_file = os.path.join(args.base_init_dir, "base_init_codes.h5")
    if os.path.isfile(pq_file) and os.path.isfile(codes_file):
        check_cached_ratio(args)
        log(f"base init: using cached {codes_file} and {pq_file}")
        return pq_file, codes_file
    log(f"base init: no cached codes in {args.base_init_dir}; extracting features and fitting the PQ")
    features_file = extract_base_init_features(FeatureSettings(
        images_dir=args.images_dir, label_dir=args.label_dir, classifier_ckpt=args.classifier_ckpt,
        features_file=os.path.join(args.base_init_dir, "base_init_features.h5"),
        extract_features_from=args.extract_features_from, min_class=args.min_class,
        base_init_classes=args.base_init_classes, image_size=args.image_size,
        batch_size=args.batch_size, num_workers=args.num_workers, device=args.device,
        num_classes=args.num_classes, allow_fc_resize=args.allow_fc_resize,
        ckpt_label_space=getattr(args, "ckpt_label_space", None),
        eval_resize_ratio=getattr(args, "eval_resize_ratio", DEFAULT_EVAL_RESIZE_RATIO),
        max_per_class=args.max_per_class or None, skip_corrupt_images=args.skip_corrupt_images,
        progress=getattr(args, "progress", "on")),
        log=log)
    fit_and_encode(features_file, pq_file, codes_file, num_codebooks=args.num_codebooks,
                   codebook_size=args.codebook_size, seed=args.seed, device=args.device, log=log)
    return pq_file, codes_file
