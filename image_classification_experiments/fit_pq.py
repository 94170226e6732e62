"""Train the product quantizer on the base-init features and encode them for the replay buffer.

Every spatial position of every feature map is one d = C dimensional training vector. faiss trains
each sub-quantizer on at most 256 x codebook_size vectors drawn uniformly at random, so reading
all 6.3M ImageNet vectors (12.8 GB) is not needed: ``--max_train_vectors`` (default 262,144)
vectors are drawn uniformly first, which leaves the distribution of faiss's sample unchanged.
0 reads them all. The work is done by the core's ``remind.feature_store``.

Outputs (written under temporary names and renamed when complete):
- ``--pq_file`` (default ``<save_dir>/pq.npz``): remind.quantizer.ProductQuantizer.save format
  (d, num_codebooks, nbits, centroids float32 [M, codebook_size, d / M]);
- ``--codes_file`` (default ``<save_dir>/base_init_codes.h5``):
    codes    uint8 [N, H, W, M]   PQ codes of every base-init feature map
    labels   int64 [N]            copied from the features file
    indices  int64 [N]            copied from the features file (replay item ids)
    attrs: num_codebooks, codebook_size, pq_file, pq_sha256, features_file, fingerprint, ...
Existing outputs made from the same inputs are kept unless ``--overwrite``.
"""
import argparse
import json
import os
import time

import h5py

from image_classification_experiments import imagenet_folders as folders
from image_classification_experiments.imagenet_folders import DataError
from remind.feature_store import encode_store, fit_quantizer, open_feature_store, sample_vectors
from remind.runtime import add_run_arguments, resolve_device, run_cli, set_cpu_threads

FORMAT = "remind-codes-v1"
LAYOUT = "NCHW"  # extract_features.py's layout
COLUMNS = ("labels", "indices")
COPIED_ATTRS = ("extract_features_from", "image_size", "classifier_ckpt", "split", "min_class", "max_class")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--save_dir", default="base_init")
    p.add_argument("--features_file", default=None,
                   help="h5 from extract_features.py (default: <save_dir>/base_init_features.h5)")
    p.add_argument("--pq_file", default=None, help="default: <save_dir>/pq.npz")
    p.add_argument("--codes_file", default=None, help="default: <save_dir>/base_init_codes.h5")
    p.add_argument("--num_codebooks", type=int, default=32, help="M sub-quantizers")
    p.add_argument("--codebook_size", type=int, default=256, help="centroids per sub-quantizer")
    p.add_argument("--max_train_vectors", type=int, default=262144,
                   help="uniform sample of vectors handed to faiss (0: all)")
    p.add_argument("--batch_size", type=int, default=256, help="feature maps per encoding chunk")
    p.add_argument("--overwrite", action="store_true", help="rebuild even if up to date")
    add_run_arguments(p)  # --device: where to encode
    args = p.parse_args(argv)
    args.features_file = args.features_file or os.path.join(args.save_dir, "base_init_features.h5")
    args.pq_file = args.pq_file or os.path.join(args.save_dir, "pq.npz")
    args.codes_file = args.codes_file or os.path.join(args.save_dir, "base_init_codes.h5")
    return args


def codebook_bits(size):
    nbits = int(size).bit_length() - 1
    if size < 2 or 2 ** nbits != size:
        raise DataError(f"--codebook_size {size} must be a power of two (256 in the paper)")
    return nbits


def open_features(path):
    """The features file of extract_features.py as a feature store (NCHW, labels and indices)."""
    if not os.path.isfile(path):
        raise DataError(f"features file not found: {path} (make it with extract_features.py)")
    return open_feature_store(path, LAYOUT, COLUMNS)


def features_identity(f, path):
    """Which features file this is: its build id (new on every write), else size and mtime."""
    build = f.attrs.get("build_id")
    if build is not None:
        return str(build)
    st = os.stat(path)
    return f"size={st.st_size},mtime_ns={st.st_mtime_ns}"


def up_to_date(codes_file, pq_file, fp, log=print):
    if not (os.path.isfile(codes_file) and os.path.isfile(pq_file)):
        return False
    try:
        with h5py.File(codes_file, "r") as g:
            same = g.attrs.get("fingerprint") == fp and \
                g.attrs.get("pq_sha256") == folders.file_sha256(pq_file)
    except OSError:
        return False
    if not same:
        log(f"{codes_file} was made from other inputs; rebuilding it")
    return same


def fit_and_encode(features_file, pq_file, codes_file, *, num_codebooks=32, codebook_size=256,
                   max_train_vectors=262144, seed=0, batch_size=256, device=None, overwrite=False,
                   progress=None, log=print):
    """Fit the PQ on the features file, save it to ``pq_file`` and write ``codes_file``.

    Both are kept when they were made from the same inputs (unless ``overwrite``).
    """
    nbits = codebook_bits(codebook_size)
    if max_train_vectors < 0 or batch_size < 1:
        raise DataError("--max_train_vectors must be >= 0 and --batch_size >= 1")
    with open_features(features_file) as store:
        fp = json.dumps({"format": FORMAT, "features": features_identity(store, features_file),
                         "num_codebooks": num_codebooks, "codebook_size": codebook_size,
                         "max_train_vectors": max_train_vectors, "seed": seed}, sort_keys=True)
        if not overwrite and up_to_date(codes_file, pq_file, fp, log):
            log(f"{codes_file} and {pq_file} are up to date; pass --overwrite to rebuild")
            return
        n, h, w, c = store.shape
        if n * h * w < codebook_size:
            raise DataError(f"{features_file}: {n * h * w} training vectors ({n} maps of {h} x {w}); "
                            f"the quantizer needs at least --codebook_size = {codebook_size}")
        device = resolve_device(device)
        t0 = time.time()
        x = sample_vectors(store, max_train_vectors, seed, batch_size, progress)
        pq = fit_quantizer(x, num_codebooks, nbits, seed)
        n_train = len(x)
        del x
        t_fit = time.time() - t0
        pq.save(pq_file)
        pq.to(device)

        t0 = time.time()
        attrs = {"format": FORMAT, "fingerprint": fp, "num_codebooks": num_codebooks,
                 "codebook_size": codebook_size, "nbits": nbits, "d": c, "pq_file": pq_file,
                 "pq_sha256": folders.file_sha256(pq_file), "features_file": features_file,
                 "num_train_vectors": n_train, "seed": seed,
                 **{k: store.attrs[k] for k in COPIED_ATTRS if k in store.attrs}}
        encode_store(pq, store, codes_file, columns=COLUMNS, attrs=attrs, chunk=batch_size,
                     progress=progress)
        t_enc = time.time() - t0
    per_map = h * w * num_codebooks * (1 if nbits <= 8 else 4)
    log(f"PQ d={c} M={num_codebooks} nbits={nbits} trained on {n_train} vectors in "
        f"{t_fit:.1f} s -> {pq_file}")
    log(f"encoded {n} maps ({h} x {w} x {num_codebooks} codes, {per_map} B each) in "
        f"{t_enc:.1f} s -> {codes_file}")


def main(argv=None):
    args = parse_args(argv)
    set_cpu_threads(args.num_threads)
    fit_and_encode(args.features_file, args.pq_file, args.codes_file,
                   num_codebooks=args.num_codebooks, codebook_size=args.codebook_size,
                   max_train_vectors=args.max_train_vectors, seed=args.seed,
                   batch_size=args.batch_size, device=args.device, overwrite=args.overwrite,
                   progress={"auto": None, "on": True, "off": False}[args.progress])


if __name__ == "__main__":
    run_cli(main)
