"""`RetrievalModel`: image encoder + text encoder + projections to D + a variant head.

Dimension letters: B batch, Q queries, G gallery, N image regions, L words, D embedding dim.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tbpr_models.attention import masked_mean
from tbpr_models.config import ModelConfig
from tbpr_models.encoders import build_image_encoder, build_text_encoder
from tbpr_models.features import Batch, ImageFeatures, TextFeatures, gather_rows
from tbpr_models.losses import id_loss, sdm_loss
from tbpr_models.registry import get_variant
from tbpr_models.variant import BASE_LOSSES, HeadDims, LossContext

MAX_LOGIT_SCALE = 100.0


class RetrievalModel(nn.Module):
    """Encodes images and captions into `ImageFeatures` / `TextFeatures`, scores them, computes losses."""

    def __init__(self, config: ModelConfig, load_pretrained: bool = True) -> None:
        super().__init__()
        spec = get_variant(config.variant.kind)
        if not isinstance(config.variant, spec.config_cls):
            raise TypeError(f"variant config {config.variant!r} is not a {spec.config_cls.__name__}")
        self.config = config
        self.image_encoder = build_image_encoder(config.image, load_pretrained)
        self.text_encoder = build_text_encoder(config.text, load_pretrained)
        d = config.embed_dim
        self.image_proj = _projection(
            self.image_encoder.out_channels, d, self.image_encoder.pretrained_projection
        )
        self.text_proj = _projection(
            self.text_encoder.out_channels, d, self.text_encoder.pretrained_projection
        )
        self.log_logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / config.init_temperature)))
        self.classifier = nn.Linear(d, config.num_classes) if config.num_classes > 0 else None
        dims = HeadDims(
            embed_dim=d,
            image_grid=self.image_encoder.grid,
            max_length=config.text.max_length,
            vocab_size=config.text.vocab_size,
            label_words=config.label_words,
        )
        # the head last: a seed then draws the same projections and classifier for every variant
        # (`tasks.report.stats` pairs variants by seed)
        self.head = spec.head_cls(config.variant, dims)

    def parameter_counts(self) -> dict[str, int]:
        """Trainable parameters: `trainable_params` of the whole model (head, projections, the encoder
        layers not frozen, temperature, classifier) and `head_params` of the variant head alone."""
        return {
            "trainable_params": sum(p.numel() for p in self.parameters() if p.requires_grad),
            "head_params": sum(p.numel() for p in self.head.parameters() if p.requires_grad),
        }

    def set_activation_checkpointing(self, enabled: bool) -> None:
        """Recompute the trainable encoder stages' activations in backward instead of storing them."""
        self.image_encoder.activation_checkpointing = enabled
        self.text_encoder.activation_checkpointing = enabled

    @property
    def pairwise(self) -> bool:
        """True when `similarity` needs the local features (cross-modal heads)."""
        return self.head.pairwise

    @property
    def rerank_in_workers(self) -> bool:
        """How pruned scoring parallelises re-ranking on a CPU (`VariantHead.rerank_in_workers`)."""
        return self.head.rerank_in_workers

    @property
    def num_regions(self) -> int:
        """N, the number of image region tokens."""
        grid = self.image_encoder.grid
        return grid[0] * grid[1]

    def logit_scale(self) -> Tensor:
        """() the learned multiplier of cosine similarities, 1 / temperature, at most 100."""
        return self.log_logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    def image_tokens(self, pixels: Tensor, start: int = 0, *, pooled: bool = False) -> Tensor:
        """pixels (B, 3, H, W) -> projected region tokens (B, N, D); with `start` > 0, `pixels` is the
        input of image encoder stage `start` (a cached activation). `pooled`: (B, 1, D) the projected
        mean region, which equals the mean of the projected regions (the projection is affine) at
        1/N of its cost."""
        regions = self.image_encoder(pixels, start)  # (B, N, C)
        if pooled:
            regions = regions.mean(dim=1, keepdim=True)  # (B, 1, C)
        return self.image_proj(regions)

    def text_tokens(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        hidden: Tensor | None = None,
        start: int = 0,
        *,
        pooled: bool = False,
    ) -> Tensor:
        """input_ids, attention_mask (B, L) -> projected word tokens (B, L, D); with `hidden` (B, L, C),
        the text encoder continues from the output of its lowest `start` stages (a cached activation).

        Columns after the batch's last real token are cut before the encoder (captions are usually far
        shorter than max_length) and come back as zeros: every head ignores masked positions.
        `pooled`: (B, 1, D) the projected masked mean of the real words (= the masked mean of the
        projected words), as for `image_tokens`.
        """
        length = input_ids.shape[1]
        used = (
            int(attention_mask.bool().any(dim=0).nonzero().max().item()) + 1
            if attention_mask.any()
            else length
        )
        cut = None if hidden is None else hidden[:, :used]
        words = self.text_encoder(input_ids[:, :used], attention_mask[:, :used], cut, start)  # (B, used, C)
        if pooled:
            return self.text_proj(masked_mean(words, attention_mask[:, :used].bool(), dim=1)).unsqueeze(1)
        tokens = self.text_proj(words)  # (B, used, D)
        return F.pad(tokens, (0, 0, 0, length - used))  # (B, L, D)

    def encode_images(self, pixels: Tensor) -> ImageFeatures:
        return self.head.images(self.image_tokens(pixels))

    def encode_texts(self, input_ids: Tensor, attention_mask: Tensor) -> TextFeatures:
        return self.head.texts(self.text_tokens(input_ids, attention_mask), attention_mask.bool())

    def similarity(self, texts: TextFeatures, images: ImageFeatures) -> Tensor:
        """(Q, G) scores of every query caption against every gallery image (the head decides how)."""
        return self.head.similarity(texts, images)

    def similarity_candidates(
        self,
        texts: TextFeatures,
        images: ImageFeatures,
        candidates: Tensor,
        *,
        memory_budget_mb: float = 256.0,
    ) -> Tensor:
        """(Q, k) scores of each query against its gallery candidates (Q, k) long rows of `images`,
        -1 = none (-inf): `similarity(texts, images)` gathered at the candidates, computed batched."""
        return self.head.similarity_candidates(texts, images, candidates, memory_budget_mb=memory_budget_mb)

    def losses(self, batch: Batch) -> dict[str, Tensor]:
        """Unweighted named losses: `sdm`, `id` (when num_classes > 0) and the head's own.

        Under data-parallel training the losses that compare across the batch (`sdm`, the head's) see
        the features of the whole global batch, gathered from every process (each computes them on the
        same global batch; gradients flow back to each process's own rows), and the per-sample ones
        (`id`, `mlm`) this process's share: with gradients averaged over processes, training does not
        depend on the number of processes (tested); except that `mlm` averages over each process's
        masked words, and BatchNorm sees per-process batches unless synchronised (the trainer converts
        it to SyncBatchNorm on CUDA).
        """
        pooled = self.head.mean_pooled  # project the means, not every token (the same features)
        image_tokens = self.image_tokens(batch.pixels, batch.image_stage, pooled=pooled)  # (B, N or 1, D)
        images = self.head.images(image_tokens)
        text_tokens = self.text_tokens(
            batch.input_ids, batch.attention_mask, batch.text_hidden, batch.text_stage, pooled=pooled
        )  # (B, L or 1, D)
        # the one pooled token is real; otherwise the batch's word mask
        mask = (
            text_tokens.new_ones(text_tokens.shape[:2], dtype=torch.bool)
            if pooled
            else batch.attention_mask.bool()
        )
        texts = self.head.texts(text_tokens, mask)
        scale = self.logit_scale()
        everyone_texts, everyone_images = texts.gathered(), images.gathered()  # (world * B, ...)
        person_ids = gather_rows(batch.person_ids)
        out = {"sdm": sdm_loss(everyone_texts.global_, everyone_images.global_, person_ids, scale)}
        if self.classifier is not None:
            out["id"] = id_loss(
                self.classifier(images.global_), self.classifier(texts.global_), batch.person_ids
            )
        ctx = LossContext(
            logit_scale=scale,
            encode_text_tokens=self.text_tokens,
            image_tokens=image_tokens,
            text_tokens=text_tokens,
            vocab_size=self.config.text.vocab_size,
            mask_token_id=self.config.text.mask_token_id,
            person_ids=person_ids,
        )
        head_losses = self.head.head_losses(everyone_texts, everyone_images, batch, ctx)
        clash = set(head_losses) & set(BASE_LOSSES)
        if clash:
            raise ValueError(
                f"head {type(self.head).__name__} returns losses {sorted(clash)} the model already has"
            )
        undeclared = set(head_losses) - set(self.head.loss_names)
        if undeclared:
            raise ValueError(
                f"head {type(self.head).__name__} returns losses {sorted(undeclared)} not in its loss_names"
            )
        return {**out, **head_losses}


def _projection(channels: int, dim: int, pretrained: Tensor | None) -> nn.Linear:
    """A Linear(channels -> dim), starting from an encoder's pretrained projection (CLIP's, bias zero)
    when its shape is (dim, channels)."""
    projection = nn.Linear(channels, dim)
    if pretrained is not None and tuple(pretrained.shape) == (dim, channels):
        with torch.no_grad():
            projection.weight.copy_(pretrained)
            projection.bias.zero_()
    return projection


def build_model(config: ModelConfig, load_pretrained: bool = True) -> RetrievalModel:
    """A `RetrievalModel` for `config`; `load_pretrained=False` skips pretrained weights (checkpoints)."""
    return RetrievalModel(config, load_pretrained=load_pretrained)


def parameter_counts(config: ModelConfig) -> dict[str, int]:
    """`RetrievalModel.parameter_counts` of the model `config` builds, built on the meta device: no
    memory and no pretrained weights, so a trainer can log them before it builds its model."""
    with torch.device("meta"):
        return RetrievalModel(config, load_pretrained=False).parameter_counts()
