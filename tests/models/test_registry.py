"""The torch-free network registry matches the classes it names."""

import inspect

from flarecli.models.build import MODELS
from flarecli.models.registry import NETWORKS, arguments


def test_registry_arguments_are_each_class_signature():
    assert set(MODELS) == set(NETWORKS)
    for name, cls in MODELS.items():
        params = inspect.signature(cls).parameters
        assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        assert arguments(name) == tuple(params), name
