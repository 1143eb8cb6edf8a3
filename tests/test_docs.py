"""The examples in the engine's docstrings run and give what they show."""

import doctest

import pytest

import src_core
from src_core import api, config, fidelity, masks, network, operators, tasks
from src_core.engine import run as engine_run


@pytest.mark.parametrize("module", [src_core, api, config, engine_run, fidelity, masks, network, operators, tasks],
                         ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{module.__name__} has no examples"
    assert result.failed == 0



def test_every_public_name_has_a_docstring():
    """The API reference (docs/api.md, built by mkdocs in .ci/run) is made from the docstrings:
    every public function and class of src_core, and napari_dip's, says what it is for."""
    import inspect

    import src_core

    missing = []
    for module in (src_core, __import__("napari_dip")):
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and not (obj.__doc__ or "").strip():
                missing.append(f"{module.__name__}.{name}")
    assert missing == []
