"""remind.feature_store: features -> PQ -> codes for any frozen network, both file layouts, and the
one unreadable-image policy."""
import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from remind.errors import InputError
from remind.feature_store import (FeatureStoreError, UnreadableImage, UnreadableImageError,
                                  UnreadableImages, collate_images, encode_store, fit_quantizer,
                                  open_feature_store, read_rgb, sample_map_vectors, sample_vectors,
                                  write_feature_store)
from remind.quantizer import ProductQuantizer


def tiny_net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.ReLU()).eval()


def make_batches(n=10, batch=4, bad_at=()):
    """(images, columns, markers) batches of n 8x8 images; rows in ``bad_at`` are unreadable."""
    g = torch.Generator().manual_seed(1)
    images = torch.randn(n, 3, 8, 8, generator=g)
    items = [(UnreadableImage(f"img{i}.png", "truncated") if i in bad_at else images[i],
              {"ids": 100 + i, "names": f"img{i}.png"}) for i in range(n)]
    return images, [collate_images(items[s:s + batch]) for s in range(0, n, batch)]


def expected_maps(images):
    with torch.no_grad():
        return tiny_net()(images).permute(0, 2, 3, 1).numpy()  # NHWC


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_write_and_read_back_in_both_layouts(tmp_path, layout):
    images, batches = make_batches()
    path = tmp_path / "f.h5"
    seen = []
    shape = write_feature_store(tiny_net(), batches, path, len(images), layout=layout,
                                attrs={"source": "test"}, check_shape=lambda *s: seen.append(s),
                                progress=False)
    assert shape == (10, 4, 4, 8) and seen == [(4, 4, 8)]
    want = expected_maps(images)  # one batch of 10 here, batches of 4 there: float rounding may differ
    with h5py.File(path, "r") as f:
        on_disk = f["features"][()]
        assert f.attrs["layout"] == layout and f.attrs["skipped_unreadable"] == 0
        assert f.attrs["source"] == "test" and f["ids"].dtype == np.int64
    np.testing.assert_allclose(on_disk, want if layout == "NHWC" else want.transpose(0, 3, 1, 2),
                               rtol=1e-5, atol=1e-6)
    nhwc = on_disk if layout == "NHWC" else on_disk.transpose(0, 2, 3, 1)
    with open_feature_store(str(path), columns=("ids", "names")) as store:
        assert store.layout == layout and store.shape == (10, 4, 4, 8)
        np.testing.assert_array_equal(store.maps(2, 7), nhwc[2:7])
        np.testing.assert_array_equal(store.rows([1, 4, 9], chunk=2), nhwc[[1, 4, 9]])
        assert store.column("ids").tolist() == list(range(100, 110))
        assert store.column("names")[3] == "img3.png"


def test_channels_last_gives_the_same_values(tmp_path):
    images, batches = make_batches()
    write_feature_store(tiny_net(), batches, tmp_path / "a.h5", 10, progress=False)
    _, batches = make_batches()
    write_feature_store(tiny_net(), batches, tmp_path / "b.h5", 10, channels_last=True, progress=False)
    with h5py.File(tmp_path / "a.h5") as a, h5py.File(tmp_path / "b.h5") as b:
        np.testing.assert_allclose(a["features"][()], b["features"][()], rtol=1e-5, atol=1e-6)


def test_unreadable_images_stop_the_run_or_are_skipped_and_counted(tmp_path, capsys):
    images, batches = make_batches(bad_at={5})
    path = tmp_path / "f.h5"
    policy = UnreadableImages(skip=False, skip_flag="--skip_corrupt_images")
    with pytest.raises(UnreadableImageError, match=r"cannot read image img5.png: truncated "
                                                   r"\(pass --skip_corrupt_images"):
        write_feature_store(tiny_net(), batches, path, 10, unreadable=policy, progress=False)
    assert issubclass(UnreadableImageError, InputError)
    assert not path.exists() and not list(tmp_path.iterdir())  # no partial or temporary file
    _, batches = make_batches(bad_at={5, 8})
    policy = UnreadableImages(skip=True)
    assert write_feature_store(tiny_net(), batches, path, 10, unreadable=policy, progress=False)[0] == 8
    assert policy.count == 2 and policy.summary() == "skipped 2 unreadable image(s)"
    assert "warning: skipping unreadable image img5.png: truncated" in capsys.readouterr().err
    with open_feature_store(str(path), columns=("ids",)) as store:
        assert 105 not in store.column("ids") and store.attrs["skipped_unreadable"] == 2
        np.testing.assert_allclose(store.maps(0, 8), np.delete(expected_maps(images), [5, 8], 0),
                                   rtol=1e-5, atol=1e-6)
    worded = UnreadableImages(message="{path}: cannot read the image ({reason})")
    with pytest.raises(UnreadableImageError, match=r"^x.png: cannot read the image \(bad\)$"):
        worded.handle([UnreadableImage("x.png", "bad")])


def test_all_unreadable_is_an_error(tmp_path):
    _, batches = make_batches(n=3, bad_at={0, 1, 2})
    with pytest.raises(FeatureStoreError, match="no readable images"):
        write_feature_store(tiny_net(), batches, tmp_path / "f.h5", 3,
                            unreadable=UnreadableImages(skip=True), progress=False)


def test_read_rgb_and_collate(tmp_path):
    good = tmp_path / "a.png"
    Image.fromarray(np.full((4, 4, 4), 200, np.uint8), "RGBA").save(good)
    (tmp_path / "b.png").write_bytes(b"\x89PNG garbage")
    img = read_rgb(str(good))
    assert img.mode == "RGB" and img.size == (4, 4)
    bad = read_rgb(str(tmp_path / "b.png"))
    assert isinstance(bad, UnreadableImage) and bad.path.endswith("b.png") and bad.reason
    x, cols, markers = collate_images([(torch.zeros(3, 2, 2), {"id": 1}), (bad, {"id": 2}),
                                       (torch.ones(3, 2, 2), {"id": 3})])
    assert x.shape == (2, 3, 2, 2) and cols == {"id": [1, 3]} and markers == [bad]
    assert collate_images([(bad, {"id": 2})]) == (None, {}, [bad])


def store_of(tmp_path, layout, n=12):
    rng = np.random.default_rng(3)
    maps = rng.standard_normal((n, 2, 3, 8)).astype(np.float32)  # NHWC
    path = tmp_path / f"{layout}.h5"
    with h5py.File(path, "w") as f:  # written by hand, without a layout attribute (older files)
        f["features"] = maps if layout == "NHWC" else maps.transpose(0, 3, 1, 2)
        f["ids"] = np.arange(n, dtype=np.int64)
        f.create_dataset("names", data=[f"n{i}" for i in range(n)], dtype=h5py.string_dtype())
    return str(path), maps


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_sampling(tmp_path, layout):
    path, maps = store_of(tmp_path, layout)
    flat = maps.reshape(-1, 8)
    with open_feature_store(path, layout) as store:
        np.testing.assert_array_equal(sample_vectors(store, 0, progress=False), flat)
        np.testing.assert_array_equal(sample_vectors(store, 1000, progress=False), flat)
        chosen = np.sort(np.random.default_rng(7).choice(len(flat), size=20, replace=False))
        for chunk in (1, 5, 100):
            np.testing.assert_array_equal(sample_vectors(store, 20, 7, chunk, False), flat[chosen])
        rows, x = sample_map_vectors(store, np.arange(2, 12), 13, np.random.default_rng(4))
        want = np.sort(np.random.default_rng(4).choice(np.arange(2, 12), size=3, replace=False))
        assert rows.tolist() == want.tolist()  # ceil(13 / 6) = 3 maps
        np.testing.assert_array_equal(x, maps[want].reshape(-1, 8))
        rows, x = sample_map_vectors(store, [1, 3], 0, np.random.default_rng(4))
        assert rows.tolist() == [1, 3] and len(x) == 12


def test_encode_store_is_the_same_for_both_layouts(tmp_path):
    (p1, maps), (p2, _) = store_of(tmp_path, "NHWC"), store_of(tmp_path, "NCHW")
    pq = fit_quantizer(maps.reshape(-1, 8), num_codebooks=4, nbits=4, seed=1)
    assert isinstance(pq, ProductQuantizer) and (pq.d, pq.M, pq.nbits) == (8, 4, 4)
    with open_feature_store(p1, "NHWC", ("ids", "names")) as s1:
        assert encode_store(pq, s1, tmp_path / "c1.h5", columns=("ids", "names"), chunk=5,
                            attrs={"order": "iid"}, progress=False) == (12, 2, 3, 4)
    with open_feature_store(p2, "NCHW") as s2:
        encode_store(pq, s2, tmp_path / "c2.h5", chunk=12, progress=False)
    with h5py.File(tmp_path / "c1.h5") as a, h5py.File(tmp_path / "c2.h5") as b:
        assert a["codes"].dtype == np.uint8 and a.attrs["order"] == "iid"
        np.testing.assert_array_equal(a["codes"][()], b["codes"][()])
        np.testing.assert_array_equal(a["codes"][()], pq.encode(torch.from_numpy(maps)).numpy())
        assert a["ids"][()].tolist() == list(range(12))
        assert a["names"].asstr()[()].tolist() == [f"n{i}" for i in range(12)]


def test_store_errors(tmp_path):
    with pytest.raises(FeatureStoreError, match="features file not found"):
        open_feature_store(str(tmp_path / "nope.h5"))
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(FeatureStoreError, match="not a readable h5 file"):
        open_feature_store(str(tmp_path / "junk.h5"))
    path, _ = store_of(tmp_path, "NHWC")
    with pytest.raises(FeatureStoreError, match="missing datasets labels"):
        open_feature_store(path, columns=("labels",))
    with h5py.File(path, "a") as f:
        f.attrs["layout"] = "NHWC"
    with pytest.raises(FeatureStoreError, match="stored NHWC, expected NCHW"):
        open_feature_store(path, "NCHW")
    with h5py.File(path, "a") as f:
        f["short"] = np.zeros(3)
    with pytest.raises(FeatureStoreError, match="inconsistent shapes"):
        open_feature_store(path, columns=("short",))
    with open_feature_store(path) as store:
        pq = ProductQuantizer(16, 4, 2)
        pq.fit(np.random.default_rng(0).standard_normal((64, 16)).astype(np.float32))
        with pytest.raises(FeatureStoreError, match="8-channel maps, the quantizer expects d=16"):
            encode_store(pq, store, tmp_path / "c.h5", progress=False)
