"""The one exception type users see: a single line saying what is wrong and what to do."""


class ToolboxError(Exception):
    """A user-facing error. The message is one line: what went wrong, then the fix."""

    def __init__(self, what: str, fix: str | None = None):
        self.what = what
        self.fix = fix
        super().__init__(f"{what}: {fix}" if fix else what)
