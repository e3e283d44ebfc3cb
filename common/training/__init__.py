"""One network: models, losses, augmentation, the seeded stream, precision and devices, the pooled network,
checkpoints, the trainer, and the predictor."""
