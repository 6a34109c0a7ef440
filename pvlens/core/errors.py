"""Errors that pvlens raises on bad input: each names what is wrong and how to fix it."""


class PVLensError(Exception):
    """Base class for every error pvlens raises on purpose."""


class UnknownModelError(PVLensError, KeyError):
    """A model name that is neither in the registry nor a Hugging Face repo id."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


class ChecksumError(PVLensError):
    """A downloaded or cached file whose sha256 differs from the registry's."""


class CacheError(PVLensError):
    """The cache directory cannot be created or written to."""


class VectorMismatchError(PVLensError):
    """A persona-vector file that does not belong to the model it is used with."""


class TraitFormatError(PVLensError, ValueError):
    """A trait-artifact file (or generator answer) that breaks the documented format.

    The message names the offending field, e.g. ``instructions[2].neg``.
    """


class JudgeError(PVLensError):
    """A judge that cannot give scores: unreachable server, unusable answers, missing key."""


class EmptySelectionError(PVLensError):
    """A filtering step that left nothing to compute with (e.g. no rollout pair passed)."""
