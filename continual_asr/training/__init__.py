"""Training: the shared Avalanche template, the adapter strategy family, memory and pretraining."""
