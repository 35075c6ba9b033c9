"""Problem sets (arith generator, GSM8K, MATH, MATH500), answer extraction and grading.

Pure Python (no torch), so search, training and clients can all use it.
"""

from openr.tasks.datasets import load_problems
from openr.tasks.grading import extract_answer, is_correct
from openr.tasks.problem import Problem

__all__ = ["Problem", "extract_answer", "is_correct", "load_problems"]
