"""`tbpr prepare`: public dataset layouts (CUHK-PEDES, ICFG-PEDES, RSTPReid) to validated Parquet."""

from tasks.data.prepare.dataset import PrepareSummary, prepare_dataset
from tasks.data.prepare.layouts import FORMATS, Format
from tasks.data.prepare.manifest import SplitCounts
from tasks.data.prepare.validate import Reason

__all__ = ["FORMATS", "Format", "PrepareSummary", "Reason", "SplitCounts", "prepare_dataset"]
