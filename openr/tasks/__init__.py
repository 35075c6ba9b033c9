"""Problem sets (arith generator, GSM8K, MATH, MATH500), answer extraction and grading.

Pure Python (no torch), so search, training and clients can all use it. Grading
(`openr.tasks.grading`) loads math-verify and sympy, so it is imported from its
module rather than from here: the step convention stays cheap to import.
"""

from openr.tasks.datasets import load_problems
from openr.tasks.problem import Problem

__all__ = ["Problem", "load_problems"]
