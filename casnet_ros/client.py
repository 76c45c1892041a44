"""A plain rclpy client of casnet_node over real DDS, for the tests and the benchmarks: publishes images,
records the node's outputs, calls its services.

Each client lives in its own rclpy context on the ROS domain it is given, with discovery limited to this
host (``casnet_ros.live_replay.ros_environment``) and the shipped Fast DDS profile (``casnet_ros.transport``).
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

import rclpy
from rclpy.executors import SingleThreadedExecutor

from casnet_ros import transport
from casnet_ros.live_replay import ros_environment

NODE_NAME = "casnet"


def isolated_domain_id() -> int:
    """1..100, from the pid of the test process."""
    return 1 + os.getpid() % 100


class Client:
    """A plain rclpy node in its own context: publishes test images, records the node's outputs."""

    def __init__(self, domain_id: int, node_name: str = "casnet_test_client") -> None:
        os.environ.update(ros_environment(domain_id))
        transport.use_large_image_profile()  # before this process's first participant
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node(node_name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.received: dict[str, list[tuple[float, Any]]] = {}

    def record(self, topic: str, msg_type: Any, qos: Any = 10, key: str | None = None) -> Any:
        """Subscribe and keep (arrival time, message) of everything on ``topic`` under ``key``."""
        key = key or topic
        store = self.received.setdefault(key, [])
        return self.node.create_subscription(msg_type, topic, lambda msg: store.append((time.time(), msg)), qos)

    def messages(self, key: str) -> list[Any]:
        return [msg for _, msg in self.received.get(key, [])]

    def spin_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            self.executor.spin_once(timeout_sec=0.02)
        return predicate()

    def spin_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=min(0.02, max(deadline - time.monotonic(), 0.0)))

    def call(self, client: Any, request: Any, timeout: float = 10.0) -> Any:
        """A service call through the executor; raises TimeoutError."""
        if not client.wait_for_service(timeout_sec=timeout):
            raise TimeoutError(f"service {client.srv_name} not available")
        future = client.call_async(request)
        self.executor.spin_until_future_complete(future, timeout_sec=timeout)
        if not future.done():
            raise TimeoutError(f"service {client.srv_name} did not answer")
        return future.result()

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def stamp_key(header: Any) -> tuple[int, int, str]:
    return (header.stamp.sec, header.stamp.nanosec, header.frame_id)


def diagnostic_values(array_msg: Any, node_name: str = NODE_NAME) -> dict[str, str] | None:
    """The key-value pairs of the casnet node's status in a DiagnosticArray, if present."""
    for status in array_msg.status:
        if f"/{node_name}:" in status.name:
            return {item.key: item.value for item in status.values}
    return None
