"""How the demo compares outputs: per query head, the L2 error relative to the reference."""
import numpy as np


def head_errors(out, reference):
    """|out - reference| / |reference| per query head (L2 over D), float64."""
    a = np.asarray(out, np.float64).reshape(-1, out.shape[-1])
    b = np.asarray(reference, np.float64).reshape(a.shape)
    den = np.sum(b * b, axis=1)
    return np.sqrt(np.sum((a - b) ** 2, axis=1) / np.where(den > 0, den, 1))


def relative_error(out, reference):
    """The mean over query heads of head_errors."""
    return float(np.mean(head_errors(out, reference)))
