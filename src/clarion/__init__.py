"""Clarion: a self-hosted real-time notification server for web applications."""

__version__ = "0.1.0"
