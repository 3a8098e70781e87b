"""The subset of HOCON that pixelNeRF's and FeatureNeRF's ``.conf`` files use, without pyhocon.

Supported: nested objects (``key { ... }``, ``key = { ... }``), ``key = value`` / ``key: value``,
dotted keys (``a.b = 1``), ``#`` and ``//`` comments, quoted and unquoted strings, numbers,
booleans (any case, as pyhocon's ``get_bool`` reads them), lists, and
``include required("file")`` / ``include "file"`` relative to the including file. Later values
override earlier ones and objects merge, as in HOCON. Substitutions (``${...}``) are refused.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from featurenerf_ns.utils.io import DataError

_TOKEN = re.compile(
    r"""
    (?P<ws>[ \t\r]+)
  | (?P<comment>(?:\#|//)[^\n]*)
  | (?P<newline>\n)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<punct>[{}\[\]=:,()])
  | (?P<word>[^\s{}\[\]=:,()"#]+)
    """,
    re.VERBOSE,
)


def read_hocon(path: Path | str) -> dict[str, Any]:
    """Parse a ``.conf`` file (and the files it includes) into nested dicts.

    Raises:
        DataError: naming the file, when it is missing, unreadable or outside the supported subset.
    """
    return _parse_file(Path(path), ())


def hocon_get(conf: dict[str, Any], dotted: str, default: Any = None) -> Any:
    """``conf["a"]["b"]`` for ``"a.b"``, or ``default`` when any part is missing."""
    node: Any = conf
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def as_bool(value: Any, where: str) -> bool:
    """A HOCON boolean (``true``/``True``/``yes``/``on``/...) as pyhocon's ``get_bool`` reads it."""
    if isinstance(value, bool):
        return value
    text = str(value).lower()
    if text in ("true", "yes", "on"):
        return True
    if text in ("false", "no", "off"):
        return False
    raise ValueError(f"{where} must be a boolean, got {value!r}")


def _parse_file(path: Path, stack: tuple[Path, ...]) -> dict[str, Any]:
    path = path.resolve()
    if path in stack:
        raise DataError(path, "includes itself")
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise DataError(path, "config file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(path, f"not a readable config file ({e})") from None
    parser = _Parser(path, _tokenize(path, text), stack + (path,))
    return parser.parse_root()


def _tokenize(path: Path, text: str) -> list[tuple[str, str, int]]:
    tokens = []
    line = 1
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise DataError(path, f"line {line}: cannot parse {text[pos : pos + 20]!r}")
        kind = m.lastgroup
        value = m.group()
        if kind == "newline":
            tokens.append(("newline", value, line))
            line += 1
        elif kind not in ("ws", "comment"):
            tokens.append((kind, value, line))
        pos = m.end()
    tokens.append(("eof", "", line))
    return tokens


class _Parser:
    def __init__(self, path: Path, tokens: list[tuple[str, str, int]], stack: tuple[Path, ...]):
        self.path = path
        self.tokens = tokens
        self.stack = stack
        self.i = 0

    def _error(self, problem: str) -> DataError:
        return DataError(self.path, f"line {self.tokens[self.i][2]}: {problem}")

    def _peek(self) -> tuple[str, str, int]:
        return self.tokens[self.i]

    def _next(self) -> tuple[str, str, int]:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def _skip_separators(self) -> None:
        while self._peek()[0] == "newline" or self._peek()[1] == ",":
            self.i += 1

    def parse_root(self) -> dict[str, Any]:
        self._skip_separators()
        if self._peek()[1] == "{":
            self.i += 1
            obj = self._object_body("}")
        else:
            obj = self._object_body(None)
        self._skip_separators()
        if self._peek()[0] != "eof":
            raise self._error(f"unexpected {self._peek()[1]!r}")
        return obj

    def _object_body(self, closing: str | None) -> dict[str, Any]:
        obj: dict[str, Any] = {}
        while True:
            self._skip_separators()
            kind, value, _ = self._peek()
            if kind == "eof":
                if closing is not None:
                    raise self._error(f"missing {closing!r}")
                return obj
            if value == closing:
                self.i += 1
                return obj
            if kind == "word" and value == "include":
                self.i += 1
                _merge(obj, self._include())
                continue
            if kind not in ("word", "string"):
                raise self._error(f"expected a key, found {value!r}")
            self.i += 1
            keys = _unquote(value).split(".") if kind == "word" else [_unquote(value)]
            sep = self._peek()[1]
            if sep in ("=", ":"):
                self.i += 1
                item = self._value()
            elif sep == "{":
                item = self._value()
            else:
                raise self._error(f"expected '=', ':' or '{{' after {value!r}")
            for key in reversed(keys[1:]):
                item = {key: item}
            _merge(obj, {keys[0]: item})

    def _include(self) -> dict[str, Any]:
        kind, value, _ = self._next()
        if kind == "word" and value == "required":
            if self._next()[1] != "(":
                raise self._error("expected '(' after 'include required'")
            kind, value, _ = self._next()
            if self._next()[1] != ")":
                raise self._error("expected ')' after the included file")
        if kind != "string":
            raise self._error("expected a quoted file name after 'include'")
        return _parse_file(self.path.parent / _unquote(value), self.stack)

    def _value(self) -> Any:
        kind, value, _ = self._next()
        if value == "{":
            return self._object_body("}")
        if value == "[":
            items = []
            while True:
                self._skip_separators()
                if self._peek()[1] == "]":
                    self.i += 1
                    return items
                items.append(self._value())
        if kind == "string":
            return _unquote(value)
        if kind == "word":
            if value.startswith("$"):
                raise self._error("substitutions (${...}) are not supported")
            # Unquoted values run to the end of the line (HOCON concatenates words with their spaces).
            words = [value]
            while self._peek()[0] == "word":
                words.append(self._next()[1])
            return _scalar(" ".join(words))
        raise self._error(f"expected a value, found {value!r}")


def _scalar(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low == "null":
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _unquote(token: str) -> str:
    if token.startswith('"'):
        return re.sub(r"\\(.)", r"\1", token[1:-1])
    return token


def _merge(into: dict[str, Any], new: dict[str, Any]) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value
