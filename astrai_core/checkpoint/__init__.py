"""Checkpoint loading and saving: one ``load_model(path)`` for every supported format.

Formats: the project's own folder (``config.json`` + ``model.safetensors`` [+ index] +
tokenizer files), Hugging Face Llama/Mistral/Qwen2 folders, and GGUF files. Saving always
writes the project's own folder format, atomically. See ``docs/formats.md``.
"""

from astrai_core.checkpoint.common import LoadedModel
from astrai_core.checkpoint.loader import detect_format, load_model
from astrai_core.checkpoint.own import save_model

__all__ = ["LoadedModel", "detect_format", "load_model", "save_model"]
