"""The one exception type that means "the user can fix this"."""


class UserError(Exception):
    """A problem with the user's input (params, data, files, environment).

    Stages turn it into a one-line message and exit code 2 instead of a traceback.
    The message should name the problem and the fix.
    """


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (or its type name), cut to ``limit`` characters.

    Library errors (torch's unpickler, Pillow) span many lines; a UserError quotes only this one.
    """
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:limit]
