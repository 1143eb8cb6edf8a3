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
