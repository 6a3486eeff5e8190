"""tbpr: text-based person re-identification, from dataset to leaderboard."""

__version__ = "0.1.0"
