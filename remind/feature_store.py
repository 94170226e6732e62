"""Features -> product quantizer -> codes, for any frozen network and any source of images.

Every experiment family turns images into REMIND's replay codes the same way: run a frozen network
G over the images and store its feature maps (``write_feature_store``), fit a
``remind.quantizer.ProductQuantizer`` on a sample of the stored vectors (``sample_vectors`` or
``sample_map_vectors``, then ``fit_quantizer``), and encode every stored map (``encode_store``).
This module knows no dataset: the caller supplies the network, the image batches and the names
and values of the per-item columns (ids, labels, file names).

Layout. The API speaks channels-last: a map is ``[H, W, C]`` and every spatial position is one
C-dimensional vector, which is what the quantizer consumes; codes are ``[N, H, W, M]``. A store
file keeps its ``features`` in one of two axis orders, recorded in its ``layout`` attribute:
``NHWC`` (the default) or ``NCHW`` (the order of the image-classification base-init cache, kept
so that existing files still load). The conversion happens only here, when a map is written or
read; values are never changed by it.

Store file (h5):
  features   float32 [N, H, W, C] (NHWC) or [N, C, H, W] (NCHW)
  <column>   one value per row for each column the batches carry (int64 ids, labels, utf-8 names)
  attrs      layout, skipped_unreadable, and whatever the caller adds
Codes file (h5, ``encode_store``):
  codes      uint8 [N, H, W, M] (int32 when nbits > 8)
  <column>   copied from the store
  attrs      the caller's

Unreadable images: a loader returns an ``UnreadableImage`` marker in place of an image that cannot
be decoded (``read_rgb`` does), so a DataLoader worker never dies with a traceback. The one policy,
``UnreadableImages``: with ``skip`` the marked images are left out, counted and warned about (the
first few); without it the first one is an ``UnreadableImageError`` (an ``InputError``: one line).

Files are written under a temporary name and renamed when complete. Torch is imported lazily, so
that a script that only checks whether its outputs are up to date answers at once.
"""
import math
import sys

import h5py
import numpy as np
from tqdm import tqdm

from remind.checkpoint import atomic_write
from remind.errors import InputError

LAYOUTS = ("NHWC", "NCHW")
STR_DTYPE = h5py.string_dtype("utf-8")
CHUNK_BYTES = 1 << 20  # h5 chunks of whole maps, about 1 MiB each


class FeatureStoreError(InputError):
    """A feature store that is missing, unreadable or not what the caller asked for."""


class UnreadableImageError(FeatureStoreError):
    """An image file that cannot be decoded, and skipping was not asked for."""


# ------------------------------------------------------------------------ unreadable images
class UnreadableImage:
    """Returned by a loader in place of an image that could not be decoded."""

    def __init__(self, path, reason):
        self.path, self.reason = path, reason

    def __repr__(self):
        return f"{self.path} ({self.reason})"


def read_rgb(path):
    """The image as an RGB PIL image (fully decoded), or an ``UnreadableImage`` marker."""
    from PIL import Image

    try:
        with open(path, "rb") as f:
            return Image.open(f).convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        return UnreadableImage(path, str(err).splitlines()[0] if str(err) else type(err).__name__)


class UnreadableImages:
    """The policy for unreadable images: skipped and counted when ``skip``, else an error.

    ``skip_flag``: the option that turns skipping on, named in the error. ``message``: the error's
    wording, a format string with ``{path}`` and ``{reason}``. ``count`` counts skip events (callers
    may reset it, e.g. per epoch); ``paths`` holds the distinct files. Markers are any objects
    with ``path`` and ``reason``.
    """

    def __init__(self, skip=False, skip_flag=None, message="cannot read image {path}: {reason}",
                 max_warnings=10):
        self.skip, self.skip_flag, self.message = skip, skip_flag, message
        self.max_warnings = max_warnings
        self.count = 0
        self.paths = set()

    def handle(self, bad):
        if not bad:
            return
        if not self.skip:
            item = bad[0]
            hint = f" (pass {self.skip_flag} to skip unreadable files)" if self.skip_flag else ""
            raise UnreadableImageError(self.message.format(path=item.path, reason=item.reason) + hint)
        for item in bad:
            self.count += 1
            if item.path not in self.paths:
                self.paths.add(item.path)
                if len(self.paths) <= self.max_warnings:
                    print(f"warning: skipping unreadable image {item.path}: {item.reason}",
                          file=sys.stderr)

    def summary(self):
        return f"skipped {self.count} unreadable image(s)" if self.count else ""


def collate_images(items):
    """DataLoader ``collate_fn`` for items ``(image tensor or marker, {column: value})``.

    Returns ``(images [B, ...] or None, {column: list of B values}, [markers])``: the batch form
    ``write_feature_store`` reads, with the unreadable items taken out.
    """
    import torch

    good = [(x, cols) for x, cols in items if not isinstance(x, UnreadableImage)]
    bad = [x for x, _ in items if isinstance(x, UnreadableImage)]
    if not good:
        return None, {}, bad
    columns = {name: [cols[name] for _, cols in good] for name in good[0][1]}
    return torch.stack([x for x, _ in good]), columns, bad


# ------------------------------------------------------------------------------ writing
def _chunk_rows(n, item_bytes):
    return int(max(1, min(n, CHUNK_BYTES // max(1, item_bytes))))


def _column_values(values):
    if hasattr(values, "numpy"):  # a torch tensor
        values = values.numpy()
    if len(values) and isinstance(values[0], str):
        return np.asarray(list(values), dtype=object)
    return np.asarray(values)


class _StoreWriter:
    """Rows appended batch by batch into resizable datasets (never the whole array in memory)."""

    def __init__(self, f, layout, n_expected):
        self.f, self.layout, self.n_expected = f, layout, n_expected
        self.pos = 0
        self.datasets = None

    def _create(self, maps, columns):
        n = max(1, self.n_expected)
        shape = maps.shape[1:]
        self.datasets = {"features": self.f.create_dataset(
            "features", shape=(n, *shape), maxshape=(None, *shape), dtype="float32",
            chunks=(_chunk_rows(n, maps[0].nbytes), *shape))}
        for name, values in columns.items():
            dtype = STR_DTYPE if values.dtype == object else values.dtype
            self.datasets[name] = self.f.create_dataset(name, shape=(n,), maxshape=(None,), dtype=dtype)

    def append(self, maps, columns):
        columns = {name: _column_values(v) for name, v in columns.items()}
        if self.datasets is None:
            self._create(maps, columns)
        elif set(columns) != set(self.datasets) - {"features"}:
            raise FeatureStoreError(f"batches carry the columns {sorted(columns)}, the first one "
                                    f"carried {sorted(set(self.datasets) - {'features'})}")
        a, b = self.pos, self.pos + len(maps)
        for name, ds in self.datasets.items():
            if b > ds.shape[0]:
                ds.resize(b, axis=0)
            ds[a:b] = maps if name == "features" else columns[name]
        self.pos = b

    def finish(self):
        if self.pos == 0:
            raise FeatureStoreError("no readable images to extract features from")
        for ds in self.datasets.values():
            if ds.shape[0] != self.pos:
                ds.resize(self.pos, axis=0)


def _progress_disable(progress):
    """tqdm's ``disable`` for ``progress``: None -> auto (on for a terminal), True on, False off."""
    return None if progress is None else not progress


def write_feature_store(net, batches, path, num_items, *, layout="NHWC", device="cpu",
                        channels_last=False, unreadable=None, attrs=None, check_shape=None,
                        progress=None, desc="features"):
    """Run the frozen ``net`` over ``batches`` and write the store ``path``; returns (N, H, W, C).

    ``batches``: an iterable of ``(images [B, 3, h, w] tensor or None, {column: B values},
    [UnreadableImage markers])`` (``collate_images`` makes them); the markers go to ``unreadable``
    (an ``UnreadableImages``; default: no skipping). ``net`` maps images to ``[B, C, H, W]``; it
    is moved to ``device`` and runs under ``torch.no_grad``; with ``channels_last`` its weights
    and input use channels-last memory (faster on CPUs). ``num_items``: the expected row count
    (fewer rows when images are skipped). ``check_shape(H, W, C)``: called on the first output,
    may raise. ``attrs`` are written at the end, with ``layout`` and ``skipped_unreadable``.
    """
    import torch

    if layout not in LAYOUTS:
        raise FeatureStoreError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    unreadable = unreadable if unreadable is not None else UnreadableImages()
    skipped_before = unreadable.count
    device = torch.device(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(device, memory_format=fmt) if channels_last else net.to(device)
    bar = tqdm(total=num_items, unit="img", unit_scale=True, desc=desc, dynamic_ncols=True,
               disable=_progress_disable(progress))
    with atomic_write(path) as tmp, h5py.File(tmp, "w") as f:
        writer = _StoreWriter(f, layout, num_items)
        for x, columns, bad in batches:
            unreadable.handle(bad)
            if x is None:
                continue
            with torch.no_grad():
                z = net(x.to(device, non_blocking=True, memory_format=fmt)).float()
            if writer.datasets is None and check_shape is not None:
                check_shape(*z.shape[2:], z.shape[1])
            if layout == "NHWC":
                z = z.permute(0, 2, 3, 1)
            writer.append(z.contiguous().cpu().numpy(), columns)
            bar.update(len(z))
        bar.close()
        writer.finish()
        f.attrs.update({"layout": layout, "skipped_unreadable": unreadable.count - skipped_before,
                        **(attrs or {})})
        shape = writer.datasets["features"].shape
    n, h, w, c = shape if layout == "NHWC" else (shape[0], shape[2], shape[3], shape[1])
    return n, h, w, c


# ------------------------------------------------------------------------------ reading
class FeatureStore:
    """A feature store open for reading; maps come back channels-last whatever the file's layout.

    ``layout``: the file's axis order when the caller knows it (files written before the
    ``layout`` attribute existed); None takes the attribute, else NHWC. ``columns``: the per-row
    datasets the caller needs (checked to be there, one value per row).
    """

    def __init__(self, path, layout=None, columns=()):
        self.path = path
        try:
            self.file = h5py.File(path, "r")
        except FileNotFoundError:
            raise FeatureStoreError(f"features file not found: {path}") from None
        except OSError as err:
            raise FeatureStoreError(f"{path}: not a readable h5 file ({err})") from None
        try:
            self._check(layout, columns)
        except FeatureStoreError:
            self.file.close()
            raise

    def _check(self, layout, columns):
        f, path = self.file, self.path
        missing = [k for k in ("features", *columns) if k not in f]
        if missing:
            raise FeatureStoreError(f"{path}: missing datasets {', '.join(missing)}")
        saved = f.attrs.get("layout")
        saved = saved.decode() if isinstance(saved, bytes) else saved
        if layout is not None and saved is not None and saved != layout:
            raise FeatureStoreError(f"{path}: features are stored {saved}, expected {layout}")
        self.layout = layout or saved or "NHWC"
        if self.layout not in LAYOUTS:
            raise FeatureStoreError(f"{path}: unknown layout {self.layout!r}")
        self.features = f["features"]
        n = self.features.shape[0]
        if self.features.ndim != 4 or any(f[k].shape != (n,) for k in columns):
            shapes = {k: f[k].shape for k in ("features", *columns)}
            raise FeatureStoreError(f"{path}: inconsistent shapes {shapes} (expected [N, "
                                    f"{', '.join(self.layout[1:])}] and [N] per column)")

    @property
    def shape(self):
        """(N, H, W, C)."""
        n, a, b, c = self.features.shape
        return (n, a, b, c) if self.layout == "NHWC" else (n, b, c, a)

    @property
    def attrs(self):
        return self.file.attrs

    def column(self, name):
        ds = self.file[name]
        return ds.asstr()[()] if h5py.check_string_dtype(ds.dtype) else ds[()]

    def _nhwc(self, block):
        return block if self.layout == "NHWC" else np.ascontiguousarray(block.transpose(0, 2, 3, 1))

    def maps(self, start, stop):
        """float32 [stop - start, H, W, C] of rows start..stop."""
        return self._nhwc(self.features[start:stop])

    def rows(self, rows, chunk=256):
        """float32 [len(rows), H, W, C] of the given increasing rows, read in chunks."""
        rows = np.asarray(rows)
        parts = [self._nhwc(self.features[rows[s:s + chunk]]) for s in range(0, len(rows), chunk)]
        return np.concatenate(parts) if parts else np.zeros((0, *self.shape[1:]), np.float32)

    def close(self):
        self.file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_feature_store(path, layout=None, columns=()):
    """``FeatureStore(path, layout, columns)``: use it in a ``with`` block."""
    return FeatureStore(path, layout, columns)


# ------------------------------------------------------------------------------ quantizer
def sample_vectors(store, max_vectors, seed=0, chunk=256, progress=None):
    """float32 [K, C]: every stored vector, or ``max_vectors`` of them drawn uniformly.

    The draw is without replacement from NumPy's ``default_rng(seed)`` over the N*H*W positions
    (row-major over N, H, W), returned in that order; maps are read ``chunk`` at a time, so the
    store is never in memory. ``max_vectors`` 0 or None: all.
    """
    n, h, w, c = store.shape
    hw, total = h * w, n * h * w
    chosen = None
    if max_vectors and total > max_vectors:
        chosen = np.sort(np.random.default_rng(seed).choice(total, size=max_vectors, replace=False))
    out = np.empty((total if chosen is None else len(chosen), c), dtype=np.float32)
    filled = 0
    for a in tqdm(range(0, n, chunk), desc="read", unit="chunk", leave=False,
                  disable=_progress_disable(progress)):
        b = min(a + chunk, n)
        vecs = store.maps(a, b).reshape(-1, c)
        if chosen is not None:
            lo, hi = np.searchsorted(chosen, [a * hw, b * hw])
            vecs = vecs[chosen[lo:hi] - a * hw]
        out[filled:filled + len(vecs)] = vecs
        filled += len(vecs)
    return out


def sample_map_vectors(store, rows, max_vectors, rng, chunk=256):
    """(rows used, float32 [K, C]): every vector of whole maps taken from the sorted ``rows``.

    When ``rows`` hold more than ``max_vectors`` vectors, ``ceil(max_vectors / (H * W))`` of them
    are drawn without replacement with ``rng`` (a NumPy Generator, so several fits can share one
    stream) and sorted. ``max_vectors`` 0 or None: all of ``rows``.
    """
    _, h, w, c = store.shape
    rows = np.asarray(rows)
    if max_vectors:
        max_maps = max(1, math.ceil(max_vectors / (h * w)))
        if len(rows) > max_maps:
            rows = np.sort(rng.choice(rows, size=max_maps, replace=False))
    return rows, store.rows(rows, chunk).reshape(-1, c)


def fit_quantizer(vectors, num_codebooks, nbits, seed=0, device="cpu"):
    """A ``ProductQuantizer`` over the vectors' dimension, trained (faiss, ``seed``) on them."""
    from remind.quantizer import ProductQuantizer

    pq = ProductQuantizer(d=vectors.shape[-1], num_codebooks=num_codebooks, nbits=nbits)
    return pq.fit(vectors, seed=seed).to(device)


def _copy_column(src, dst, name):
    ds = src[name]
    if h5py.check_string_dtype(ds.dtype):
        dst.create_dataset(name, data=np.asarray(ds.asstr()[()], dtype=object), dtype=STR_DTYPE)
    else:
        dst.create_dataset(name, data=ds[()])


def encode_store(pq, store, path, *, columns=(), attrs=None, chunk=256, progress=None, desc="encode"):
    """Write the codes file ``path``: the PQ codes of every map of ``store``; returns its shape.

    Maps are encoded ``chunk`` at a time on the quantizer's device; ``columns`` are copied from
    the store; ``attrs`` are the file's attributes.
    """
    import torch

    n, h, w, c = store.shape
    if c != pq.d:
        raise FeatureStoreError(f"{store.path}: {c}-channel maps, the quantizer expects d={pq.d}")
    m = pq.M
    dtype = "uint8" if pq.nbits <= 8 else "int32"
    with atomic_write(path) as tmp, h5py.File(tmp, "w") as g:
        codes = g.create_dataset("codes", shape=(n, h, w, m), dtype=dtype,
                                 chunks=(_chunk_rows(n, h * w * m * np.dtype(dtype).itemsize), h, w, m))
        for name in columns:
            _copy_column(store.file, g, name)
        for a in tqdm(range(0, n, chunk), desc=desc, unit="chunk", leave=False,
                      disable=_progress_disable(progress)):
            block = torch.from_numpy(store.maps(a, min(a + chunk, n))).to(pq.device)
            codes[a:a + len(block)] = pq.encode(block).cpu().numpy()
        g.attrs.update(attrs or {})
    return n, h, w, m
