"""The offline upper bound of an image-classification stream: Omega's normaliser.

  python offline_experiment.py --dataset imagenet <imagenet_experiment.py's flags> [--offline_epochs N]
  python offline_experiment.py --dataset core50 <core50_experiment.py's flags> [--train_whole_network]

At every evaluation point of the same stream as the REMIND run (after base initialisation and
after each segment: ImageNet's class chunks, CORe50's protocol points), F is trained afresh on
every item seen up to that point (the base-init items and every streamed one), shuffled, for
``--offline_epochs`` epochs (``remind.offline.train_offline``: SGD, momentum 0.9, mini-batches of
``--offline_batch_size``, cosine lr from ``--offline_lr`` 0.1, weight decay ``--weight_decay``), on
the items' codes decoded with the run's quantizer (the PQ fitted at base initialisation, or
``--latent_codec``'s). F starts each time where the stream starts it: ImageNet, the base-init
checkpoint's F; CORe50, the backbone's blocks and a fresh fc (before the base-init training).
``--train_whole_network`` trains the whole ResNet-18 (G and F) on the images instead (the
stream's evaluation transform, no augmentation; the seen images are held in memory: small data
sets only) and evaluates without quantization.

Each point is scored exactly like the stream (the family's evaluation on the same images) and
written with the same files (results.json and results.csv in the streaming format, the per-point
files, accuracy_plot.png), so compute_omega.py reads it as the offline run. Each point's result
(its scores, predictions and F) is cached in ``--offline_cache_dir`` (default: ``offline_cache``
beside ``--save_dir``) under ``remind.offline.offline_cache_key`` of the settings that define it:
the data seen and scored (no streaming-method setting), the network, the quantizer's contents,
the offline recipe and the point. A second run with those settings (another method's comparison,
a rerun after a stop: ``--stop_after_points``) reuses it instead of training again.
"""
import copy
import dataclasses
import os

import torch

from image_classification_experiments import baseline_families as fam
from image_classification_experiments import imagenet_data as data
from image_classification_experiments.stream_eval import encode_batches
from image_classification_experiments.stream_outputs import print_table, write_outputs
from image_classification_experiments.stream_state import fresh_state
from remind.checkpoint import load_checkpoint, save_checkpoint
from remind.latent_codecs import RawLatents
from remind.offline import OfflineConfig, offline_cache_key, train_epochs, train_offline
from remind.replay_buffer import ReplayBuffer
from remind.runtime import run_cli

KIND = "offline_ic"
# Part of every point's cache key: bump it when what a cache entry holds (or how a point is scored) changes.
CACHE_FORMAT = 1


def add_offline_arguments(p):
    p.add_argument("--offline_epochs", type=int, default=40, help="epochs at each evaluation point")
    p.add_argument("--offline_lr", type=float, default=0.1, help="starting lr (cosine to 0)")
    p.add_argument("--offline_batch_size", type=int, default=64)
    p.add_argument("--train_whole_network", action="store_true",
                   help="train all of ResNet-18 on the seen images (default: F on their codes)")
    p.add_argument("--offline_cache_dir", default=None, help="default: <save_dir>/../offline_cache")
    p.add_argument("--stop_after_points", type=int, default=None,
                   help="stop after this many evaluation points (a rerun continues from the cache)")


def offline_config(own, args):
    return OfflineConfig(epochs=own.offline_epochs, batch_size=own.offline_batch_size, lr=own.offline_lr,
                         weight_decay=args.weight_decay, schedule="cosine", seed=args.seed)


class SeenItems:
    """What the offline learner has seen, grown a segment at a time, and only when a point must
    be trained: codes (or, for the whole network, images) and labels."""

    def __init__(self, prep, whole, base=None):
        self.prep, self.whole, self.base, self.done = prep, whole, base, 0  # base: (codes, labels) on codes
        self.inputs, self.labels = [], []

    def _add_dataset(self, ds, desc):
        prep = self.prep
        if self.whole:
            loader = data.make_loader(ds, prep.args.batch_size, prep.args.num_workers)
            batches = ((x, y) for x, y, _ in data.iterate_batches(loader, prep.tally) if x is not None)
        else:
            batches = ((codes.cpu(), y) for codes, y, _ in encode_batches(prep.model, ds, prep.args, prep.tally, desc))
        for x, y in batches:
            self.inputs.append(x)
            self.labels.append(y)

    def upto(self, segments):
        """(inputs, labels) of the base-init items and the first ``segments`` segments."""
        if self.done == 0 and not self.inputs:
            if self.whole:
                self._add_dataset(fam.base_dataset(self.prep), "base")
            else:
                codes, labels = self.base
                self.inputs.append(codes.cpu())
                self.labels.append(torch.as_tensor(labels).long())
        for segment in self.prep.run.segments[self.done:segments]:
            self._add_dataset(self.prep.run.dataset_for(segment), "seen")
        self.done = max(self.done, segments)
        return torch.cat(self.inputs), torch.cat(self.labels)


def train_point(prep, seen, start, config, segments, whole):
    """Train a fresh copy of the starting network on everything seen; set it in ``prep.model``."""
    inputs, labels = seen.upto(segments)
    model = prep.model
    f = copy.deepcopy(start["f"])
    if not whole:
        train_offline(f, inputs, labels, model.quantizer, config, model.device)
        model.f = f
        return
    g = copy.deepcopy(start["g"])
    for p in g.parameters():
        p.requires_grad_(True)
    network = train_epochs(torch.nn.Sequential(g, f), lambda idx: inputs[idx].to(model.device), labels,
                           config, model.device)
    model.g, model.f = network[0].eval(), network[1]
    fam.reset_eval_codes(prep.run)  # G changed: the evaluation images' features are recomputed


def point_key(prep, point, config, whole, quantizer_digest):
    settings = {**fam.point_settings(prep, point), "offline": config, "train_whole_network": whole,
                "quantizer": None if whole else quantizer_digest, "cache_format": CACHE_FORMAT}
    return offline_cache_key(settings), settings


def evaluate_point(prep, seen, start, config, index, point, cache, whole, digest):
    """(probs, result) of one point: from the cache, or trained, scored and cached."""
    key, settings = point_key(prep, point, config, whole, digest)
    path = os.path.join(cache, f"{key}.pt")
    model = prep.model
    if os.path.isfile(path):
        entry = load_checkpoint(path)
        model.f.load_state_dict(entry["f"])
        prep.log(f"offline point {point}: cached ({path})")
        return entry["probs"], dict(entry["result"]), key
    train_point(prep, seen, start, config, index, whole)
    probs, result = prep.run.evaluate(model, point)
    save_checkpoint(path, {"result": result, "probs": probs, "f": model.f.state_dict(), "settings": repr(settings)})
    return probs, result, key


def offline_points(run):
    return [(0, run.base_point)] + [(i + 1, s.end) for i, s in enumerate(run.segments)]


def start_networks(prep, whole):
    """The networks every point starts from (F as the stream starts it; G too for the whole
    network), and, for F on codes, the base-init codes with the run's quantizer fitted."""
    start = {"f": copy.deepcopy(prep.model.f), "g": copy.deepcopy(prep.model.g)}
    if whole:
        prep.model.quantizer = RawLatents(prep.model.quantizer.d)  # no quantization in evaluation
        return start, None, None
    base = fam.base_codes(prep)
    buffer = prep.model.buffer  # nothing is replayed: an empty buffer keeps the per-point states small
    prep.model.buffer = ReplayBuffer(buffer.code_shape, device=buffer.device)
    return start, base, fam.state_digest(prep.model.quantizer.state_dict())


def main(argv=None):
    own, args = fam.parse_baseline_args(argv, add_offline_arguments, "offline", __doc__.split("\n\n")[0])
    prep = fam.prepare(own.dataset, args, argv)
    config, whole = offline_config(own, args), own.train_whole_network
    cache = own.offline_cache_dir or os.path.join(os.path.dirname(os.path.abspath(args.save_dir)), "offline_cache")
    start, base, digest = start_networks(prep, whole)
    seen = SeenItems(prep, whole, base)
    state, keys = fresh_state(prep.run), []
    prep.run = dataclasses.replace(prep.run, kind=KIND, results_extra={
        **prep.run.results_extra, "method": "offline", "offline": dataclasses.asdict(config),
        "train_whole_network": whole, "offline_cache_dir": cache, "cache_keys": keys})
    for index, point in offline_points(prep.run):
        if own.stop_after_points is not None and index >= own.stop_after_points:
            prep.log(f"stopped after {index} points; run again to continue (finished points are cached)")
            return 0
        probs, result, key = evaluate_point(prep, seen, start, config, index, point, cache, whole, digest)
        keys.append(key)
        prep.log(prep.run.describe(result))
        write_outputs(prep.run, prep.model, state, probs, result)
    print_table(prep.run, state["history"])
    prep.log(f"offline upper bound: results in {prep.run.save_dir}")
    return 0


if __name__ == "__main__":
    run_cli(main, prog="offline_experiment.py")
