"""The one error type of the data layer: bad input a user can fix."""


class DataError(ValueError):
    """Raised for bad data input (missing folder, empty class, unknown spec, ...).

    Command-line tools print its message as one line and exit with code 2.
    """
