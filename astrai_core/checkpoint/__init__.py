"""Checkpoint loading and saving: one ``load_model(path)`` for every supported format.

Formats: the project's own folder (``config.json`` + ``model.safetensors`` [+ index] +
tokenizer files), Hugging Face Llama/Mistral/Qwen2 folders, and GGUF files. Saving always
writes the project's own folder format, atomically.
"""

from astrai_core.checkpoint.own import LoadedModel, load_model, save_model

__all__ = ["LoadedModel", "load_model", "save_model"]
