"""MID's multi-consistency distillation: a student's outputs on adversarial images held to
a frozen teacher's outputs on the clean images.

For an adversarial version x~ of a clean image x (teacher encoder E_t, its decoder D_t
and classifier C_t, student encoder E_s; p = softmax over the embedding):

- adversarial consistency (feature level): KL(p(E_t(x)) || p(E_s(x~)));
- cyclic consistency (pixel level): the teacher's decoder regenerates an image from the
  student's feature and the teacher must see the clean image in it:
  KL(p(E_t(x)) || p(E_t(D_t(E_s(x~)))));
- label consistency (prediction level): the cross-entropy of C_t on E_s(x~), the
  task's (label-smoothed) one.

The KL is averaged over every entry (batch x embedding), the default reduction of
``nn.KLDivLoss`` in the released script, whose term weights (1.5 and 0.8 against a
cross-entropy of weight 1) assume it. That script passes the teacher's
*log*-probabilities as the cyclic term's target; we follow the paper's formula, the
teacher's probabilities, as in the feature term.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def feature_kl(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """KL(softmax(teacher) || softmax(student)) per row, averaged over rows and embedding
    entries; the teacher side is a fixed target (detached)."""
    log_q = F.log_softmax(student, dim=1)
    return F.kl_div(log_q, F.softmax(teacher.detach(), dim=1), reduction="sum") / log_q.numel()


def cyclic_kl(student: torch.Tensor, teacher_clean: torch.Tensor, decoder: torch.nn.Module,
              teacher: torch.nn.Module) -> torch.Tensor:
    """``feature_kl`` between the teacher's embedding of the image its decoder regenerates
    from ``student`` and its embedding of the clean image. ``decoder`` and ``teacher`` are
    frozen and in eval mode: the gradient reaches the student only."""
    return feature_kl(teacher(decoder(student)), teacher_clean)
