"""Torch networks (imports only torch). Filled by the train issue."""
