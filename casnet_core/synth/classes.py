"""Cityscapes label ids of the classes the generator draws (from ``casnet_core.labels``)."""

from __future__ import annotations

from casnet_core.labels import THING_LABEL_IDS, label_id

EGO_VEHICLE = label_id("ego vehicle")
ROAD = label_id("road")
SIDEWALK = label_id("sidewalk")
BUILDING = label_id("building")
WALL = label_id("wall")
FENCE = label_id("fence")
POLE = label_id("pole")
TRAFFIC_LIGHT = label_id("traffic light")
TRAFFIC_SIGN = label_id("traffic sign")
VEGETATION = label_id("vegetation")
TERRAIN = label_id("terrain")
SKY = label_id("sky")
PERSON = label_id("person")
RIDER = label_id("rider")
CAR = label_id("car")
TRUCK = label_id("truck")
BUS = label_id("bus")
TRAIN = label_id("train")
MOTORCYCLE = label_id("motorcycle")
BICYCLE = label_id("bicycle")
THING_IDS = frozenset(THING_LABEL_IDS)
