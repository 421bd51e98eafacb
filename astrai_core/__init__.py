"""AstrAI core: model, tokenizer, checkpoint loading, generation and retrieval.

Importing this package has no side effects; heavy modules are imported where used.
"""

from astrai_core.errors import AstraiError

__all__ = ["AstraiError"]
__version__ = "0.1.0"
