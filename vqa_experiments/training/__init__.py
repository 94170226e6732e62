"""The streaming-VQA trainer's parts (the script is ``vqa_experiments/vqa_trainer.py``)."""
