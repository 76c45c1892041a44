"""Colour overlay of a panoptic prediction (Cityscapes colours, one shade per thing instance)."""

from __future__ import annotations

from typing import Any

import numpy as np
from cityscapesscripts.helpers.labels import labels as _CS_LABELS

from casnet_core.labels import LABEL_DIVISOR


# (256, 3) Cityscapes colour per label id; unknown ids and void (0, "unlabeled") are black.
_COLOR_OF_LABEL = np.zeros((256, 3), dtype=np.uint8)
for _label in _CS_LABELS:
    if 0 <= _label.id < 256:
        _COLOR_OF_LABEL[_label.id] = _label.color


def colorize(prediction_or_panoptic: Any, image: np.ndarray | None = None, *, alpha: float = 0.5) -> np.ndarray:
    """(H, W, 3) uint8 RGB picture of a panoptic map.

    Args:
        prediction_or_panoptic: a ``Prediction`` (anything with a ``panoptic`` attribute) or an (H, W)
            integer map in the Cityscapes panoptic encoding (thing label_id*1000+k, stuff label_id, void 0).
        image: optional (H, W, 3) uint8 RGB image to blend under the colours; void pixels show it unchanged.
        alpha: weight of the colours in the blend.

    Stuff takes its Cityscapes colour; each thing instance a shade of its class colour (deterministic per
    id, so an instance keeps its shade from frame to frame when its id does), outlined in white so that
    touching instances of one class stay apart.
    """
    panoptic = np.asarray(getattr(prediction_or_panoptic, "panoptic", prediction_or_panoptic))
    if panoptic.ndim != 2:
        raise ValueError(f"expected an (H, W) panoptic map, got shape {panoptic.shape}")
    panoptic = panoptic.astype(np.int64)
    ids, inverse = np.unique(panoptic, return_inverse=True)
    inverse = inverse.reshape(panoptic.shape)
    is_thing = ids >= LABEL_DIVISOR
    labels = np.where(is_thing, ids // LABEL_DIVISOR, ids).clip(0, 255)
    colors = _COLOR_OF_LABEL[labels].astype(np.int64)
    # Shade of an instance: its class colour moved by up to +-60 per channel, from a hash of its id.
    jitter = (np.stack([ids * 37, ids * 67, ids * 97], axis=1) % 121) - 60
    colors = np.where(is_thing[:, None], (colors + jitter).clip(0, 255), colors)
    picture = colors[inverse].astype(np.uint8)

    void = panoptic == 0
    if image is not None:
        image = np.asarray(image)
        if image.shape != picture.shape or image.dtype != np.uint8:
            raise ValueError(f"image must be {picture.shape} uint8 RGB, got {image.shape} {image.dtype}")
        blended = image.astype(np.float32) * (1 - alpha) + picture.astype(np.float32) * alpha
        picture = np.where(void[..., None], image, blended.round().astype(np.uint8))

    # Outline thing instances: pixels whose right or lower neighbour belongs to another segment.
    thing_pixels = panoptic >= LABEL_DIVISOR
    edge = np.zeros(panoptic.shape, dtype=bool)
    horizontal = panoptic[:, 1:] != panoptic[:, :-1]
    vertical = panoptic[1:, :] != panoptic[:-1, :]
    edge[:, :-1] |= horizontal & (thing_pixels[:, :-1] | thing_pixels[:, 1:])
    edge[:-1, :] |= vertical & (thing_pixels[:-1, :] | thing_pixels[1:, :])
    picture[edge] = 255
    return picture
