"""One network: models, losses, augmentation, the seeded stream, the trainer."""
