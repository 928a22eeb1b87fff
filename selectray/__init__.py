"""selectray: pick the most valuable instruction-tuning rows out of large pools, on Ray."""

__version__ = "0.1.0"
