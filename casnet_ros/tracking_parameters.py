"""The tracking parameters of casnet_node: ``tracking`` (on by default) and the tracker's ``track_*`` settings
(``casnet_core.tracking.Tracker``), all read at configure.

With tracking on, each camera has its own tracker, so an object keeps its panoptic id (``label_id * 1000 + k``
in ~/panoptic, PanopticInstance.id and Detection2D.id) from frame to frame. The trackers start afresh with each
activation (so after deactivate and cleanup) and whenever a camera's stamps go backwards (a bag replayed in a
loop). Tracking off: each frame numbers its instances from 0, as the Predictor does.
"""

from __future__ import annotations

from typing import Any, Callable

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

from casnet_core.tracking import DEFAULT_TRACKING, MASK_SAMPLES, Tracker

TRACKING = "tracking"
# Node parameter -> Tracker keyword.
_TRACKER_SETTINGS = {"track_iou_threshold": "iou_threshold", "track_low_iou_threshold": "low_iou_threshold",
                     "track_high_score": "high_score", "track_max_age": "max_age", "track_box_buffer": "box_buffer",
                     "track_distance_gate": "distance_gate", "track_mask_iou": "mask_iou",
                     "track_appearance_scale": "appearance_scale"}


def _unit_range(description: str) -> ParameterDescriptor:
    return ParameterDescriptor(description=description, floating_point_range=[
        FloatingPointRange(from_value=0.0, to_value=1.0, step=0.0)])


# name -> (default, descriptor), merged into casnet_ros.parameters.PARAMETERS.
TRACKING_PARAMETERS: dict[str, tuple[Any, ParameterDescriptor]] = {
    TRACKING: (True, ParameterDescriptor(description=(
        "Track instances across frames, per camera: an object keeps its panoptic id label_id * 1000 + k while "
        "it is tracked (false: ids numbered per frame from 0). Restarts on activate and when stamps go "
        "backwards. Read at configure."))),
    "track_iou_threshold": (DEFAULT_TRACKING["iou_threshold"], _unit_range(
        "Least box IoU, within a class, between an instance scoring at least track_high_score and the predicted "
        "box of its track (first association stage). Read at configure.")),
    "track_low_iou_threshold": (DEFAULT_TRACKING["low_iou_threshold"], _unit_range(
        "Least box IoU for an instance scoring below track_high_score, matched in a second stage to the tracks "
        "left over (ByteTrack). Read at configure.")),
    "track_high_score": (DEFAULT_TRACKING["high_score"], _unit_range(
        "Instances scoring at least this are matched first (track_iou_threshold), the others second. "
        "Read at configure.")),
    "track_max_age": (DEFAULT_TRACKING["max_age"], ParameterDescriptor(
        description="Frames a track is kept without being seen, so an object missed briefly keeps its id. "
                    "Read at configure.",
        integer_range=[IntegerRange(from_value=0, to_value=1000, step=1)])),
    "track_box_buffer": (DEFAULT_TRACKING["box_buffer"], ParameterDescriptor(
        description="Boxes are widened by this fraction of their width and height on each side before their IoU "
                    "(C-BIoU), so small or fast objects whose boxes barely overlap stay matched. Read at configure.",
        floating_point_range=[FloatingPointRange(from_value=0.0, to_value=2.0, step=0.0)])),
    "track_distance_gate": (DEFAULT_TRACKING["distance_gate"], ParameterDescriptor(
        description="Third stage: instances still unmatched are matched to the nearest track of their class whose "
                    "predicted box centre is less than this many box sizes away (0: no third stage). Read at "
                    "configure.",
        floating_point_range=[FloatingPointRange(from_value=0.0, to_value=10.0, step=0.0)])),
    "track_mask_iou": (DEFAULT_TRACKING["mask_iou"], ParameterDescriptor(
        description="The IoU of an instance and a track is the larger of their box IoU and the IoU of the "
                    "instance's mask with the track's mask in the previous frame (masks sampled on a grid of about "
                    f"{MASK_SAMPLES} pixels): neighbours with overlapping boxes stay apart (false: boxes alone). "
                    "Read at configure.")),
    "track_appearance_scale": (DEFAULT_TRACKING["appearance_scale"], ParameterDescriptor(
        description="Each pair an association stage allows is weighted by exp(-d / this) in the assignment, d the "
                    "difference of the instance's and the track's mean colours (sum over R, G, B, 0..255 each): "
                    "colour chooses between neighbours of one class but never allows or forbids a pair (0: colour "
                    "unused). Read at configure.",
        floating_point_range=[FloatingPointRange(from_value=0.0, to_value=765.0, step=0.0)])),
}


def tracker_factory(param: Callable[[str], Any]) -> Callable[[], Tracker] | None:
    """A function that makes a camera's tracker from the node's parameter values (``param(name)``), or None
    with tracking off."""
    if not param(TRACKING):
        return None
    settings = {keyword: param(name) for name, keyword in _TRACKER_SETTINGS.items()}
    return lambda: Tracker(**settings)
