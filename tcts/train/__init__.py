"""Training of the TCTS token selector: data (``data.py``), guidance-sampling trainer
(``selector_trainer.py``), DDP helpers (``ddp.py``) and the ``train-selector`` command (``cli.py``)."""
from .data import CaptionDataset, caption_folder, in_memory_captions, load_dataset, tokenize_dataset
from .selector_trainer import (Batch, ExampleMaker, SelectorTrainer, TrainConfig, TrainResult, evaluate,
                               guidance_reconstruct, split_validation, train_selector)

__all__ = ["CaptionDataset", "caption_folder", "in_memory_captions", "load_dataset", "tokenize_dataset", "Batch",
           "ExampleMaker", "SelectorTrainer", "TrainConfig", "TrainResult", "evaluate", "guidance_reconstruct",
           "split_validation", "train_selector"]
