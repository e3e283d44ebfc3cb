"""The one error type for a setting, option or description that cannot work (re-exported by ``common.spec``)."""


class ConfigError(ValueError):
    """A setting, option or dataset description that cannot work; the message names it."""
