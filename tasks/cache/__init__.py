"""The feature cache stage: frozen encoder outputs computed once, memory-mapped for training."""
