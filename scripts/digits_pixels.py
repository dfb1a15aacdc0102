"""Write scikit-learn's digits (real 8x8 images, raw pixels as features) as a zoo_rank feature table.

    .venv/bin/python scripts/digits_pixels.py digits.parquet && .venv/bin/zoo-rank score digits.parquet
"""

import sys

import polars as pl
from sklearn.datasets import load_digits

digits = load_digits()
out = sys.argv[1] if len(sys.argv) > 1 else "digits.parquet"
pl.DataFrame(
    {"label": digits.target, "features": pl.Series(list(digits.data.astype("float32")), dtype=pl.Array(pl.Float32, 64))}
).write_parquet(out)
print(f"wrote {out}: {len(digits.target)} images x 64 pixels, 10 classes")
