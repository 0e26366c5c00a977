"""flare: abdominal organ and pan-cancer tumor segmentation in CT (FLARE)."""

__version__ = "0.1.0"

#: The Python API (flarecli.api), loaded on first use so that ``flare --help`` stays fast.
_API = ("Segmenter", "segment", "evaluate", "stats")


def __getattr__(name: str):
    if name in _API:
        from flarecli import api

        return getattr(api, name)
    raise AttributeError(f"module 'flarecli' has no attribute '{name}'")
