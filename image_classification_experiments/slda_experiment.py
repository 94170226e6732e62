"""Deep SLDA (Hayes & Kanan, CVPRW 2020) on an image-classification stream: the REMIND paper's
closed-form streaming baseline, on the same stream, points and test images as a REMIND run.

  python slda_experiment.py --dataset imagenet <imagenet_experiment.py's flags>
  python slda_experiment.py --dataset core50 <core50_experiment.py's flags>

Features: G (the same frozen network as the REMIND run: ``--extract_features_from``) and the
global average of its feature maps, one vector of ``channels`` values per image (no quantizer).
``remind.slda.StreamingLDA`` (float64, shrinkage ``--shrinkage`` 1e-4, plastic covariance unless
``--fixed_covariance``, the paper's covariance update) is fitted in one batch on the base-init
items' pooled features (``fit_base``: the ImageNet base-init cache's features, or CORe50's first
share of the stream), then learns the stream one image at a time. Predictions: softmax of the LDA
scores (classes never seen score -inf, so 0).

The stream, the evaluations, the outputs (results.json, results.csv, accuracy_plot.png, the
per-point files; ``remind_classifier_F_<key>.pth`` holds the LDA statistics) and ``--resume`` are
the shared harness's (``stream_loop.run_stream``): ``SLDAModel`` stands where a ``REMINDModel``
stands. Run checkpoints are of kind ``slda_ic_stream`` with the family's fingerprint plus the
SLDA settings.
"""
import dataclasses

import torch

from image_classification_experiments import baseline_families as fam
from image_classification_experiments.stream_loop import run_stream
from image_classification_experiments.stream_state import fresh_state, resume_latest
from remind import feature_store as fs
from remind.runtime import run_cli
from remind.slda import COVARIANCE_UPDATES, StreamingLDA

KIND = "slda_ic_stream"


def add_slda_arguments(p):
    p.add_argument("--shrinkage", type=float, default=1e-4, help="LDA covariance shrinkage")
    p.add_argument("--fixed_covariance", action="store_true",
                   help="keep the base-init covariance (default: plastic, updated by every sample)")
    p.add_argument("--covariance_update", choices=COVARIANCE_UPDATES, default="paper")


class _Statistics:
    """Stands for F in the per-point files: the LDA statistics (no parameters)."""

    def __init__(self, lda):
        self.lda = lda

    def state_dict(self):
        return self.lda.state_dict()

    def named_parameters(self):
        return iter(())


class _NoOptimizer:
    def state_dict(self):
        return {"state": {}, "param_groups": []}


class _NoBuffer:
    """SLDA replays nothing; ``nbytes``: its statistics (means, counts, covariance)."""

    code_shape, code_dtype = None, torch.uint8

    def __init__(self, lda):
        self.lda = lda

    def __len__(self):
        return 0

    @property
    def nbytes(self):
        return sum(t.numel() * t.element_size() for t in (self.lda.means, self.lda.counts, self.lda.cov))


class SLDAModel:
    """Deep SLDA with the streaming learner's interface the harness uses (encode_images,
    fit_sample, predict_codes, steps, state_dict/load_state_dict, f, optimizer, buffer)."""

    def __init__(self, g, num_features, num_classes, settings, device):
        self.device = torch.device(device)
        self.g = g.to(self.device).eval()
        self.lda = StreamingLDA(num_features, num_classes, device=self.device, **settings)
        self.steps = 0
        self.f, self.optimizer, self.buffer = _Statistics(self.lda), _NoOptimizer(), _NoBuffer(self.lda)
        self._zero = torch.zeros((), device=self.device)

    @torch.no_grad()
    def encode_images(self, images):
        """G's maps, globally average-pooled: [N, C] float32."""
        return self.g(images.to(self.device, non_blocking=True)).mean(dim=(2, 3))

    def fit_sample(self, features, label, item_id):
        self.lda.fit(features, int(label))
        self.steps += 1
        return self._zero

    @torch.no_grad()
    def predict_codes(self, features, batch_size=256):
        scores = self.lda.predict(features.to(self.device), batch_size=batch_size)
        return torch.softmax(scores, dim=1).float().cpu()

    def state_dict(self):
        return {"lda": self.lda.state_dict(), "steps": self.steps}

    def load_state_dict(self, state):
        self.lda.load_state_dict(state["lda"])
        self.steps = int(state["steps"])


def pooled_base_features(path, chunk=256):
    """(pooled features [N, C], labels [N]) of a base-init feature store."""
    with fs.open_feature_store(path, columns=("labels",)) as store:
        n = store.shape[0]
        x = torch.cat([torch.from_numpy(store.maps(a, min(a + chunk, n))).mean(dim=(1, 2))
                       for a in range(0, n, chunk)])
        return x, torch.from_numpy(store.column("labels")).long()


def slda_settings(own):
    return {"shrinkage": own.shrinkage, "plastic_covariance": not own.fixed_covariance,
            "covariance_update": own.covariance_update}


def slda_run(prep, settings):
    """The family's StreamRun with SLDA's checkpoint kind, fingerprint and results fields."""
    run = prep.run
    return dataclasses.replace(run, kind=KIND, run_fingerprint={**run.run_fingerprint, **settings},
                               results_extra={**run.results_extra, "method": "deep_slda", "slda": settings})


def main(argv=None):
    own, args = fam.parse_baseline_args(argv, add_slda_arguments, "slda", __doc__.split("\n\n")[0])
    prep = fam.prepare(own.dataset, args, argv)
    settings = slda_settings(own)
    run = slda_run(prep, settings)
    g = prep.model.g
    channels = int(prep.model.quantizer.d)
    model = SLDAModel(g, channels, args.num_classes, settings, prep.device)
    state = resume_latest(run, model)
    if state is None:
        x, y = pooled_base_features(fam.base_features_file(prep))
        model.lda.fit_base(x, y)
        run.log(f"base init: SLDA fitted on {len(y)} pooled {channels}-d features, shrinkage {own.shrinkage}, "
                f"{'plastic' if settings['plastic_covariance'] else 'fixed'} covariance")
    return run_stream(run, model, state or fresh_state(run), state is None)


if __name__ == "__main__":
    run_cli(main, prog="slda_experiment.py")
