"""Scoring building blocks: the EMB layout, feature sources, exhaustive and pruned pair scoring, rankings."""
