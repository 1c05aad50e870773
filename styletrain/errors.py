"""The one exception type for mistakes a user can fix (bad files, names, weights)."""


class UserError(ValueError):
    """Bad input from the user; the CLI prints its message on one line and exits with code 2."""
