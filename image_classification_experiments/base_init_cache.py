"""The base-init cache of the streaming script: G's features of the base-init images, the product
quantizer fitted on them and their codes (``pq.npz`` and ``base_init_codes.h5`` in
``--base_init_dir``), made when absent."""
import os


def ensure_base_init_cache(args, log):
    """pq.npz and base_init_codes.h5 in --base_init_dir; made with the two scripts when absent."""
    pq_file = os.path.join(args.base_init_dir, "pq.npz")
    codes_file = os.path.join(args.base_init_dir, "base_init_codes.h5")
    if os.path.isfile(pq_file) and os.path.isfile(codes_file):
        log(f"base init: using cached {codes_file} and {pq_file}")
        return pq_file, codes_file
    from image_classification_experiments import extract_features
    from image_classification_experiments import fit_pq

    log(f"base init: no cached codes in {args.base_init_dir}; extracting features and fitting the PQ")
    common = ["--save_dir", args.base_init_dir, "--device", args.device]
    extract_features.main(common + [
        "--images_dir", args.images_dir, "--label_dir", args.label_dir,
        "--classifier_ckpt", args.classifier_ckpt, "--extract_features_from", args.extract_features_from,
        "--min_class", str(args.min_class), "--base_init_classes", str(args.base_init_classes),
        "--image_size", str(args.image_size), "--batch_size", str(args.batch_size),
        "--num_workers", str(args.num_workers)]
        + (["--num_classes", str(args.num_classes)] if not args.allow_fc_resize else [])
        + (["--max_per_class", str(args.max_per_class)] if args.max_per_class else [])
        + (["--skip_corrupt_images"] if args.skip_corrupt_images else []))
    fit_pq.main(common + ["--num_codebooks", str(args.num_codebooks),
                          "--codebook_size", str(args.codebook_size), "--seed", str(args.seed)])
    return pq_file, codes_file
