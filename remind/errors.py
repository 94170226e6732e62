"""The one base class of the errors a user can fix (bad flags, files or data).

Scripts turn an ``InputError`` into one line on stderr and a non-zero exit
(``remind.runtime.run_cli``); any other exception is a bug and keeps its traceback.
"""


class InputError(Exception):
    """Bad command line, file or data; the message is one line naming the flag or file."""
