"""Engines that turn prompt token ids into text (``codecomplete.types.Engine``): llama.cpp in this process
(``llama``), or a server that already runs a model (``remote``)."""

from __future__ import annotations

from codecomplete.config import Settings
from codecomplete.types import Engine


def load_engine(settings: Settings) -> Engine:
    """The configured engine: a model loaded in this process (catalog name, path, or the embedded default;
    validated), or a server that already runs one, when only the prompt crosses the wire."""
    if settings.backend != "local":
        from codecomplete.engines.remote import RemoteEngine

        return RemoteEngine(settings.backend, settings.remote_url, model=settings.model, fim=settings.fim,
                            n_ctx=settings.n_ctx)
    from codecomplete.engines.llama import LlamaEngine
    from codecomplete.models import resolve_model

    path = resolve_model(settings.model)
    return LlamaEngine(path, n_ctx=settings.n_ctx, n_threads=settings.n_threads, n_gpu_layers=settings.n_gpu_layers,
                       main_gpu=settings.main_gpu, flash_attn=settings.flash_attn, slots=settings.kv_slots or None)
