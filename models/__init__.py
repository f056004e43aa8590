"""The model catalog (catalog.toml), shipped as ``codecomplete.catalog``. Never weights."""
