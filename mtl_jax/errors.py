"""The library's error for mistakes a user can fix; a leaf module every other one may import."""


class ConfigError(ValueError):
  """A configuration or input mistake the user can fix; printed as one line (exit code 2)."""
