"""The plastic VQA networks: S-MAC (CLEVR) and UpDown (TDIUC)."""
from vqa_experiments.models.common import WordEmbedding, count_parameters
from vqa_experiments.models.s_mac import SMAC
from vqa_experiments.models.updown import UpDown

MODELS = {"s_mac": SMAC, "updown": UpDown}


def build_model(name, ntoken, num_classes, cnn_feat_size, **model_args):
    """Build a model by name ('s_mac' or 'updown') with keyword sizes (see each class)."""
    try:
        cls = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}") from None
    try:
        return cls(ntoken=ntoken, num_classes=num_classes, cnn_feat_size=cnn_feat_size, **model_args)
    except TypeError as err:
        raise ValueError(f"bad model_args for {name}: {err}") from None


__all__ = ["SMAC", "UpDown", "WordEmbedding", "MODELS", "build_model", "count_parameters"]
