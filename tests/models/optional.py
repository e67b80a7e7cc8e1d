"""Whether the optional model libraries import here (torchvision does not beside torch 2.13.0)."""

from __future__ import annotations


def torchvision_importable() -> bool:
    """True when ``import torchvision`` works in this environment."""
    try:
        import torchvision  # noqa: F401
    except ImportError:
        return False
    return True
