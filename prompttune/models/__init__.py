"""Backbones: loading (hub, offline GGUF cache), families (masked, causal, encoder-decoder), prefixes, packing."""
