"""The language server, shipped as ``codecomplete.lsp``."""
