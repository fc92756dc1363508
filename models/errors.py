"""Errors about models and weights that the user can act on.

The CLI prints a `ModelError`'s message as one line and exits with status 2, exactly as it does
for `pipeline.errors.UserError`: a missing or corrupt checkpoint, a download that cannot be
made, a checkpoint whose keys do not match its architecture.
"""


class ModelError(Exception):
    """A problem with a model, its weights or its settings; the message says what to do."""


class NotFiniteError(ModelError):
    """A model made numbers that are not finite (NaN or inf) from finite inputs: its weights are
    damaged (or were trained into NaN), so every input would meet it. The pipeline stops the whole
    run on it (`pipeline.errors.RunAborted`) rather than skipping input after input."""
