"""The workspace index: snippets from the rest of the repository for cross-file context."""
