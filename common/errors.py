"""The two error types a user meets for a foreseeable problem (re-exported by ``common.spec`` and
``common.data.cases``): a setting that cannot work, and data on disk that cannot be used."""


class ConfigError(ValueError):
    """A setting, option or dataset description that cannot work; the message names it."""


class DataError(ValueError):
    """A problem with the data on disk; the message names the file or folder."""
