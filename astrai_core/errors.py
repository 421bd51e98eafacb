"""The package's exception types.

Every user-facing failure raises a subclass of :class:`AstraiError` whose message
names the offending file or value and what is wrong with it.
"""

from __future__ import annotations


class AstraiError(Exception):
    """Base class for every error AstrAI reports to a user."""


class ConfigError(AstraiError):
    """A configuration file or value is missing, misspelled or invalid."""


class CheckpointError(AstraiError):
    """A model checkpoint cannot be read: missing, truncated, corrupt or unsupported."""


class TokenizerError(AstraiError):
    """A tokenizer file is missing or invalid, or a chat message is malformed."""


class GenerationError(AstraiError):
    """A generation request cannot be served (for example it exceeds the context)."""


class DocumentError(AstraiError):
    """A document cannot be loaded or indexed; the message names the file."""


class ContextLengthError(GenerationError):
    """A prompt (plus the tokens reserved for the answer) does not fit the model's context."""


class PasswordError(DocumentError):
    """An encrypted document needs a password, or the password given is wrong."""
