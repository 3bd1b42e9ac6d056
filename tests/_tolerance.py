"""Tolerances for float results, derived from the dtype and the size of the computation.

How far a float result may be from the exact value depends on its dtype and on how many rounded
operations produced it, not on the machine. A sum of n rounded terms, in any order (thread
count, SIMD width, oneDNN or Eigen kernels, fused multiply-adds), is within n·u·Σ|term| of the
exact sum, u = eps/2 (Higham, "Accuracy and Stability of Numerical Algorithms", 2nd ed., §3.1).
Rounding errors being independent and of mean zero, it is also within λ·√n·u·Σ|term| but for
a probability below 2n·exp(-λ²/2) (Higham and Mary, SIAM J. Sci. Comput. 41(5), 2019): with
λ = 10, below n·4e-22. So the tests check float32 results against float64 references, whose
own rounding is 2^29 times smaller, with the tolerances below instead of constants tuned to one
machine's last bits. Results that are bit-identical by construction (the same op on the same
input, masks, counts, saved and reloaded values) are compared exactly instead.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

_LAMBDA = 10.0


def tolerance(dtype, terms: int, scale: float = 0.0) -> dict[str, float]:
    """`rtol` and `atol` for checking a `dtype` result against a float64 reference.

    Args:
        dtype: The dtype the result was computed in.
        terms: How many rounded operations one entry of the result goes through, counted
            along its longest chain; a sum or dot product of n terms counts n.
        scale: The size of what the entries are computed from (Σ|term|, or the largest entry
            where that bounds it), so that an entry that cancels to near zero is held to the
            precision of its terms rather than its own size. 0 when nothing cancels.

    Returns:
        `{"rtol": r, "atol": r·scale}`, r = eps·min(terms, λ√terms): twice the smaller of the
        two bounds of the module docstring (the worst case is the smaller up to 100 terms).
    """
    eps = float(np.finfo(dtype).eps)
    bound = eps * min(terms, _LAMBDA * math.sqrt(terms))
    return {"rtol": bound, "atol": bound * scale}


def approx(expected, dtype, terms: int, scale: float = 0.0):
    """`pytest.approx(expected)` within `tolerance(dtype, terms, scale)`."""
    bounds = tolerance(dtype, terms, scale)
    return pytest.approx(expected, rel=bounds["rtol"], abs=bounds["atol"])
