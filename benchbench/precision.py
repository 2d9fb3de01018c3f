"""Mixed precision and devices for the trainers and the attacks.

``precision`` (a grid config field) is protocol: bf16 and fp16 change the numbers, so a
non-default precision is in every cell and stage key (``fp32`` adds nothing: the keys of
grids from before it existed stay the same). ``Precision`` is what a training loop uses:
``autocast()`` around forward passes and losses (torch's autocast on the model's device
type), and ``backward_step(loss, optimizer)`` (or ``backward`` then ``step``), which
under fp16 scales the loss with a ``torch.amp.GradScaler`` (fp16 gradients underflow
without it). Under fp32 both are the plain code path (no autocast context,
``loss.backward(); optimizer.step()``), so fp32 numbers are bit-identical to code
without this module.

The device (``--device cpu|cuda|cuda:N``) is a resource, not protocol: it is not in any
key (see docs/architecture.md for why) and ``check_device`` refuses one this machine
does not have with one line.
"""
from __future__ import annotations

import contextlib
import re
from typing import Any, ContextManager, Literal

from benchbench.errors import ConfigError

PrecisionName = Literal["fp32", "bf16", "fp16"]
DEFAULT_PRECISION: PrecisionName = "fp32"
_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}


def check_device(device: str) -> str:
    """``device`` if this machine has it (``cpu``, ``cuda``, ``cuda:N``); else a ConfigError."""
    import torch

    match = re.fullmatch(r"cpu|cuda(?::(\d+))?", device)
    if match is None:
        raise ConfigError(f"--device {device!r} is not a device; give cpu, cuda or cuda:N (e.g. cuda:0)")
    if device.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(match.group(1) or 0)
        if index >= count:
            raise ConfigError(f"--device {device}: this machine has {count} CUDA device(s); "
                              f"pick one of {', '.join(f'cuda:{i}' for i in range(count)) or 'none'} or use cpu")
    return device


class Precision:
    """Autocast and gradient scaling for one training on one device."""

    def __init__(self, name: str = DEFAULT_PRECISION, device: str = "cpu"):
        import torch

        if name not in ("fp32", *_DTYPES):
            raise ConfigError(f"precision {name!r} is unknown; choose fp32, bf16 or fp16")
        self.name, self.device_type = name, torch.device(device).type
        self.scaler = torch.amp.GradScaler(self.device_type) if name == "fp16" else None

    @property
    def reduced(self) -> bool:
        return self.name != DEFAULT_PRECISION

    def autocast(self) -> ContextManager:
        """Forward passes and losses in the reduced dtype (a no-op under fp32)."""
        import torch

        if not self.reduced:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=getattr(torch, _DTYPES[self.name]))

    def backward_step(self, loss: Any, optimizer: Any) -> None:
        """``loss.backward(); optimizer.step()``, through the grad scaler under fp16."""
        self.backward(loss)
        self.step(optimizer)

    def backward(self, loss: Any) -> None:
        """``loss.backward()``, of the scaled loss under fp16. Split from ``step`` so a
        trainer can average gradients across processes in between (scaled gradients
        average as well: the scaler unscales the mean, and an inf on any rank reaches
        every rank's mean, so all ranks skip that step together)."""
        if self.scaler is None:
            loss.backward()
        else:
            self.scaler.scale(loss).backward()

    def step(self, optimizer: Any) -> None:
        """``optimizer.step()``, through the grad scaler under fp16."""
        if self.scaler is None:
            optimizer.step()
            return
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        """The grad scaler's state (scale, growth tracker) for a checkpoint; empty otherwise."""
        return {} if self.scaler is None else self.scaler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
