"""Train the product quantizer on the base-init features and encode them for the replay buffer.

Every spatial position of every feature map is one d = C dimensional training vector. faiss trains
each sub-quantizer on at most 256 x codebook_size vectors drawn uniformly at random, so reading
all 6.3M ImageNet vectors (12.8 GB) is not needed: ``--max_train_vectors`` (default 262,144)
vectors are drawn uniformly first, which leaves the distribution of faiss's sample unchanged.
0 reads them all.

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
import numpy as np
from tqdm import tqdm

from image_classification_experiments import imagenet_folders as folders
from image_classification_experiments.ic_common import atomic_output, default_device, resolve_device, run_cli
from image_classification_experiments.imagenet_folders import DataError

FORMAT = "remind-codes-v1"


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
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch_size", type=int, default=256, help="feature maps per encoding chunk")
    p.add_argument("--device", default=None, help="where to encode (default: cuda if available)")
    p.add_argument("--overwrite", action="store_true", help="rebuild even if up to date")
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
    if not os.path.isfile(path):
        raise DataError(f"features file not found: {path} (make it with extract_features.py)")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise DataError(f"{path}: not a readable h5 file ({err})") from None
    missing = [k for k in ("features", "labels", "indices") if k not in f]
    if missing:
        f.close()
        raise DataError(f"{path}: missing datasets {', '.join(missing)}")
    n = f["features"].shape[0]
    if f["features"].ndim != 4 or f["labels"].shape != (n,) or f["indices"].shape != (n,):
        shapes = {k: f[k].shape for k in ("features", "labels", "indices")}
        f.close()
        raise DataError(f"{path}: inconsistent shapes {shapes} (expected [N,C,H,W], [N], [N])")
    return f


def features_identity(f, path):
    """Which features file this is: its build id (new on every write), else size and mtime."""
    build = f.attrs.get("build_id")
    if build is not None:
        return str(build)
    st = os.stat(path)
    return f"size={st.st_size},mtime_ns={st.st_mtime_ns}"


def sample_training_vectors(feats, max_vectors, seed, chunk):
    """[K, C] float32: all positions, or K drawn uniformly without replacement, read chunk-wise."""
    n, c, h, w = feats.shape
    hw = h * w
    total = n * hw
    if max_vectors and total > max_vectors:
        chosen = np.sort(np.random.default_rng(seed).choice(total, size=max_vectors, replace=False))
    else:
        chosen = None
    out = np.empty((total if chosen is None else len(chosen), c), dtype=np.float32)
    filled = 0
    for a in tqdm(range(0, n, chunk), desc="read", unit="chunk", leave=False):
        b = min(a + chunk, n)
        vecs = np.ascontiguousarray(feats[a:b].transpose(0, 2, 3, 1)).reshape(-1, c)
        if chosen is not None:
            lo, hi = np.searchsorted(chosen, [a * hw, b * hw])
            vecs = vecs[chosen[lo:hi] - a * hw]
        out[filled:filled + len(vecs)] = vecs
        filled += len(vecs)
    return out


def encode_all(pq, f, out_path, attrs, device, chunk):
    import torch

    feats = f["features"]
    n, c, h, w = feats.shape
    m = pq.M
    rows = int(max(1, min(n, (1 << 20) // (h * w * m))))
    with h5py.File(out_path, "w") as g:
        dtype = "uint8" if pq.nbits <= 8 else "int32"
        codes = g.create_dataset("codes", shape=(n, h, w, m), dtype=dtype, chunks=(rows, h, w, m))
        g.create_dataset("labels", data=f["labels"][:].astype(np.int64))
        g.create_dataset("indices", data=f["indices"][:].astype(np.int64))
        for a in tqdm(range(0, n, chunk), desc="encode", unit="chunk", leave=False):
            b = min(a + chunk, n)
            maps = torch.from_numpy(np.ascontiguousarray(feats[a:b])).to(device)
            codes[a:b] = pq.encode_maps(maps).cpu().numpy()
        g.attrs.update(attrs)


def main(argv=None):
    args = parse_args(argv)
    nbits = codebook_bits(args.codebook_size)
    if args.max_train_vectors < 0 or args.batch_size < 1:
        raise DataError("--max_train_vectors must be >= 0 and --batch_size >= 1")
    with open_features(args.features_file) as f:
        fp = json.dumps({"format": FORMAT, "features": features_identity(f, args.features_file),
                         "num_codebooks": args.num_codebooks, "codebook_size": args.codebook_size,
                         "max_train_vectors": args.max_train_vectors, "seed": args.seed},
                        sort_keys=True)
        if up_to_date(args, fp):
            print(f"{args.codes_file} and {args.pq_file} are up to date; pass --overwrite to rebuild")
            return
        n, c, h, w = f["features"].shape
        if n * h * w < args.codebook_size:
            raise DataError(f"{args.features_file}: {n * h * w} training vectors ({n} maps of "
                            f"{h} x {w}); the quantizer needs at least --codebook_size = "
                            f"{args.codebook_size}")
        # torch and the core are imported only now, so that "up to date" and bad input answer
        # without the seconds their import takes.
        import remind  # noqa: F401
        from remind.quantizer import ProductQuantizer

        device = resolve_device(args.device or default_device())
        pq = ProductQuantizer(d=c, num_codebooks=args.num_codebooks, nbits=nbits)
        t0 = time.time()
        x = sample_training_vectors(f["features"], args.max_train_vectors, args.seed, args.batch_size)
        pq.fit(x, seed=args.seed)
        n_train = len(x)
        del x
        t_fit = time.time() - t0
        pq.save(args.pq_file)
        pq.to(device)

        t0 = time.time()
        attrs = {"format": FORMAT, "fingerprint": fp, "num_codebooks": args.num_codebooks,
                 "codebook_size": args.codebook_size, "nbits": nbits, "d": c,
                 "pq_file": args.pq_file, "pq_sha256": folders.file_sha256(args.pq_file),
                 "features_file": args.features_file, "num_train_vectors": n_train,
                 "seed": args.seed}
        for key in ("extract_features_from", "image_size", "classifier_ckpt", "split",
                    "min_class", "max_class"):
            if key in f.attrs:
                attrs[key] = f.attrs[key]
        with atomic_output(args.codes_file) as tmp:
            encode_all(pq, f, tmp, attrs, device, args.batch_size)
        t_enc = time.time() - t0
    per_map = h * w * args.num_codebooks * (1 if nbits <= 8 else 4)
    print(f"PQ d={c} M={args.num_codebooks} nbits={nbits} trained on {n_train} vectors in "
          f"{t_fit:.1f} s -> {args.pq_file}")
    print(f"encoded {n} maps ({h} x {w} x {args.num_codebooks} codes, {per_map} B each) in "
          f"{t_enc:.1f} s -> {args.codes_file}")


def up_to_date(args, fp):
    if args.overwrite or not (os.path.isfile(args.codes_file) and os.path.isfile(args.pq_file)):
        return False
    try:
        with h5py.File(args.codes_file, "r") as g:
            same = g.attrs.get("fingerprint") == fp and \
                g.attrs.get("pq_sha256") == folders.file_sha256(args.pq_file)
    except OSError:
        return False
    if not same:
        print(f"{args.codes_file} was made from other inputs; rebuilding it")
    return same


if __name__ == "__main__":
    run_cli(main)
