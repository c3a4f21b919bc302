"""One convention for the flags of every task, on top of invoke's parser.

invoke casts a flag's value with the type of its default (a wrong one is a ValueError traceback),
shows no placeholder for number or repeatable flags, picks short flags letter by letter (so `-a`
meant five flags), and has no variadic positionals. Here:

- every flag is declared with a `Flag`: its type (whole number, number, text, path, one of a few
  words), its range, its placeholder. Values are converted and checked while invoke parses the
  command line; a wrong one is one line naming the flag, exit 2, before the task starts;
- `invoke --help TASK` shows each value's placeholder and type (`--threshold=FRACTION ... [number,
  0 to 1]`), and `[repeatable]`;
- short flags come from one table, SHORT: a letter means one flag in every task;
- run ids and input files are positional (`invoke report RUN`, `invoke import a.md b.md`). A task's
  `variadic` positional takes every word of the command line after the task's name that is not a
  flag, a flag's value, or the name of another task: its Context counts them in sys.argv (the words
  the user typed) before invoke's parser runs, so that parser fills it.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import invoke.collection
from invoke import Exit, Task
from invoke import task as invoke_task
from invoke.parser import Argument, ParserContext

from toolbox.errors import ToolboxError

# The names of the tasks made by command(): a word that names one ends the words of a variadic positional.
TASK_NAMES: set[str] = set()

# One letter, one meaning, in every task (invoke's own: -h help, -l list, -d debug, -e echo, ...).
SHORT = {"backend": "b", "model": "m", "out": "o", "json": "j", "repetitions": "r"}


@dataclass(frozen=True)
class Flag:
    """What a flag takes. kind: 'int', 'number', 'text', 'path', 'bool'."""

    help: str
    kind: str = "text"
    placeholder: str = "TEXT"
    low: float | None = None  # inclusive
    high: float | None = None  # inclusive
    above: float | None = None  # exclusive lower bound
    choices: tuple[str, ...] = ()
    repeatable: bool = False
    variadic: bool = False  # the task's last positional: any number of words (run ids, files)
    # A check by the package's own rule, run on each given value before the task starts (imports lazily:
    # parsing must stay light); its ToolboxError is reported as `error: --flag: what: fix`.
    check: Callable[[Any], None] | None = None
    example: str | None = None  # a good value, for the error message (default: the flag's default)

    def kind_text(self) -> str:
        """'whole number >= 1', 'number, 0 to 1', 'one of: a, b', '' for free text."""
        if self.kind in ("int", "number"):
            what = "whole number" if self.kind == "int" else "number"
            if self.low is not None and self.high is not None:
                return f"{what}, {self.low:g} to {self.high:g}"
            if self.above is not None:
                return f"{what} > {self.above:g}" + (f" and <= {self.high:g}" if self.high is not None else "")
            return f"{what} >= {self.low:g}" if self.low is not None else what
        return "one of: " + ", ".join(self.choices) if self.choices else ""

    def describe(self) -> str:
        """The type as --help shows it after the text: ' [number, 0 to 1]', ' [repeatable]'."""
        parts = [self.kind_text()] if self.kind_text() else []
        if self.variadic:
            parts.append("positional, several allowed")
        elif self.repeatable:
            parts.append("repeatable")
        return f" [{'; '.join(parts)}]" if parts else ""

    def convert(self, flag: str, raw, example=None):
        """The value of one word given to `flag`, or Exit(2): one line saying what is wrong and what to give."""
        text = str(raw)
        if self.choices and text not in self.choices:
            bad(flag, f"{text!r} is not one of {', '.join(self.choices)}", f"e.g. {flag} {example or self.choices[0]}")
        if self.kind not in ("int", "number"):
            return text
        if self.example is not None:
            example = self.example
        elif example is None:
            example = self.low if self.low is not None else (self.above + 1 if self.above is not None else 1)
        fix = f"give a {self.kind_text()}, e.g. {flag} {example if isinstance(example, str) else format(example, 'g')}"
        try:
            value = int(text.strip()) if self.kind == "int" else float(text.strip())
        except ValueError:
            bad(flag, f"{text!r} is not a {'whole number' if self.kind == 'int' else 'number'}", fix)
        if not math.isfinite(value):
            bad(flag, f"{text!r} is not a finite number", fix)
        if (
            (self.low is not None and value < self.low)
            or (self.high is not None and value > self.high)
            or (self.above is not None and value <= self.above)
        ):
            bad(flag, f"{text.strip()} is out of range", fix)
        return value


def bad(flag: str, what: str, fix: str):
    """A wrong flag value: one line, exit 2 (raised inside invoke's parser, which prints the message)."""
    raise Exit(f"error: {flag}: {what}: {fix}", code=2)


@contextlib.contextmanager
def user_errors():
    """What a user sees when something goes wrong: one line, exit 2 for bad input, no traceback.

    ToolboxError -> `error: what: fix`, exit 2; Ctrl-C -> exit 130; a closed pipe (`invoke doctor --json
    | head`) ends quietly; every warning (ResultsWarning and any other) is one `warning:` line on stderr.
    """

    def one_line(message, category, filename, lineno, file=None, line=None):
        print(f"warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = one_line
        try:
            yield
        except ToolboxError as exc:
            raise Exit(f"error: {exc}", code=2) from None
        except KeyboardInterrupt:
            raise Exit("interrupted", code=130) from None
        except BrokenPipeError:
            # the reader left (`| head`): nothing more to say, and nothing left to flush at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise Exit(code=1) from None  # as rich's own console does on a closed pipe


def Int(help: str, *, low=None, high=None, above=None, placeholder="INT", example=None) -> Flag:
    return Flag(help, "int", placeholder, low, high, above, example=example)


def Number(help: str, *, low=None, high=None, above=None, placeholder="NUMBER", example=None) -> Flag:
    return Flag(help, "number", placeholder, low, high, above, example=example)


def Text(help: str, *, placeholder="TEXT", choices=(), repeatable=False, variadic=False, check=None) -> Flag:
    return Flag(help, "text", placeholder, choices=tuple(choices), repeatable=repeatable or variadic, variadic=variadic, check=check)


def Path(help: str, *, placeholder="PATH", repeatable=False, variadic=False, check=None) -> Flag:
    return Flag(help, "path", placeholder, repeatable=repeatable or variadic, variadic=variadic, check=check)


def Switch(help: str) -> Flag:
    return Flag(help, "bool", "")


class Arg(Argument):
    """An invoke Argument that converts and checks its value with its Flag, and may take several positional words."""

    def __init__(self, spec: Flag, **kwargs):
        if spec.kind != "bool":
            kwargs["kind"] = list if spec.repeatable and not spec.variadic else str
        super().__init__(**kwargs)
        self.spec = spec
        self.expected = 0  # variadic: how many positional words the command line holds for it
        if spec.variadic:
            self.raw_value = self._value = []

    @property
    def flag(self) -> str:
        return f"--{self.names[0]}"

    @property
    def value(self):
        if self.spec.variadic:
            # None while words are still to come: invoke's parser hands positional words to an argument without a value
            return None if len(self._value) < self.expected else list(self._value)
        return self._value if self._value is not None else self.default

    @value.setter
    def value(self, arg) -> None:
        self.set_value(arg, cast=True)

    def set_value(self, value, cast: bool = True) -> None:
        self.raw_value = value
        if self.spec.kind == "bool" or not cast:
            self._value = value
            return
        example = self.default if isinstance(self.default, (int, float)) and not isinstance(self.default, bool) else None
        v = self.spec.convert(self.flag, value, example)
        self._value = (self._value or []) + [v] if (self.spec.repeatable or self.spec.variadic) else v

    @property
    def got_value(self) -> bool:
        return bool(self._value) if isinstance(self._value, list) else self._value is not None


class Context(ParserContext):
    """A task's parser context whose --help shows each value's placeholder and type, and whose variadic
    positional knows how many words of the command line are its own."""

    def __init__(self, name=None, aliases=(), args=()):
        super().__init__(name=name, aliases=aliases, args=args)
        variadic = [a for a in self.positional_args if isinstance(a, Arg) and a.spec.variadic]
        if variadic:
            fixed = len(self.positional_args) - 1
            variadic[0].expected = max(0, len(positional_words(sys.argv, self, TASK_NAMES)) - fixed)

    def help_for(self, flag: str) -> tuple[str, str]:
        arg = self.flags[flag]
        if not isinstance(arg, Arg) or arg.spec.kind == "bool":
            return super().help_for(flag)
        ph = arg.spec.placeholder
        names = sorted(self.names_for(flag), key=len)
        namestr = ", ".join(f"{n} {ph}" if len(n.strip("-")) == 1 else f"{n}={ph}" for n in names)
        return namestr, (arg.help or "") + arg.spec.describe()


class TypedTask(Task):
    """A task whose arguments are Args built from its flags (see command)."""

    flags: dict[str, Flag] = {}

    def get_arguments(self, ignore_unknown_help=None) -> list[Argument]:
        out = []
        for a in super().get_arguments(ignore_unknown_help=ignore_unknown_help):
            spec = self.flags[a.name]
            names = (a.names[0], SHORT[a.name]) if a.name in SHORT else (a.names[0],)
            out.append(Arg(spec, names=names, default=a.default, help=a.help, positional=a.positional, attr_name=a.attr_name, kind=a.kind))
        return out


def command(name: str | None = None, positional: tuple[str, ...] = (), **flags: Flag):
    """@command(flag=Flag(...), ...): an invoke task whose every flag is declared (type, range, help, check).

    The body runs inside user_errors(), after each given value passed its flag's check.
    """

    def deco(fn):
        defaults = {k: p.default for k, p in inspect.signature(fn).parameters.items()}

        @functools.wraps(fn)
        def body(c, *args, **kwargs):
            with user_errors():
                for key, value in kwargs.items():
                    spec = flags[key]
                    values = value if isinstance(value, list) else [value]
                    for v in values if spec.check else ():
                        if v is not None and v != defaults[key]:
                            try:
                                spec.check(v)
                            except ToolboxError as exc:
                                where = spec.placeholder if key in positional else "--" + key.replace("_", "-")
                                raise ToolboxError(f"{where}: {exc.what}", exc.fix) from None
                return fn(c, *args, **kwargs)

        t = invoke_task(
            body,
            klass=TypedTask,
            name=name,
            help={k: f.help for k, f in flags.items()},
            positional=list(positional),
            auto_shortflags=False,
        )
        missing = set(t.argspec(body).parameters) - set(flags)
        if missing:  # pragma: no cover - a programming error, found by any test that loads the tasks
            raise TypeError(f"task {fn.__name__}: declare the flags {sorted(missing)}")
        t.flags = flags
        TASK_NAMES.update({t.name, t.name.replace("_", "-")})
        return t

    return deco


# invoke builds a task's parser context in Collection.to_contexts with the ParserContext it imported;
# the collection tasks.py hands over is copied into a plain Collection by Program.load_collection, so
# the one place to give every task's context our --help (placeholders, types) and variadic positionals
# is that name. Context only adds behaviour for Args; plain invoke arguments work as before.
invoke.collection.ParserContext = Context


def positional_words(argv: list[str], ctx: ParserContext, task_names: set[str]) -> list[str]:
    """The words after the task's name in argv that are neither flags, flag values nor another task's name."""
    names = {ctx.name, *ctx.aliases}
    start = next((i for i, w in enumerate(argv[1:], 1) if w in names), None)
    if start is None:
        return []
    words, i = [], start + 1
    while i < len(argv):
        w = argv[i]
        if w == "--" or w in task_names:
            break
        if w.startswith("-") and len(w) > 1:
            arg = ctx.flags.get(w.split("=", 1)[0])
            if arg is not None and arg.takes_value and "=" not in w:
                i += 1  # its value
        else:
            words.append(w)
        i += 1
    return words
