"""Engines that turn prompt token ids into text: llama.cpp in this process, or a server that runs a model."""
