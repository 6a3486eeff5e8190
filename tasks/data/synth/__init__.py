"""`tbpr synth`: the built-in synthetic pedestrian dataset, written in the CUHK-PEDES layout."""

from tasks.data.synth.dataset import SplitCounts, SynthSummary, generate

__all__ = ["SplitCounts", "SynthSummary", "generate"]
