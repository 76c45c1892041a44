"""Class spaces of CASNet, derived from the official Cityscapes label table.

The table itself comes from ``cityscapesscripts.helpers.labels``; nothing here retypes it.

Two class spaces exist, one per mode of the semantic head (paper, section III.A):

* ``panoptic``: the 19 Cityscapes train ids, in train-id order (channel i == train id i).
* ``instance``: channel 0 is "background" (every stuff class), channels 1..8 are the 8 thing
  classes in train-id order.

The box-probability head always has one channel per thing class (8, train-id order), whatever
the mode, so ``thing_channel`` maps a semantic channel to its box-probability channel.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from cityscapesscripts.helpers.labels import labels as _CS_LABELS
from cityscapesscripts.helpers.labels import name2label as _CS_NAME2LABEL

IGNORE_INDEX = 255
# Cityscapes encoding of instanceIds and panoptic maps: label_id * LABEL_DIVISOR + k for a thing
# instance, plain label_id for stuff (and crowd regions), 0 for void.
LABEL_DIVISOR = 1000
MODES = ("panoptic", "instance")

_EVAL_LABELS = sorted((lab for lab in _CS_LABELS if 0 <= lab.trainId < 255), key=lambda lab: lab.trainId)
_THING_LABELS = [lab for lab in _EVAL_LABELS if lab.hasInstances]


@dataclass(frozen=True)
class ClassSpace:
    """What each semantic channel means, for one mode.

    Attributes:
        mode: "panoptic" or "instance".
        names: name per semantic channel.
        label_ids: Cityscapes label id per semantic channel (0, "unlabeled", for background).
        colors: RGB colour per semantic channel.
        is_thing: per semantic channel, whether it is a thing class.
        thing_channel: per semantic channel, its box-probability channel, or -1 for stuff.
    """

    mode: str
    names: tuple[str, ...]
    label_ids: tuple[int, ...]
    colors: tuple[tuple[int, int, int], ...]
    is_thing: tuple[bool, ...]
    thing_channel: tuple[int, ...]

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def thing_classes(self) -> tuple[int, ...]:
        """Semantic channel of each box-probability channel, in box-probability order."""
        return tuple(c for c in range(self.num_classes) if self.is_thing[c])

    def label_id_lut(self) -> np.ndarray:
        """(256,) uint8: Cityscapes label id -> semantic channel (IGNORE_INDEX where void)."""
        return _label_id_lut(self.mode).copy()

    def to_label_ids(self, channels: np.ndarray) -> np.ndarray:
        """Semantic channels (any int array, IGNORE_INDEX for void) -> Cityscapes label ids (uint8)."""
        lut = np.zeros(256, dtype=np.uint8)
        lut[: self.num_classes] = self.label_ids
        return lut[np.asarray(channels).astype(np.int64).clip(0, 255)]


def label_id(name: str) -> int:
    """Cityscapes label id of a class of the official table, by name ("road", "car", "ego vehicle", ...)."""
    return _CS_NAME2LABEL[name].id


# (256, 3) uint8: the official RGB colour of each Cityscapes label id (black for ids the table lacks).
LABEL_COLORS = np.zeros((256, 3), dtype=np.uint8)
for _label in _CS_LABELS:
    if 0 <= _label.id < 256:
        LABEL_COLORS[_label.id] = _label.color
LABEL_COLORS.flags.writeable = False

NUM_THING_CLASSES = len(_THING_LABELS)
THING_NAMES = tuple(lab.name for lab in _THING_LABELS)
THING_LABEL_IDS = tuple(lab.id for lab in _THING_LABELS)


@lru_cache(maxsize=None)
def class_space(mode: str) -> ClassSpace:
    if mode == "panoptic":
        labels = _EVAL_LABELS
        names = tuple(lab.name for lab in labels)
        label_ids = tuple(lab.id for lab in labels)
        colors = tuple(tuple(lab.color) for lab in labels)
        is_thing = tuple(bool(lab.hasInstances) for lab in labels)
    elif mode == "instance":
        names = ("background",) + THING_NAMES
        label_ids = (0,) + THING_LABEL_IDS
        colors = ((0, 0, 0),) + tuple(tuple(lab.color) for lab in _THING_LABELS)
        is_thing = (False,) + (True,) * NUM_THING_CLASSES
    else:
        raise ValueError(f"unknown mode {mode!r}, expected one of {MODES}")
    thing_channel, k = [], 0
    for thing in is_thing:
        thing_channel.append(k if thing else -1)
        k += int(thing)
    return ClassSpace(mode, names, label_ids, colors, is_thing, tuple(thing_channel))


@lru_cache(maxsize=None)
def _label_id_lut(mode: str) -> np.ndarray:
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    if mode == "panoptic":
        for lab in _EVAL_LABELS:
            lut[lab.id] = lab.trainId
    else:
        # Instance mode: every evaluated stuff class is background (0); void stays ignored.
        for lab in _EVAL_LABELS:
            lut[lab.id] = 0
        for k, lab in enumerate(_THING_LABELS):
            lut[lab.id] = k + 1
    lut.flags.writeable = False
    return lut
