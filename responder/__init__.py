"""Slashing-safe, alert-driven failover controller for validator nodes."""

__version__ = "0.1.0"
