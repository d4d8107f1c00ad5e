"""YAML read as a node tree, so that every value keeps the line it came from.

A config file is read with ``yaml.compose`` rather than ``yaml.safe_load``: the composed nodes carry
their position, so a problem deep inside a file is reported as ``file:line: dotted.path: what to do``
instead of "somewhere in your config". Values are built from nodes with PyYAML's safe constructor
(the same types ``yaml.safe_load`` gives), only once their place is known.

What PyYAML accepts silently but is almost always a mistake is reported too: a key given twice in
one mapping (PyYAML keeps the last one) and a key that is not a string.

Each mapping of a schema is read against a ``Section``: the keys it supports, the keys of Ray Serve's
schema accepted only at a value that changes nothing, and keys that belong elsewhere. Any other key is
reported as unknown, with the closest valid one: a typo must not be dropped as an extra key.

Pure: no Ray, no I/O; the caller passes the text and the name to show for it.
"""

from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, NoReturn, Sequence

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

_MERGE_TAG = "tag:yaml.org,2002:merge"
_STR_TAG = "tag:yaml.org,2002:str"
#: What ``value`` returns for a node it could not read (its problem is recorded): callers skip it.
INVALID: Any = object()


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong in a config file, and where: ``source:line: path: message`` on one line."""

    source: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}: "
        return f"{where}{self.path}: {self.message}" if self.path else where + self.message


class ConfigError(ValueError):
    """A config file that cannot be used, with every problem found in it, one line each.

    ``str(error)`` is ready to show a user as it is (no traceback needed); ``problems`` keeps them apart.
    """

    def __init__(self, problems: Sequence[ConfigProblem]) -> None:
        self.problems: tuple[ConfigProblem, ...] = tuple(problems)
        super().__init__("\n".join(str(problem) for problem in self.problems))


class Problems:
    """Collects a file's problems, so that one run shows the user all of them rather than one per try."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._found: list[ConfigProblem] = []

    def add(self, where: Node | int, path: str, message: str) -> None:
        """Record ``message`` about ``path`` at a node (its first line) or a 1-based line number."""
        line = where if isinstance(where, int) else line_of(where)
        problem = ConfigProblem(self.source, line, path, " ".join(message.split()))
        if problem not in self._found:  # a merged (``<<: *anchor``) mapping is read once per use
            self._found.append(problem)

    def __len__(self) -> int:
        return len(self._found)

    def raise_if_any(self) -> None:
        if self._found:
            self.stop()

    def stop(self) -> NoReturn:
        """Raise ConfigError with every problem found so far, in the order of the file's lines."""
        raise ConfigError(sorted(self._found, key=lambda problem: problem.line))


@dataclass(frozen=True)
class Entry:
    """One ``key: value`` of a mapping: the dotted path to it, the line of its key, and its value node."""

    path: str
    line: int
    node: Node


def line_of(node: Node) -> int:
    """The 1-based line a node starts on."""
    return node.start_mark.line + 1


def child_path(path: str, key: str | int) -> str:
    """``http_options`` + ``port`` -> ``http_options.port``; ``applications`` + ``1`` -> ``applications[1]``."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def closest(name: str, valid: Iterable[str]) -> str | None:
    """The valid name ``name`` was most likely meant to be (a typo), or None if none is close."""
    found = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    return found[0] if found else None


def did_you_mean(name: str, valid: Iterable[str]) -> str:
    """`` Did you mean 'x'?`` when a valid name is close to ``name``, else the empty string."""
    guess = closest(name, valid)
    return f" Did you mean '{guess}'?" if guess else ""


def compose(text: str, problems: Problems) -> Node:
    """The document's root node. A syntax error or an empty file stops there: nothing else can be read."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        opened = ""
        if exc.context and exc.context_mark is not None and mark is not exc.context_mark:
            opened = f" ({exc.context}, which starts on line {exc.context_mark.line + 1})"
        problems.add(mark.line + 1 if mark else 1, "", f"not valid YAML: {exc.problem}{opened}. Fix the syntax there.")
        problems.stop()
    except yaml.YAMLError as exc:  # unmarked: e.g. a character YAML does not allow
        problems.add(1, "", f"not valid YAML: {exc}. Fix the file's syntax.")
        problems.stop()
    if root is None:
        problems.add(1, "", "the file is empty. A Serve config lists its applications under 'applications:'.")
        problems.stop()
    return root


def mapping(node: Node, path: str, problems: Problems, what: str) -> dict[str, Entry] | None:
    """The entries of a mapping node in file order; None (problem recorded) if ``node`` is not a mapping.

    Merge keys (``<<: *defaults``) are applied as ``yaml.safe_load`` applies them: a key written in the
    mapping itself overrides a merged one. A key written twice in the mapping itself is a problem.
    """
    if not isinstance(node, MappingNode):
        problems.add(node, path, f"must be a mapping of {what}, got {describe(node)}.")
        return None
    merged: dict[str, Entry] = {}
    own: dict[str, Entry] = {}
    for key_node, value_node in node.value:
        if key_node.tag == _MERGE_TAG:
            sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
            for source in reversed(sources):  # of several merged mappings, the first one wins
                merged.update(mapping(source, path, problems, what) or {})
            continue
        if not isinstance(key_node, ScalarNode) or key_node.tag != _STR_TAG:
            problems.add(key_node, path, f"keys must be names (strings), got {describe(key_node)}.")
            continue
        entry = Entry(child_path(path, key_node.value), line_of(key_node), value_node)
        if key_node.value in own:
            problems.add(key_node, entry.path, _twice(own[key_node.value].line))
        own[key_node.value] = entry
    return {**merged, **own}


def sequence(node: Node, path: str, problems: Problems, what: str) -> list[Entry] | None:
    """The items of a sequence node; None (problem recorded) if ``node`` is not a list."""
    if not isinstance(node, SequenceNode):
        problems.add(node, path, f"must be a list of {what}, got {describe(node)}.")
        return None
    return [Entry(child_path(path, i), line_of(item), item) for i, item in enumerate(node.value)]


def value(entry: Entry, problems: Problems) -> Any:
    """The Python value of ``entry`` as ``yaml.safe_load`` builds it, or INVALID (problem recorded).

    Keys given twice anywhere below are reported first: in free-form values (``args``, ``user_config``)
    PyYAML would otherwise drop one without a word.
    """
    before = len(problems)
    _check_nested_keys(entry.node, entry.path, problems)
    if len(problems) > before:
        return INVALID
    try:  # on a copy: the constructor rewrites merge keys in place, and the tree is read again later
        return yaml.constructor.SafeConstructor().construct_object(copy.deepcopy(entry.node), deep=True)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problems.add(mark.line + 1 if mark else entry.line, entry.path,
                     f"cannot be read: {exc.problem}. Use plain YAML values: mappings, lists and scalars, "
                     "without tags or an anchor used inside itself.")
        return INVALID


def _check_nested_keys(node: Node, path: str, problems: Problems, seen: set[int] | None = None) -> None:
    """Report keys given twice in any mapping below ``node`` (any key type: free-form values may use numbers).

    A node reached again through an alias is checked once: aliases may nest (each level multiplying the paths
    to walk) or point back up (a value containing itself, which ``yaml.safe_load`` builds).
    """
    seen = set() if seen is None else seen
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, MappingNode):
        first_lines: dict[tuple[str, str], int] = {}
        for key, item in node.value:
            if key.tag == _MERGE_TAG or not isinstance(key, ScalarNode):
                continue  # a merged mapping is checked where it is written
            item_path = child_path(path, key.value)
            if (key.tag, key.value) in first_lines:
                problems.add(key, item_path, _twice(first_lines[(key.tag, key.value)]))
            first_lines[(key.tag, key.value)] = line_of(key)
            _check_nested_keys(item, item_path, problems, seen)
    elif isinstance(node, SequenceNode):
        for i, item in enumerate(node.value):
            _check_nested_keys(item, child_path(path, i), problems, seen)


def _twice(first_line: int) -> str:
    return f"given twice (also on line {first_line}); YAML would silently keep only this one. Remove one of them."


def describe(node: Node) -> str:
    """How a user would name what a node holds: ``a list``, ``a mapping``, ``null``, ``'text'``."""
    if isinstance(node, SequenceNode):
        return "a list"
    if isinstance(node, MappingNode):
        return "a mapping"
    if node.tag == "tag:yaml.org,2002:null":
        return "null"
    return repr(node.value) if node.tag == _STR_TAG else node.value


@dataclass(frozen=True)
class Section:
    """The keys one mapping of the file may hold, by how serve_nb treats them."""

    what: str
    #: Read, checked and used.
    supported: tuple[str, ...]
    #: Ray Serve keys serve_nb does not implement, with the value besides null that is accepted because
    #: serve_nb behaves that way anyway (None: null only; a mapping: any of its keys at their values).
    unsupported: Mapping[str, Any]
    #: Keys that belong elsewhere: what to do instead.
    moved: Mapping[str, str]


def read_section(entries: dict[str, Entry], section: Section, problems: Problems) -> dict[str, Entry]:
    """The supported entries; unknown and moved keys, and unsupported ones not at their defaults, are problems."""
    for key, entry in entries.items():
        if key in section.moved:
            problems.add(entry.line, entry.path, section.moved[key])
        elif key in section.unsupported:
            got = value(entry, problems)
            if got is not INVALID and not changes_nothing(got, section.unsupported[key]):
                default = section.unsupported[key]
                keep = f" or leave it at Ray Serve's default {show(default, cut=None)}" if default is not None else ""
                problems.add(entry.line, entry.path, f"serve_nb does not support {key} yet (got {show(got)}). "
                                                     f"Remove it (or set it to null){keep}.")
        elif key not in section.supported:
            valid = [*section.supported, *section.unsupported, *section.moved]
            problems.add(entry.line, entry.path, f"unknown field '{key}' in the {section.what}."
                         f"{did_you_mean(key, valid)} Valid fields: {', '.join(section.supported)}.")
    return {key: entry for key, entry in entries.items() if key in section.supported}


def changes_nothing(got: Any, default: Any) -> bool:
    """True if ``got`` is null, ``default``, or (for a mapping default) some of its keys at their values."""
    if got is None or default is None:
        return got is None
    if isinstance(default, Mapping):
        return isinstance(got, Mapping) and all(k in default and changes_nothing(v, default[k]) for k, v in got.items())
    if isinstance(default, list):
        return isinstance(got, list) and len(got) == len(default) and all(map(changes_nothing, got, default))
    if isinstance(default, bool) or isinstance(got, bool):
        return got is default  # ``true`` is not ``1``
    return bool(got == default)


def show(got: Any, cut: int | None = 80) -> str:
    """A value as YAML on one line, cut after ``cut`` characters: messages stay short however big the value."""
    text = yaml.safe_dump(got, default_flow_style=True, width=10**6, sort_keys=False).strip()
    text = text.removesuffix("...").strip()
    return text if cut is None or len(text) <= cut else text[:cut - 3] + "..."


def values(entries: Mapping[str, Entry], problems: Problems) -> dict[str, Any]:
    """``{key: value}`` of ``entries``, leaving out those that could not be read (already reported)."""
    found = {key: value(entry, problems) for key, entry in entries.items()}
    return {key: got for key, got in found.items() if got is not INVALID}
