"""The one exception type that means "the user can fix this"."""


class UserError(Exception):
    """A problem with the user's input (params, data, files, environment).

    Stages turn it into a one-line message and exit code 2 instead of a traceback.
    The message should name the problem and the fix.
    """


def one_line(exc: BaseException, limit: int = 200) -> str:
    """An exception's message folded onto one line (or its type name), cut to ``limit`` characters.

    Library errors (torch's unpickler, torchvision's downloader, Pillow) span several lines; a
    UserError quoting one must stay one line.
    """
    text = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    return (text or type(exc).__name__)[:limit]
