"""Plumbing every stage needs: errors, the TBPR_HOME layout, atomic writes, device and precision,
settings helpers and the version. Imports nothing else of tbpr."""
