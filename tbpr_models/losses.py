"""Training losses as pure functions of tensors.

Dimension letters: B batch, L words, V vocabulary, D embedding dim.
`logit_scale` is the multiplier of cosine similarities (1 / temperature, e.g. 50 for 0.02), a tensor
so that it may be learned.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _same_person(person_ids: Tensor) -> Tensor:
    """(B, B) bool, True where rows and columns show the same person."""
    return person_ids.reshape(-1, 1) == person_ids.reshape(1, -1)


def sdm_loss(
    text_global: Tensor, image_global: Tensor, person_ids: Tensor, logit_scale: Tensor, eps: float = 1e-8
) -> Tensor:
    """Similarity distribution matching (IRRA, Jiang and Ye, CVPR 2023), both directions.

    KL(softmax(scale * cos) || true matching distribution) per row, averaged over rows, summed over the
    text-to-image and image-to-text directions. The true distribution is uniform over the
    same-person entries of a row.
    """
    texts = F.normalize(text_global, dim=-1)
    images = F.normalize(image_global, dim=-1)
    cosine = texts @ images.t()  # (B, B) text x image
    if cosine.dtype == torch.float16:
        cosine = cosine.float()  # fp16 cannot hold log(eps): the target's zeros would give -inf
    labels = _same_person(person_ids).to(cosine.dtype)
    target = labels / labels.sum(dim=1, keepdim=True)  # (B, B), rows sum to 1
    log_target = torch.log(target + eps)
    loss = cosine.new_zeros(())
    for logits in (logit_scale * cosine, logit_scale * cosine.t()):
        log_pred = F.log_softmax(logits, dim=1)
        loss = loss + (log_pred.exp() * (log_pred - log_target)).sum(dim=1).mean()
    return loss


def id_loss(image_logits: Tensor, text_logits: Tensor, person_ids: Tensor) -> Tensor:
    """Identity classification (IRRA's `compute_id`): mean of the image and text cross-entropies."""
    return (F.cross_entropy(image_logits, person_ids) + F.cross_entropy(text_logits, person_ids)) / 2


def itc_loss(text_global: Tensor, image_global: Tensor, logit_scale: Tensor) -> Tensor:
    """Symmetric InfoNCE (CLIP): caption i matches image i only; mean of both directions."""
    texts = F.normalize(text_global, dim=-1)
    images = F.normalize(image_global, dim=-1)
    logits = logit_scale * (texts @ images.t())  # (B, B) text x image
    targets = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets)) / 2


def mlm_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Masked-word prediction: cross-entropy over the positions whose label is not -100.

    logits (B, L, V), labels (B, L). With no labelled position the loss is a zero that keeps the graph.
    """
    flat_logits = logits.reshape(-1, logits.shape[-1])  # (B*L, V)
    flat_labels = labels.reshape(-1)  # (B*L,)
    if not bool((flat_labels != -100).any()):
        return flat_logits.sum() * 0.0
    return F.cross_entropy(flat_logits.float(), flat_labels, ignore_index=-100)


def ranking_loss(scores: Tensor, person_ids: Tensor, margin: float = 0.2) -> Tensor:
    """Bidirectional hinge ranking loss with the hardest negative (VSE++, Faghri et al., BMVC 2018).

    scores (B, B) text x image. Positives are the pairs of the same person, negatives the others. For
    each anchor (a row for text-to-image, a column for image-to-text) and each of its positives p:
    max(0, margin - s_p + max_negative); averaged over the anchor's positives, then over anchors, and
    the two directions summed. An anchor with no negative in the batch contributes 0. With one caption
    per person this is VSE++'s max-violation loss divided by B.
    """
    positive = _same_person(person_ids)  # (B, B)
    loss = scores.new_zeros(())
    for s, pos in ((scores, positive), (scores.t(), positive.t())):
        lowest = torch.finfo(s.dtype).min
        hardest_negative = s.masked_fill(pos, lowest).amax(dim=1, keepdim=True)  # (B, 1)
        has_negative = (~pos).any(dim=1, keepdim=True)  # (B, 1)
        hinge = (margin - s + hardest_negative).clamp(min=0) * (pos & has_negative)  # (B, B)
        loss = loss + (hinge.sum(dim=1) / pos.sum(dim=1)).mean()
    return loss
