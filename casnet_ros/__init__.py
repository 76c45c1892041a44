"""ROS 2 perception node of CASNet (``casnet_node``): a thin adapter around casnet_core's Predictor.

Only ``casnet_ros.node`` imports rclpy; importing this package imports nothing of ROS.
"""
