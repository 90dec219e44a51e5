"""The errors sdeid reports to a user as one clear line (the CLI exits 2 on them)."""


class SdeidError(ValueError):
    """Bad input, config or run folder; the message names where and what."""


class RunFolderError(SdeidError):
    """An output folder holds work that does not match this run (another plan, a missing or
    damaged upstream stage)."""
