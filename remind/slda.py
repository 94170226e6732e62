"""Deep SLDA (Hayes & Kanan, CVPRW 2020): streaming linear discriminant analysis on pooled features.

The closed-form streaming baseline of the REMIND paper: a frozen network gives one feature vector
per image; SLDA keeps a running mean per class and one shared covariance, and classifies with the
LDA rule. Learning a sample is a rank-one update, so it never forgets by gradient interference.

Update for a sample x of class y (n = samples seen so far, mu_y its class mean, c_y its count):
    delta = x - mu_y
    cov  <- (n * cov + n / (n + 1) * delta delta^T) / (n + 1)      (``covariance_update="paper"``)
    mu_y <- mu_y + delta / (c_y + 1);  c_y <- c_y + 1;  n <- n + 1
The paper's rule weighs delta by n / (n + 1) with the total count n; the exact pooled within-class
covariance would use c_y / (c_y + 1) (``covariance_update="exact"``; both agree for one class). With
``plastic_covariance=False`` the covariance stays as ``fit_base`` left it (the paper's "fixed" SLDA).

Prediction: precision = inv((1 - eps) cov + eps I) with shrinkage eps = 1e-4, W = precision mu^T,
b = -0.5 sum(mu * W^T); scores = x W + b. Classes never seen score -inf (an unseen class has no
mean; scoring it 0 would let it win). W and b are recomputed only after the model changed.

State is kept in float64 by default: over a long stream (1.2M ImageNet samples) float32 running
sums drift. Everything lives on the model's device; inputs are moved there.
"""
import torch

from remind.errors import InputError

COVARIANCE_UPDATES = ("paper", "exact")


class SLDAError(InputError, ValueError):
    """Bad SLDA configuration, input or state dict."""


class StreamingLDA:
    """Streaming LDA over ``num_features``-dimensional vectors and ``num_classes`` classes."""

    def __init__(self, num_features, num_classes, shrinkage=1e-4, plastic_covariance=True,
                 covariance_update="paper", device="cpu", dtype=torch.float64):
        if int(num_features) < 1 or int(num_classes) < 1:
            raise SLDAError(f"need at least one feature and one class, got {num_features} and {num_classes}")
        if not 0 <= float(shrinkage) <= 1:
            raise SLDAError(f"shrinkage must be in [0, 1], got {shrinkage}")
        if covariance_update not in COVARIANCE_UPDATES:
            raise SLDAError(f"covariance_update must be one of {COVARIANCE_UPDATES}, got {covariance_update!r}")
        self.num_features, self.num_classes = int(num_features), int(num_classes)
        self.shrinkage, self.plastic_covariance = float(shrinkage), bool(plastic_covariance)
        self.covariance_update = covariance_update
        self.device, self.dtype = torch.device(device), dtype
        self.means = torch.zeros(self.num_classes, self.num_features, device=self.device, dtype=dtype)
        self.counts = torch.zeros(self.num_classes, device=self.device, dtype=torch.int64)
        self.cov = torch.zeros(self.num_features, self.num_features, device=self.device, dtype=dtype)
        self.num_updates = 0
        self._classifier = None  # cached (W, b)

    # --------------------------------------------------------------------------- inputs
    def _features(self, x, what="x"):
        x = torch.as_tensor(x)
        if x.dim() == 1:
            x = x.unsqueeze(0)
        if x.dim() != 2 or x.shape[1] != self.num_features:
            raise SLDAError(f"{what}: expected feature vectors of size {self.num_features}, got shape "
                            f"{tuple(x.shape)}")
        return x.to(device=self.device, dtype=self.dtype)

    def _labels(self, y, n):
        y = torch.as_tensor(y).reshape(-1).to(torch.int64)
        if y.numel() != n:
            raise SLDAError(f"{n} feature vectors but {y.numel()} labels")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
            raise SLDAError(f"labels must be in 0..{self.num_classes - 1}, got {int(y.min())}..{int(y.max())}")
        return y.to(self.device)

    # ------------------------------------------------------------------------- learning
    @torch.no_grad()
    def fit_base(self, x, y):
        """Batch initialisation: class means, counts and the pooled within-class covariance
        (divided by the number of samples) of the base-init features; replaces any state."""
        x = self._features(x)
        y = self._labels(y, x.shape[0])
        if x.shape[0] == 0:
            raise SLDAError("fit_base needs at least one sample")
        self.counts = torch.bincount(y, minlength=self.num_classes)
        sums = torch.zeros_like(self.means).index_add_(0, y, x)
        seen = self.counts > 0
        self.means = torch.zeros_like(self.means)
        self.means[seen] = sums[seen] / self.counts[seen].unsqueeze(1).to(self.dtype)
        centred = x - self.means[y]
        self.cov = centred.T @ centred / x.shape[0]
        self.num_updates = int(x.shape[0])
        self._classifier = None
        return self

    @torch.no_grad()
    def fit(self, x, y):
        """Learn one sample (``x``: [d] or [1, d]; ``y``: its class)."""
        x = self._features(x)
        label = self._labels(y, x.shape[0])
        if x.shape[0] != 1:
            raise SLDAError(f"fit learns one sample at a time, got {x.shape[0]}; use fit_stream")
        self._update(x[0], int(label[0]))
        return self

    @torch.no_grad()
    def fit_stream(self, x, y):
        """Learn the rows of ``x`` one at a time, in order (same result as calling ``fit`` on each)."""
        x = self._features(x)
        labels = self._labels(y, x.shape[0]).tolist()
        for row, label in zip(x, labels):
            self._update(row, label)
        return self

    def _update(self, x, y):
        delta = x - self.means[y]
        if self.plastic_covariance:
            n = self.num_updates
            weight = n if self.covariance_update == "paper" else int(self.counts[y])
            self.cov.mul_(n).add_(torch.outer(delta, delta), alpha=weight / (weight + 1)).div_(n + 1)
        self.means[y] += delta / (int(self.counts[y]) + 1)
        self.counts[y] += 1
        self.num_updates += 1
        self._classifier = None

    # ------------------------------------------------------------------------ predicting
    @torch.no_grad()
    def classifier(self):
        """(W [d, K], b [K]) of the LDA rule for the current state (cached until the next update)."""
        if self._classifier is None:
            eye = torch.eye(self.num_features, device=self.device, dtype=self.dtype)
            shrunk = (1 - self.shrinkage) * self.cov + self.shrinkage * eye
            weights = torch.linalg.solve(shrunk, self.means.T)  # precision @ mu^T
            bias = -0.5 * (self.means * weights.T).sum(dim=1)
            self._classifier = (weights, bias)
        return self._classifier

    @torch.no_grad()
    def predict(self, x, batch_size=None):
        """Scores [N, K] (model dtype, model device) of feature vectors ``x`` [N, d] (or [d])."""
        x = self._features(x)
        weights, bias = self.classifier()
        step = batch_size or max(1, x.shape[0])
        scores = torch.cat([x[i:i + step] @ weights + bias for i in range(0, x.shape[0], step)]) \
            if x.shape[0] else x.new_zeros(0, self.num_classes)
        unseen = self.counts == 0
        if unseen.any() and not unseen.all():
            scores[:, unseen] = float("-inf")
        return scores

    # ----------------------------------------------------------------------------- state
    def state_dict(self):
        """Everything needed to continue exactly: statistics and the settings that define them."""
        return {"num_features": self.num_features, "num_classes": self.num_classes,
                "shrinkage": self.shrinkage, "plastic_covariance": self.plastic_covariance,
                "covariance_update": self.covariance_update, "num_updates": self.num_updates,
                "means": self.means.detach().cpu().clone(), "counts": self.counts.detach().cpu().clone(),
                "cov": self.cov.detach().cpu().clone()}

    def load_state_dict(self, state):
        """Restore a ``state_dict``; settings and shapes must match this model's."""
        for key in ("num_features", "num_classes", "shrinkage", "plastic_covariance", "covariance_update"):
            if key not in state:
                raise SLDAError(f"not an SLDA state dict: no {key!r}")
            if state[key] != getattr(self, key):
                raise SLDAError(f"SLDA state made with {key}={state[key]!r}, this model has {getattr(self, key)!r}")
        shapes = {"means": (self.num_classes, self.num_features), "counts": (self.num_classes,),
                  "cov": (self.num_features, self.num_features)}
        for key, shape in shapes.items():
            if key not in state or tuple(state[key].shape) != shape:
                raise SLDAError(f"SLDA state: {key!r} missing or not of shape {shape}")
        self.means = state["means"].to(device=self.device, dtype=self.dtype).clone()
        self.counts = state["counts"].to(device=self.device, dtype=torch.int64).clone()
        self.cov = state["cov"].to(device=self.device, dtype=self.dtype).clone()
        self.num_updates = int(state["num_updates"])
        self._classifier = None
        return self
