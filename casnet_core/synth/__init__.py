"""Synthetic street scenes written in the on-disk format of Cityscapes.

Each scene is a straight street seen by a forward-looking pinhole camera at driver height: road with
lane markings (and sometimes a crossing street with a zebra crossing and traffic lights), sidewalks,
terrain, building facades with windows, parks behind walls, fences and hedges, trees, street lamps,
traffic signs, a far skyline and the sky. Things stand on the ground plane and are projected by the
same camera, so scale follows depth (far = small and near the horizon, near = large and low):
rows of parked cars, traffic in the lanes, cross traffic, groups of pedestrians, cyclists and
motorcyclists (rider and bike are separate instances of different classes), parked bicycles.

Everything is drawn far to near (painter's algorithm) into the image and, at the same time, into the
label, instance and segment maps, so the maps hold exactly the visible pixels. Colours come from
overlapping palettes per instance and are then shaded (per-face light, per-segment gradients, cast
shadows, low-frequency texture, blur, brightness/contrast/gamma, colour cast, Gaussian noise), so colour
alone does not give the class.

Label ids come from ``casnet_core.labels``; instance ids follow Cityscapes (``label_id * LABEL_DIVISOR + k``
for thing instances, ``label_id`` elsewhere).

One concept per module: ``camera`` (pinhole camera, box faces, billboards), ``painter`` (image and maps
drawn together), ``colors`` (palettes), ``classes`` (label ids), ``scene`` (scene state, street layout,
ground, rendering), ``roadside`` (skyline, buildings, parks, trees), ``furniture`` (lamps, signs, traffic
lights), ``vehicles``, ``people`` (pedestrians, bikes and riders), ``traffic`` (where things go),
``street`` (``generate_scene``), ``dataset`` (the Cityscapes layout on disk), ``drive`` (consecutive frames
of one street as the camera drives down it, ``generate_drive``, and their rosbag2), ``command``
(``casnet synth``).
"""

from casnet_core.synth.command import register
from casnet_core.synth.dataset import CITIES, generate_dataset, sample_name
from casnet_core.synth.drive import DriveFrame, generate_drive, write_drive_bag
from casnet_core.synth.street import DEFAULT_CLASSES, MIN_INSTANCE_AREA, generate_scene

__all__ = ["generate_scene", "generate_dataset", "generate_drive", "write_drive_bag", "DriveFrame", "register",
           "sample_name", "CITIES", "DEFAULT_CLASSES", "MIN_INSTANCE_AREA"]
