"""MQTT topic filters: validation, matching, and whether one filter covers another. Pure.

An ACL is a tuple of topic filters. A client may publish to a topic that one of
its ``publish`` filters matches, and subscribe with a filter that one of its
``subscribe`` filters covers (every topic the requested filter can match is
matched by the allowed one). ``{client}`` in a filter stands for the client's
own id. Topics under ``gatewayd/`` are the gateway's own: no client may
publish there, whatever its ACL says.
"""

from __future__ import annotations

from collections.abc import Iterable

RESERVED_PREFIX = "gatewayd/"
CLIENT_PLACEHOLDER = "{client}"


def filter_problem(text: str) -> str | None:
    """Why ``text`` is not a valid MQTT topic filter, or None when it is."""
    if not text:
        return "an empty topic filter"
    if len(text.encode()) > 65535:
        return "a topic filter longer than 65535 bytes"
    if "\x00" in text:
        return "a NUL character in a topic filter"
    levels = text.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return "'#' must be a whole level and the last one"
        if "+" in level and level != "+":
            return "'+' must be a whole level"
    return None


def topic_problem(topic: str) -> str | None:
    """Why ``topic`` is not a valid topic name to publish to, or None when it is."""
    if not topic:
        return "an empty topic"
    if "+" in topic or "#" in topic:
        return "a wildcard in a topic name"
    if topic.startswith("$"):
        return "a topic starting with '$'"
    if "\x00" in topic:
        return "a NUL character in a topic"
    return None


def expand(filters: Iterable[str], client: str) -> tuple[str, ...]:
    """The filters with ``{client}`` replaced by the client id."""
    return tuple(f.replace(CLIENT_PLACEHOLDER, client) for f in filters)


def matches(topic: str, topic_filter: str) -> bool:
    """True when ``topic`` (a topic name) matches ``topic_filter`` (MQTT 3.1.1 §4.7)."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    t_levels = topic.split("/")
    f_levels = topic_filter.split("/")
    for i, level in enumerate(f_levels):
        if level == "#":
            return True
        if i >= len(t_levels):
            return False
        if level != "+" and level != t_levels[i]:
            return False
    return len(t_levels) == len(f_levels)


def covers(allowed: str, requested: str) -> bool:
    """True when every topic that ``requested`` matches is matched by ``allowed``."""
    a_levels = allowed.split("/")
    r_levels = requested.split("/")
    if requested.startswith("$") and allowed[:1] in ("+", "#"):
        return False
    for i, a in enumerate(a_levels):
        if a == "#":
            return True
        if i >= len(r_levels):
            return False
        r = r_levels[i]
        if r == "#":
            return False  # requested spans more levels than a non-'#' allowed filter
        if a == "+":
            continue
        if r == "+" or a != r:
            return False
    return len(a_levels) == len(r_levels)


def may_publish(topic: str, allowed: Iterable[str]) -> bool:
    if topic.startswith(RESERVED_PREFIX) or topic_problem(topic) is not None:
        return False
    return any(matches(topic, f) for f in allowed)


def may_subscribe(requested: str, allowed: Iterable[str]) -> bool:
    if filter_problem(requested) is not None:
        return False
    return any(covers(f, requested) for f in allowed)


def may_receive(topic: str, allowed: Iterable[str]) -> bool:
    return any(matches(topic, f) for f in allowed)
