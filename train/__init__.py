"""Training: `accelerate launch train/main.py` (model, augmentation, loop, checkpoints)."""
