"""Stage `score`: exhaustive and pruned scoring of an EMB folder into OUT (`layout`), and search."""
