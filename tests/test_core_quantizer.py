import warnings

import numpy as np
import pytest
import torch

from remind.networks import build_resnet18_split
from remind.quantizer import ProductQuantizer, QuantizerError


def _unpack(codes, nbits, m):
    """faiss packs sub-codes of under 8 bits LSB-first into bytes; one value per sub-code here."""
    if nbits == 8:
        return codes
    bits = np.unpackbits(codes, axis=1, bitorder="little")[:, :m * nbits].reshape(len(codes), m, nbits)
    return (bits * (1 << np.arange(nbits))).sum(-1).astype(np.uint8)


def _check_against_faiss(pq, x):
    fpq = pq.to_faiss()
    packed = fpq.compute_codes(x)
    ref = _unpack(packed, pq.nbits, pq.M)
    ours = pq.encode(torch.from_numpy(x)).numpy()
    assert ours.dtype == np.uint8 and ours.shape == ref.shape
    same = ours == ref
    assert same.mean() >= 0.9999
    # Where the codes differ, both centroids must be equally near (a float32 near-tie).
    cents = pq.centroids.numpy()
    for i, m in zip(*np.nonzero(~same)):
        sub = x[i, m * pq.dsub:(m + 1) * pq.dsub]
        d_ours = ((sub - cents[m, ours[i, m]]) ** 2).sum()
        d_ref = ((sub - cents[m, ref[i, m]]) ** 2).sum()
        assert abs(d_ours - d_ref) <= 1e-5 * max(1.0, d_ref)
    # Reconstructions equal faiss decode exactly.
    np.testing.assert_array_equal(pq.decode(torch.from_numpy(ref)).numpy(), fpq.decode(packed))


def test_codes_and_reconstructions_equal_faiss_on_random_data(rng):
    x = rng.standard_normal((12000, 64)).astype(np.float32)
    pq = ProductQuantizer(64, num_codebooks=8, nbits=8).fit(x, seed=3)
    _check_against_faiss(pq, x)


def test_codes_equal_faiss_on_real_resnet_features():
    from sklearn.datasets import load_digits

    digits = load_digits().images[:600].astype(np.float32) / 16.0  # real 8x8 digit images
    imgs = torch.from_numpy(digits).unsqueeze(1).repeat(1, 3, 1, 1)
    imgs = torch.nn.functional.interpolate(imgs, size=64, mode="bilinear", align_corners=False)
    torch.manual_seed(0)
    g, _ = build_resnet18_split(first_plastic_block="layer4.1", num_classes=10)
    with torch.no_grad():
        maps = g(imgs)  # [600, 512, 2, 2]
    vecs = maps.permute(0, 2, 3, 1).reshape(-1, 512).numpy().copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pq = ProductQuantizer(512, num_codebooks=32, nbits=8).fit(vecs, seed=0)
    _check_against_faiss(pq, vecs)
    codes = pq.encode_maps(maps)
    assert codes.shape == (600, 2, 2, 32)
    rec = pq.decode_maps(codes)
    assert rec.shape == maps.shape
    # Reconstruction is far closer than the features' own spread.
    assert ((rec - maps) ** 2).mean() < 0.5 * maps.var()


def test_nbits_below_8_and_16_bit_dtype(rng):
    x = rng.standard_normal((600, 16)).astype(np.float32)
    pq = ProductQuantizer(16, num_codebooks=4, nbits=4).fit(x)
    codes = pq.encode(torch.from_numpy(x))
    assert codes.dtype == torch.uint8 and int(codes.max()) < 16
    _check_against_faiss(pq, x)
    assert ProductQuantizer(16, 4, 16).code_dtype == torch.int32


def test_clear_errors(rng):
    with pytest.raises(QuantizerError, match="multiple of the number of codebooks"):
        ProductQuantizer(10, num_codebooks=3)
    with pytest.raises(QuantizerError, match="bits per code"):
        ProductQuantizer(16, 4, nbits=9)
    with pytest.raises(QuantizerError, match="bits per code"):
        ProductQuantizer(16, 4, nbits=0)
    with pytest.raises(QuantizerError, match="at least 256 training vectors"):
        ProductQuantizer(16, 4, 8).fit(rng.standard_normal((100, 16)).astype(np.float32))
    with pytest.raises(QuantizerError, match="not trained"):
        ProductQuantizer(16, 4, 8).encode(torch.zeros(2, 16))


def test_save_load_plain_arrays_and_memory(tmp_path, rng):
    x = rng.standard_normal((1000, 32)).astype(np.float32)
    pq = ProductQuantizer(32, num_codebooks=4, nbits=8).fit(x)
    path = tmp_path / "pq.npz"
    pq.save(path)
    with np.load(path, allow_pickle=False) as z:  # plain arrays only: no pickle needed
        assert set(z.files) == {"d", "num_codebooks", "nbits", "centroids"}
    back = ProductQuantizer.load(path)
    t = torch.from_numpy(x)
    assert torch.equal(back.encode(t), pq.encode(t))
    assert pq.nbytes == 4 * 256 * 8 * 4
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(QuantizerError, match="bad.npz"):
        ProductQuantizer.load(tmp_path / "bad.npz")


def test_exact_ties_pick_the_first_centroid_like_faiss(rng):
    """Encoding keeps the first of equally near centroids (faiss's choice), so codes do not depend
    on how the minimum is searched."""
    cents = rng.standard_normal((4, 256, 4)).astype(np.float32)
    cents[:, 200] = cents[:, 7]  # exact duplicates: every vector is equally near both
    cents[:, 9] = cents[:, 3]
    pq = ProductQuantizer.from_state_dict({"d": 16, "num_codebooks": 4, "nbits": 8,
                                           "centroids": torch.from_numpy(cents)})
    x = np.concatenate([cents[:, i].reshape(1, 16) for i in (7, 3, 200, 9)]
                       + [rng.standard_normal((500, 16)).astype(np.float32)])
    codes = pq.encode(torch.from_numpy(x)).numpy()
    assert (codes[:4] == [[7] * 4, [3] * 4, [7] * 4, [3] * 4]).all()
    assert not np.isin(codes, [200, 9]).any()
    np.testing.assert_array_equal(codes[:4], pq.to_faiss().compute_codes(x[:4]))


def test_16_bit_codes_encode_and_decode_exactly():
    g = torch.Generator().manual_seed(0)
    cents = torch.randn(2, 2 ** 16, 2, generator=g)
    pq = ProductQuantizer.from_state_dict({"d": 4, "num_codebooks": 2, "nbits": 16, "centroids": cents})
    codes = torch.randint(0, 2 ** 16, (50, 2), dtype=torch.int32, generator=g)
    rec = pq.decode(codes)
    assert torch.equal(rec, torch.cat([cents[0, codes[:, 0].long()], cents[1, codes[:, 1].long()]], 1))
    back = pq.encode(rec)
    assert back.dtype == torch.int32
    # A centroid's nearest centroid is itself, unless another one is exactly as near.
    assert torch.equal(pq.decode(back), rec)
