"""flare: abdominal organ and pan-cancer tumor segmentation in CT (FLARE)."""

__version__ = "0.1.0"
