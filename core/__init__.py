"""The bottom layer: argument parsing, files, plug-in discovery and devices.

Nothing here imports data/, models/, methods/ or utils/, so every layer above may use it.
"""
