"""The source's small CNN (the Keras MNIST example: conv32-conv64-maxpool-dropout-dense128-dropout-
softmax), in PyTorch, with its training loop and evaluation.

PyTorch rather than Keras: one CPU wheel (`torch==2.13.0` from PyTorch's CPU index) without
TensorFlow's ~600 MB and its GPU/oneDNN start-up, deterministic with `torch.manual_seed` and one
thread, and a plain `state_dict` to store in the registry. Adam instead of the source's Adadelta:
it reaches the same accuracy in a few epochs, which is what a CPU-only CI can afford.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

CLASSES = 10


class DigitCNN(nn.Module):
    """(N, 1, 28, 28) in [0, 1] → (N, 10) logits; softmax is applied by `probabilities`."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(1, 32, kernel_size=3), nn.ReLU(),
            nn.Conv2d(32, 64, kernel_size=3), nn.ReLU(),
            nn.MaxPool2d(2), nn.Dropout(0.25), nn.Flatten(),
            nn.Linear(64 * 12 * 12, 128), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(128, CLASSES),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(images)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 2e-3  # peak; cosine-annealed to 0 over the epochs
    max_shift: int = 2  # pixels; each batch is shifted at random (augmentation: 4,000 images are few)
    seed: int = 0
    # One thread: the training Job requests one CPU, and on a shared 2-core machine a second
    # intra-op thread that has to wait for a busy core made epochs 5x slower, not 2x faster.
    threads: int = 1


@dataclass
class History:
    """Per epoch: mean training loss and accuracy, validation accuracy, wall time."""

    loss: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)


def _tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).reshape(-1, 1, 28, 28)


def probabilities(net: DigitCNN, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """(N, 28, 28) images → (N, 10) class probabilities (eval mode: no dropout)."""
    net.eval()
    with torch.inference_mode():
        parts = [torch.softmax(net(_tensor(images[i:i + batch_size])), dim=1) for i in range(0, len(images), batch_size)]
    return torch.cat(parts).numpy() if parts else np.empty((0, CLASSES), dtype=np.float32)


def accuracy(net: DigitCNN, images: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(probabilities(net, images).argmax(axis=1) == labels)) if len(labels) else float("nan")


def _shifted(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """The batch moved by up to `max_shift` pixels along each axis (borders wrap onto zeros)."""
    if max_shift == 0:
        return images
    dy, dx = torch.randint(-max_shift, max_shift + 1, (2,), generator=generator).tolist()
    return torch.roll(images, shifts=(dy, dx), dims=(2, 3))


def train(images: np.ndarray, labels: np.ndarray, config: TrainConfig = TrainConfig(),
          val: tuple[np.ndarray, np.ndarray] | None = None, on_epoch=None) -> tuple[DigitCNN, History]:  # noqa: ANN001
    """Fit a fresh network; `on_epoch(epoch, history)` lets the caller log as it goes."""
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    net, history = DigitCNN(), History()
    optimiser = torch.optim.Adam(net.parameters(), lr=config.learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=config.epochs)
    X, y = _tensor(images), torch.from_numpy(labels.astype(np.int64))
    for epoch in range(config.epochs):
        start, net = time.perf_counter(), net.train()
        order = torch.randperm(len(y), generator=generator)
        total_loss, correct = 0.0, 0
        for i in range(0, len(y), config.batch_size):
            batch = order[i:i + config.batch_size]
            logits = net(_shifted(X[batch], config.max_shift, generator))
            loss = nn.functional.cross_entropy(logits, y[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total_loss += loss.item() * len(batch)
            correct += int((logits.argmax(dim=1) == y[batch]).sum())
        schedule.step()
        history.loss.append(total_loss / len(y))
        history.accuracy.append(correct / len(y))
        history.val_accuracy.append(accuracy(net, *val) if val is not None else float("nan"))
        history.seconds.append(time.perf_counter() - start)
        if on_epoch is not None:
            on_epoch(epoch, history)
    return net, history
