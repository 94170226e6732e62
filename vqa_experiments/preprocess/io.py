"""Atomic output files, h5 string columns and the one-line-error CLI wrapper."""
import contextlib
import json
import sys

import h5py
import numpy as np
from remind.checkpoint import atomic_write
from remind.quantizer import QuantizerError

from vqa_experiments.vqa_data import VQADataError

STR_DTYPE = h5py.string_dtype("utf-8")


def write_json(path, obj):
    with atomic_write(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, ensure_ascii=False)


def write_npy(path, array):
    with atomic_write(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)


@contextlib.contextmanager
def atomic_h5(path):
    """An open, writable ``h5py.File`` that appears under ``path`` only if the block succeeds."""
    with atomic_write(path) as tmp:
        with h5py.File(tmp, "w") as f:
            yield f


def put_strings(f, name, values):
    """A utf-8 string dataset (read back as ``str`` by ``vqa_data``)."""
    values = np.asarray(list(values), dtype=object)
    f.create_dataset(name, data=values, dtype=STR_DTYPE)


def set_attrs(f, attrs):
    for key, value in attrs.items():
        f.attrs[key] = value


def add_threads_arg(parser):
    parser.add_argument("--num_threads", type=int, default=0,
                        help="CPU threads for torch and faiss (0: their defaults); 1 is much "
                             "faster than 2 on a busy 2-core machine")


def set_cpu_threads(num_threads):
    """Pin torch's and faiss's CPU thread pools (their spinning threads thrash busy cores)."""
    if num_threads > 0:
        import faiss
        import torch

        torch.set_num_threads(num_threads)
        faiss.omp_set_num_threads(num_threads)


def warn(message):
    print(f"warning: {message}", file=sys.stderr)


def run_cli(main, argv=None):
    """Run ``main(argv)``; a ``VQADataError`` becomes one line on stderr and exit status 2."""
    try:
        main(argv)
    except (VQADataError, QuantizerError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)

