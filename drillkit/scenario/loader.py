"""Reading a scenario file into a :class:`~drillkit.scenario.model.Scenario`.

The text goes through three steps, each of which can only fail with a
:class:`~drillkit.errors.ScenarioError` naming the file, the line and the field:

1. **Bytes to text**: at most :data:`MAX_BYTES`; no NUL bytes; UTF-8 (a BOM is allowed).
2. **Text to plain data**: PyYAML composes a node graph with a ``SafeLoader`` subclass (never a
   loader that can build Python objects), and a small builder turns nodes into dicts, lists and
   scalars itself. Building it here, rather than with ``construct_document``, is what lets it
   record the line of every key and list item, refuse duplicate keys and unknown tags, and
   count values as aliases expand, so a "billion laughs" document stops after
   :data:`MAX_NODES` values instead of eating the machine.
3. **Plain data to the model**: pydantic validates, and the first error is translated into one
   line: ``<file>:<line>: <field path>: <what is wrong>``.

Booleans follow YAML 1.2 (``true``/``false`` only): under YAML 1.1 ``gpu: on`` would be the
boolean ``True`` rather than the word the format means.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Collection
from typing import Any

import yaml
from pydantic import ValidationError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from drillkit.errors import ScenarioError
from drillkit.scenario.model import Scenario, first_error, format_loc
from drillkit.scenario.units import Loc, show_value

__all__ = ["MAX_BYTES", "MAX_DEPTH", "MAX_NODES", "load_scenario", "loads_scenario"]

#: Largest scenario file read; real ones are a few KiB.
MAX_BYTES = 1 << 20
#: Most values (mapping, list or scalar, counting every alias expansion) in one document.
MAX_NODES = 10_000
#: Deepest nesting of mappings and lists; the format itself needs 4.
MAX_DEPTH = 32

_TAG = "tag:yaml.org,2002:"
_MAP_TAG = _TAG + "map"
_SEQ_TAG = _TAG + "seq"
_MERGE_TAG = _TAG + "merge"
_PLAIN_HINT = "scenarios are plain YAML: mappings, lists, text, numbers, true/false and null"


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans and limits on nesting and size while composing."""

    def __init__(self, stream: str, source: str) -> None:
        super().__init__(stream)
        self.source = source
        self._depth = 0
        self._composed = 0

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        # Composing is linear in the text, but deep nesting would recurse past Python's limit
        # and a huge flat document would take long; stop early on both.
        self._depth += 1
        self._composed += 1
        try:
            if self._depth > MAX_DEPTH:
                raise self._limit(f"nesting is deeper than {MAX_DEPTH} levels")
            if self._composed > MAX_NODES:
                raise self._limit(f"more than {MAX_NODES} values in one document")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def _limit(self, message: str) -> ScenarioError:
        event = self.peek_event()  # type: ignore[no-untyped-call]  # untyped in types-PyYAML
        line = int(event.start_mark.line) + 1
        return ScenarioError(message, path=self.source, line=line)


# YAML 1.1 reads yes/no/on/off as booleans and `=` as a "value" tag nothing constructs; the
# format wants them as words, so only true/false stay booleans.
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_TAG + "bool", _TAG + "value")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    _TAG + "bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


class _Builder:
    """Turns a composed node graph into plain Python data and a map of field path -> line."""

    def __init__(self, loader: _Loader) -> None:
        self.loader = loader
        self.lines: dict[Loc, int] = {}
        self._count = 0
        self._active: set[int] = set()
        self._scalars: dict[str, Callable[[ScalarNode], object]] = {
            _TAG + "null": loader.construct_yaml_null,
            _TAG + "bool": loader.construct_yaml_bool,
            _TAG + "int": loader.construct_yaml_int,
            _TAG + "float": loader.construct_yaml_float,
            _TAG + "str": loader.construct_yaml_str,
            _TAG + "timestamp": loader.construct_yaml_timestamp,
        }

    def error(self, message: str, node: Node, path: Loc) -> ScenarioError:
        return ScenarioError(
            message, path=self.loader.source, line=_line(node), field=format_loc(path) or None
        )

    def build(self, node: Node, path: Loc) -> Any:
        self._count += 1
        if self._count > MAX_NODES:
            raise self.error(
                f"the document expands to more than {MAX_NODES} values "
                "(aliases repeated too often?)",
                node,
                path,
            )
        if isinstance(node, ScalarNode):
            return self._scalar(node, path)
        if id(node) in self._active:
            raise self.error("an alias refers to a value that contains it", node, path)
        if len(path) > MAX_DEPTH:
            raise self.error(f"nesting is deeper than {MAX_DEPTH} levels", node, path)
        self._active.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                return self._sequence(node, path)
            if isinstance(node, MappingNode):
                return self._mapping(node, path)
        finally:
            self._active.discard(id(node))
        raise self.error("unsupported YAML node", node, path)  # pragma: no cover

    def _check_tag(self, node: Node, allowed: Collection[str], path: Loc) -> None:
        if node.tag not in allowed:
            raise self.error(
                f"unsupported YAML tag {_short_tag(node.tag)} ({_PLAIN_HINT})", node, path
            )

    def _scalar(self, node: ScalarNode, path: Loc) -> object:
        self._check_tag(node, self._scalars.keys(), path)
        try:
            value = self._scalars[node.tag](node)
        except (ValueError, OverflowError, yaml.YAMLError) as exc:
            # An integer of thousands of digits (Python refuses to convert it), or a date like
            # 2024-13-45.
            if "Exceeds the limit" in str(exc):
                reason = "the number has too many digits"
            elif node.tag == _TAG + "int":
                reason = f"it is not a valid {_short_tag(node.tag)}"
            else:
                reason = str(exc).splitlines()[0][:80] if str(exc) else type(exc).__name__
            raise self.error(
                f"cannot read the value {show_value(node.value)}: {reason}", node, path
            ) from None
        except (KeyError, IndexError, AttributeError, TypeError):
            # PyYAML's constructors assume the resolver matched the value: an explicit tag on
            # the wrong text (`!!bool 1`, `!!float ''`, `!!timestamp x`) breaks them.
            reason = f"it is not a valid {_short_tag(node.tag)}"
            raise self.error(
                f"cannot read the value {show_value(node.value)}: {reason}", node, path
            ) from None
        if isinstance(value, str) and _SURROGATES.search(value):
            # JSON-style escapes ("\ud83d\ude00") reach us as two lone surrogates: join them;
            # a lone one is not text anything downstream can print or write.
            try:
                value = value.encode("utf-16", "surrogatepass").decode("utf-16")
            except UnicodeDecodeError:
                raise self.error(
                    "the text holds a lone UTF-16 surrogate escape", node, path
                ) from None
        return value

    def _sequence(self, node: SequenceNode, path: Loc) -> list[Any]:
        self._check_tag(node, (_SEQ_TAG,), path)
        items: list[Any] = []
        for index, child in enumerate(node.value):
            self.lines[(*path, index)] = _line(child)
            items.append(self.build(child, (*path, index)))
        return items

    def _mapping(self, node: MappingNode, path: Loc) -> dict[str, Any]:
        self._check_tag(node, (_MAP_TAG,), path)
        merged: dict[str, Any] = {}
        own: dict[str, Any] = {}
        first_line: dict[str, int] = {}
        # Merge keys (`<<: *defaults`) first, so the mapping's own keys override them and their
        # lines win in the line map.
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE_TAG:
                continue
            sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
            for source in sources:
                if not isinstance(source, MappingNode):
                    raise self.error("'<<' merges a mapping or a list of mappings", source, path)
                # Through build(), like any value: each merge counts against MAX_NODES (nested
                # merges of merges would otherwise expand exponentially, uncounted), and a
                # mapping that merges itself (`&a {<<: *a}`) is caught.
                items = self.build(source, path)
                for name, value in items.items():
                    merged.setdefault(name, value)
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            if not isinstance(key_node, ScalarNode):
                raise self.error("keys must be plain text, not a mapping or a list", key_node, path)
            key = self._scalar(key_node, path)
            if not isinstance(key, str):
                raise self.error(f"keys must be text, got {show_value(key)}", key_node, path)
            line = _line(key_node)
            if key in first_line:
                raise self.error(
                    f"duplicate key {key!r} (first on line {first_line[key]})",
                    key_node,
                    (*path, key),
                )
            first_line[key] = line
            self.lines[(*path, key)] = line
            own[key] = self.build(value_node, (*path, key))
        return {**merged, **own}


_SURROGATES = re.compile("[\ud800-\udfff]")


def _short_tag(tag: str) -> str:
    return "!!" + tag[len(_TAG) :] if tag.startswith(_TAG) else tag


def _line_of(lines: dict[Loc, int], loc: Loc) -> int:
    """The line of ``loc``, or of its nearest parent that the file spells out."""
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return 1


def _decode(data: bytes, source: str) -> str:
    if len(data) > MAX_BYTES:
        raise ScenarioError(
            f"the file is larger than {MAX_BYTES // 1024} KiB; a scenario is a small YAML file",
            path=source,
        )
    nul = data.find(b"\0")
    if nul >= 0:
        raise ScenarioError(
            "the file is binary (it contains NUL bytes), not YAML text",
            path=source,
            line=data.count(b"\n", 0, nul) + 1,
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ScenarioError(
            f"the file is not UTF-8 text (byte 0x{data[exc.start]:02x} cannot be decoded)",
            path=source,
            line=data.count(b"\n", 0, exc.start) + 1,
        ) from None


def _check_text(text: str, source: str) -> None:
    if len(text) > MAX_BYTES:
        raise ScenarioError(f"the text is larger than {MAX_BYTES // 1024} KiB", path=source)
    nul = text.find("\0")
    if nul >= 0:
        raise ScenarioError(
            "the text is binary (it contains NUL characters), not YAML",
            path=source,
            line=text.count("\n", 0, nul) + 1,
        )
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise ScenarioError(
            "the text is not valid Unicode (it contains a lone surrogate)",
            path=source,
            line=text.count("\n", 0, exc.start) + 1,
        ) from None
    if size > MAX_BYTES:
        raise ScenarioError(f"the text is larger than {MAX_BYTES // 1024} KiB", path=source)


def _reader_error(exc: yaml.reader.ReaderError, text: str, source: str) -> ScenarioError:
    line = text.count("\n", 0, max(0, exc.position)) + 1
    char = exc.character if isinstance(exc.character, str) else chr(exc.character)
    return ScenarioError(
        f"invalid YAML: the character {char!r} is not allowed in YAML text",
        path=source,
        line=line,
    )


def _compose(loader: _Loader, text: str, source: str) -> Node | None:
    try:
        return loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = int(mark.line) + 1 if mark is not None else None
        problem = exc.problem or exc.context or "malformed"
        if exc.context and exc.problem and exc.problem.startswith("but "):
            # PyYAML splits some messages in two: "expected a single document" + "but found ..."
            problem = f"{exc.context}, {exc.problem}"
        elif exc.context and exc.problem:
            problem = f"{exc.problem} ({exc.context})"
        raise ScenarioError(f"invalid YAML: {problem}", path=source, line=line) from None
    except yaml.reader.ReaderError as exc:
        raise _reader_error(exc, text, source) from None
    except yaml.YAMLError as exc:
        raise ScenarioError(f"invalid YAML: {exc}", path=source) from None
    except RecursionError:
        raise ScenarioError(f"nesting is deeper than {MAX_DEPTH} levels", path=source) from None


def _parse(text: str, source: str) -> Scenario:
    if not text.strip():
        raise ScenarioError(
            "the file is empty; a scenario needs at least 'version: 1' and 'name'",
            path=source,
            line=1,
        )
    try:
        # The reader checks every character of a str up front, in the constructor.
        loader = _Loader(text, source)
    except yaml.reader.ReaderError as exc:
        raise _reader_error(exc, text, source) from None
    try:
        root = _compose(loader, text, source)
        if root is None:
            raise ScenarioError(
                "the file has no YAML document (only comments?); a scenario needs at least "
                "'version: 1' and 'name'",
                path=source,
                line=1,
            )
        if not isinstance(root, MappingNode):
            shape = "a list" if isinstance(root, SequenceNode) else "a single value"
            raise ScenarioError(
                f"expected a mapping of keys (version: 1, name: ...) at the top, got {shape}",
                path=source,
                line=_line(root),
            )
        builder = _Builder(loader)
        builder.lines[()] = _line(root)
        data = builder.build(root, ())
    finally:
        loader.dispose()
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        loc, message = first_error(exc, Scenario)
        raise ScenarioError(
            message, path=source, line=_line_of(builder.lines, loc), field=format_loc(loc) or None
        ) from None


def loads_scenario(text: str | bytes, path: str = "<string>") -> Scenario:
    """Validate a scenario given as text (or bytes); ``path`` names it in error messages.

    Raises :class:`~drillkit.errors.ScenarioError` for anything wrong with it.
    """
    if isinstance(text, bytes):
        return _parse(_decode(text, path), path)
    _check_text(text, path)
    return _parse(text.removeprefix("\ufeff"), path)


def load_scenario(path: str | os.PathLike[str]) -> Scenario:
    """Read and validate a scenario file.

    Raises :class:`~drillkit.errors.ScenarioError` when the file cannot be read or is invalid;
    its message is ``<file>:<line>: <field path>: <what is wrong>``.
    """
    source = os.fspath(path)
    try:
        with open(source, "rb") as handle:
            # One byte past the cap is enough to know it is too big, whatever the file is.
            data = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ScenarioError(f"cannot read the file: {exc.strerror or exc}", path=source) from None
    return _parse(_decode(data, source), source)
