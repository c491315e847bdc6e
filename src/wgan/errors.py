"""The one exception type that means "the user can fix this"."""


class UserError(Exception):
    """A problem with the user's input (params, data, files, environment).

    Stages turn it into a one-line message and exit code 2 instead of a traceback.
    The message should name the problem and the fix.
    """
