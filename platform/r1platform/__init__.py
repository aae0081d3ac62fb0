"""r1-platform: serve and GRPO-train R1-style reasoning models on one heterogeneous fleet."""

__version__ = "0.1.0"
