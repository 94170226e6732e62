import math

import numpy as np
import pytest
import torch

from remind.schedule import per_class_gamma, per_class_lr


def test_closed_form_values():
    gamma = per_class_gamma()
    assert gamma == pytest.approx(0.70170382867, rel=1e-9)
    assert per_class_lr(0) == 0.1
    assert per_class_lr(99) == 0.1
    assert per_class_lr(100) == pytest.approx(0.1 * gamma)
    assert per_class_lr(1300) == pytest.approx(0.001)
    assert per_class_lr(250, lr_step_size=50, samples_per_class=500) == pytest.approx(
        0.1 * per_class_gamma(lr_step_size=50, samples_per_class=500) ** 5)
    with pytest.raises(ValueError):
        per_class_gamma(start_lr=0)


def test_model_resets_lr_on_each_new_class_and_decays_within():
    from remind.model import REMINDModel, StreamingConfig
    from remind.quantizer import ProductQuantizer
    from remind.replay_buffer import ReplayBuffer

    torch.manual_seed(0)
    pq = ProductQuantizer(8, 2, 2).fit(np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32))
    f = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(8, 3))
    cfg = StreamingConfig(num_replay=2, latent_crops=False, lr_step_size=2, samples_per_class=8)
    model = REMINDModel(None, f, pq, ReplayBuffer((1, 1, 2)), 3, cfg)
    seen = []
    for i, y in enumerate([0] * 5 + [1] * 3 + [0] * 2 + [2]):
        model.fit_sample(torch.zeros(1, 1, 2, dtype=torch.uint8), y, i)
        seen.append(model.optimizer.param_groups[0]["lr"])
    g = per_class_gamma(lr_step_size=2, samples_per_class=8)
    expected = [0.1, 0.1, 0.1 * g, 0.1 * g, 0.1 * g ** 2,  # class 0: samples 0..4
                0.1, 0.1, 0.1 * g,  # class 1 starts again at 0.1
                0.1 * g ** 2, 0.1 * g ** 3,  # class 0 continues from its own count (5, 6)
                0.1]  # class 2
    assert np.allclose(seen, expected)
    assert not any(isinstance(v, torch.optim.lr_scheduler.LRScheduler) for v in vars(model).values())
    assert math.isclose(model.lr_for(0), 0.1 * g ** 3)
