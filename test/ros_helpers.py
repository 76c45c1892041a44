"""Helpers of the ROS 2 node tests: the node as its own process (casnet_ros.live_replay.NodeProcess) and a
client node over real DDS (casnet_ros.client), shared with the benchmarks.

Every test run gets its own ROS_DOMAIN_ID (derived from the pid) and discovery limited to this host,
so parallel runs and other ROS systems on the network do not see each other. Every participant uses
the shipped Fast DDS profile (config/fastdds_shm.xml; conftest.py sets it for the whole session, the
node process applies it itself), as on a vehicle.
"""

from __future__ import annotations

from pathlib import Path

# Re-exported for the tests.
from casnet_ros.client import NODE_NAME, Client, diagnostic_values, isolated_domain_id, stamp_key  # noqa: F401
from casnet_ros.live_replay import NodeProcess, ros_environment  # noqa: F401

REPO_ROOT = Path(__file__).resolve().parents[1]
