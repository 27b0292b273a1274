"""dpsynth: differentially private synthetic copies of patient tables.
(module map filled in as modules land)
"""

__version__ = "0.1.0"
