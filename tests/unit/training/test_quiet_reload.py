"""The layerwise-reload warnings a sync drops, and the ones it keeps."""

from __future__ import annotations

import inspect
import logging
from types import SimpleNamespace

import pytest
from r1platform.training import cpu_weight_transfer as cwt


class Collect(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture
def layer_log():
    log, h = logging.getLogger(cwt.LAYERWISE_LOGGER), Collect()
    log.addHandler(h)
    yield h
    log.removeHandler(h)


def _finalize_warning_for(*layers: str):
    def finalize(model, model_config):
        for layer in layers:
            logging.getLogger(cwt.LAYERWISE_LOGGER).warning(cwt.UNLOADED_WARNING, layer)

    return finalize


def _config(tied: bool):
    return SimpleNamespace(hf_config=SimpleNamespace(tie_word_embeddings=tied))


def test_tied_model_drops_rotary_and_lm_head_but_keeps_others(layer_log):
    layers = ("RotaryEmbedding", "Llama3RotaryEmbedding", "ParallelLMHead", "QKVParallelLinear")
    dropped = cwt.finalize_quietly(_finalize_warning_for(*layers), None, _config(tied=True))
    assert dropped == 3
    assert layer_log.lines == ["QKVParallelLinear: Failed to load weights"]


def test_untied_lm_head_that_loaded_nothing_is_still_reported(layer_log):
    dropped = cwt.finalize_quietly(_finalize_warning_for("ParallelLMHead"), None, _config(False))
    assert dropped == 0
    assert layer_log.lines == ["ParallelLMHead: Failed to load weights"]


def test_filter_is_removed_after_the_sync_even_on_error(layer_log):
    def boom(model, model_config):
        raise RuntimeError("reload failed")

    with pytest.raises(RuntimeError):
        cwt.finalize_quietly(boom, None, _config(True))
    logging.getLogger(cwt.LAYERWISE_LOGGER).warning(cwt.UNLOADED_WARNING, "RotaryEmbedding")
    assert layer_log.lines == ["RotaryEmbedding: Failed to load weights"]


def test_the_message_matches_the_pinned_vllm():
    # If vLLM rewords it, the filter would silently stop matching: fail here instead.
    from vllm.model_executor.model_loader.reload import layerwise

    assert f'"{cwt.UNLOADED_WARNING}"' in inspect.getsource(layerwise)
    assert layerwise.logger.name == cwt.LAYERWISE_LOGGER
