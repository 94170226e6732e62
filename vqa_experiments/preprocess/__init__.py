"""Offline data preparation for the VQA experiments (CLEVR, TDIUC, the easy-VQA demo).

Formats: ``vqa_experiments/DATA_FORMATS.md``. Scripts: ``vqa_experiments/*.py``.
"""
