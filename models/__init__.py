"""Models: the catalog (catalog.toml, never weights), GGUF checks and downloads; ships as ``codecomplete.models``."""

from codecomplete.models.catalog import (
    EMBEDDED_DISTRIBUTION,
    CatalogEntry,
    describe_models,
    embedded_model_path,
    load_catalog,
    models_dir,
    parse_catalog,
    resolve_model,
)
from codecomplete.models.download import pull, sha256_file
from codecomplete.models.gguf import validate_gguf

__all__ = [
    "EMBEDDED_DISTRIBUTION", "CatalogEntry", "describe_models", "embedded_model_path", "load_catalog", "models_dir",
    "parse_catalog", "pull", "resolve_model", "sha256_file", "validate_gguf",
]
