"""`tbpr prepare`: public dataset layouts (CUHK-PEDES, ICFG-PEDES, RSTPReid) to validated Parquet."""

from tasks.prepare.dataset import PrepareSummary, prepare_dataset
from tasks.prepare.layouts import FORMATS, Format
from tasks.prepare.manifest import SplitCounts
from tasks.prepare.validate import Reason

__all__ = ["FORMATS", "Format", "PrepareSummary", "Reason", "SplitCounts", "prepare_dataset"]
