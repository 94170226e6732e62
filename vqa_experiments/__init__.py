"""Streaming VQA experiments: CLEVR (S-MAC) and TDIUC (UpDown)."""
