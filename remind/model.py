"""REMINDModel: the streaming learner (frozen G, quantizer, replay buffer, plastic F).

The streaming step is the shared ``remind.streaming.StreamingStep``; this class supplies its image
parts (gather and decode PQ codes, latent crops + mixup, per-class lr) and ``fit_sample`` feeds it
one new sample. Everything a step touches (codes, labels, centroids, F) stays on the model's
device, so on CUDA a step runs without a host round trip.
"""
import dataclasses

import numpy as np
import torch

from remind.latent_augment import augment_replay_batch
from remind.schedule import per_class_lr
from remind.streaming import StepParts, StreamingStep, StreamItem, mixup_cross_entropy


@dataclasses.dataclass
class StreamingConfig:
    """Replay and optimisation settings (defaults: the paper's ImageNet run)."""

    num_replay: int = 50  # replayed tensors per step (twice as many are drawn with mixup)
    mixup: bool = True
    mixup_alpha: float = 0.1
    latent_crops: bool = True
    crop_scale: tuple = (2 / 7, 1.0)
    crop_ratio: tuple = (3 / 4, 4 / 3)
    lr_mode: str = "step_lr_per_class"  # or "constant" (start_lr throughout)
    start_lr: float = 0.1
    end_lr: float = 0.001
    lr_step_size: int = 100
    samples_per_class: int = 1300
    momentum: float = 0.9
    weight_decay: float = 1e-5
    # G and F in channels-last memory order (same math, other rounding): on the CPU it pays for
    # 7 x 7 maps and costs for 2 x 2 ones (docs/performance.md).
    channels_last: bool = False

    def __post_init__(self):
        if self.num_replay < 0:
            raise ValueError(f"num_replay must be >= 0, got {self.num_replay}")
        if self.lr_mode not in ("step_lr_per_class", "constant"):
            raise ValueError(f"lr_mode must be 'step_lr_per_class' or 'constant', got {self.lr_mode!r}")
        self.crop_scale, self.crop_ratio = tuple(self.crop_scale), tuple(self.crop_ratio)


class REMINDModel:
    def __init__(self, g, f, quantizer, buffer, num_classes, config=None, device="cpu", seed=0):
        self.device = torch.device(device)
        self.config = config or StreamingConfig()
        self.num_classes = int(num_classes)
        self.memory_format = torch.channels_last if self.config.channels_last else torch.contiguous_format
        self.g = None if g is None else g.to(self.device, memory_format=self.memory_format).eval()
        self.f = f.to(self.device, memory_format=self.memory_format).train()
        self.quantizer = quantizer.to(self.device)
        if buffer.device != self.device:
            raise ValueError(f"the replay buffer lives on {buffer.device}, the model on {self.device}")
        cfg = self.config
        self.optimizer = torch.optim.SGD(self.f.parameters(), lr=cfg.start_lr, momentum=cfg.momentum,
                                         weight_decay=cfg.weight_decay)
        self.class_counts = np.zeros(self.num_classes, dtype=np.int64)  # streamed samples per class
        self._mix_rng = np.random.Generator(np.random.PCG64(seed))
        self._aug_gen = torch.Generator(device=self.device)
        self._aug_gen.manual_seed(int(seed))
        parts = StepParts(network=self.f, optimizer=self.optimizer, gather=self._gather, decode=self._decode,
                          num_draw=cfg.num_replay * (2 if cfg.mixup else 1), augment=self._augment,
                          lr_for=self.lr_for, loss=mixup_cross_entropy)
        # Sample, decode and augment are a few ms next to F's hundreds: one CPU thread for them.
        self.step = StreamingStep(parts, buffer, self.device, small_stage_threads=1)

    # Step count, stage timer (benchmarks) and small-stage threads live on the shared step.
    buffer = property(lambda self: self.step.buffer, lambda self, v: setattr(self.step, "buffer", v))
    steps = property(lambda self: self.step.steps, lambda self, v: setattr(self.step, "steps", v))
    timer = property(lambda self: self.step.timer, lambda self, v: setattr(self.step, "timer", v))
    small_stage_threads = property(lambda self: self.step.small_stage_threads,
                                   lambda self, v: setattr(self.step, "small_stage_threads", v))

    # ------------------------------------------------------------------------ features
    @torch.no_grad()
    def encode_images(self, images):
        """Images -> G's feature maps -> PQ codes [N, H, W, M], on the model's device."""
        if self.g is None:
            raise RuntimeError("this REMINDModel was built without G; pass codes instead of images")
        return self.quantizer.encode_maps(self.g(images.to(self.device, non_blocking=True,
                                                           memory_format=self.memory_format)))

    # ---------------------------------------------------------------------- streaming
    def lr_for(self, label):
        cfg = self.config
        if cfg.lr_mode == "constant":
            return cfg.start_lr
        return per_class_lr(self.class_counts[label], cfg.start_lr, cfg.end_lr, cfg.lr_step_size,
                            cfg.samples_per_class)

    # The parts of the shared streaming step (remind.streaming) that make it image classification.
    def _gather(self, item, slots):
        """New + replayed codes and labels (index_select: one row copy per item, ~15x faster on the
        CPU than advanced indexing)."""
        # A fill on the device, not a copy from a host list (which synchronises on CUDA).
        new_label = torch.full((1,), item.label, dtype=torch.int64, device=self.device)
        codes = torch.cat([item.codes.unsqueeze(0), self.buffer.codes.index_select(0, slots)])
        return codes, torch.cat([new_label, self.buffer.labels.index_select(0, slots)])

    def _decode(self, codes):
        """Channels-last decode viewed as NCHW without a copy (the crops write contiguous NCHW)."""
        return (self.quantizer.decode(codes).permute(0, 3, 1, 2),)

    def _augment(self, inputs, labels):
        """Latent crops on every tensor, then mixup of the replayed ones (never the new one)."""
        cfg, lam = self.config, None
        if cfg.mixup and len(labels) >= 3:
            lam = float(self._mix_rng.beta(cfg.mixup_alpha, cfg.mixup_alpha)) if cfg.mixup_alpha > 0 else 1.0
        x, labels, labels_b = augment_replay_batch(inputs[0], labels, lam, cfg.latent_crops, cfg.crop_scale,
                                                   cfg.crop_ratio, generator=self._aug_gen,
                                                   memory_format=self.memory_format)
        return (x,), labels, labels_b, lam

    def fit_sample(self, codes, label, item_id):
        """One streaming step for a new sample (its PQ codes [H, W, M]); returns the loss tensor.

        The paper's steps: draw replay ids (twice as many with mixup), decode new + replayed codes,
        crop and mix, one SGD step at the class's learning rate, then the new sample becomes
        replayable (evicting from the largest class when the buffer is full)."""
        label = int(label)
        if not 0 <= label < self.num_classes:
            raise ValueError(f"label {label} is outside [0, {self.num_classes})")
        loss = self.step(StreamItem(codes.to(self.device), label, int(item_id)))
        self.class_counts[label] += 1
        return loss

    def fit(self, codes, labels, item_ids, on_step=None):
        """Stream samples in the given order, one step each. ``on_step(i, loss)`` after each step."""
        for i in range(len(labels)):
            loss = self.fit_sample(codes[i], int(labels[i]), int(item_ids[i]))
            if on_step is not None:
                on_step(i, loss)

    # ---------------------------------------------------------------------- prediction
    @torch.no_grad()
    def predict_codes(self, codes, batch_size=256):
        """Softmax probabilities [N, num_classes] (on the CPU) for PQ codes [N, H, W, M]."""
        was_training = self.f.training
        self.f.eval()
        probs = []
        try:
            for s in range(0, len(codes), batch_size):
                x = self.quantizer.decode_maps(codes[s:s + batch_size].to(self.device), self.memory_format)
                probs.append(torch.softmax(self.f(x), dim=1).cpu())
        finally:
            self.f.train(was_training)
        return torch.cat(probs) if probs else torch.empty(0, self.num_classes)

    @torch.no_grad()
    def predict_images(self, images):
        """Test images are quantized too, so train and test share the reconstructed space."""
        return self.predict_codes(self.encode_images(images))

    # --------------------------------------------------------------------------- state
    def state_dict(self):
        return {
            "config": dataclasses.asdict(self.config),
            "num_classes": self.num_classes,
            "f": self.f.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "class_counts": torch.from_numpy(self.class_counts.copy()),
            "steps": self.steps,
            "buffer": self.buffer.state_dict(),
            "quantizer": self.quantizer.state_dict(),
            "mix_rng": self._mix_rng.bit_generator.state,
            "aug_rng": self._aug_gen.get_state(),
        }

    def load_state_dict(self, state):
        from remind.latent_codecs import codec_from_state_dict

        if int(state["num_classes"]) != self.num_classes:
            raise ValueError(f"checkpoint is for {state['num_classes']} classes, the model has {self.num_classes}")
        self.f.load_state_dict(state["f"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.class_counts = state["class_counts"].numpy().astype(np.int64).copy()
        self.steps = int(state["steps"])
        self.buffer.load_state_dict(state["buffer"])
        self.quantizer = codec_from_state_dict(state["quantizer"], device=self.device)  # PQ or another codec
        self._mix_rng.bit_generator.state = state["mix_rng"]
        self._aug_gen.set_state(state["aug_rng"])
