"""User-facing errors: the CLI prints these as one line, never as a traceback."""


class EarthMapperError(Exception):
    """Something the user gave is wrong; the message says what and what was expected."""


class CheckpointError(EarthMapperError):
    """A checkpoint is missing, truncated, or of another architecture."""


class InputError(EarthMapperError):
    """An image, coordinate or argument has the wrong shape, range or value."""


class DataError(EarthMapperError):
    """A dataset record is corrupt, undecodable or inconsistent."""
