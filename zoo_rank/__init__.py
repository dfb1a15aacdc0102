"""zoo_rank: rank pretrained image backbones by how well they will transfer.

The science is Xu & Liu, "Quantifying the Variability Collapse of Neural Networks" (ICML 2023).
"""

__version__ = "0.1.0"

from zoo_rank._validation import ZooRankError

__all__ = ["ZooRankError", "__version__"]
