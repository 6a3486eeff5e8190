"""Expected failures: the CLI prints the message (what is wrong, what to do) and exits with status 2."""


class TbprError(Exception):
    """Bad input or a missing prerequisite. The message must say what is wrong and what to do."""

    exit_code = 2
