"""The DDS input of a job: its settings (MINOS-style ``DDSKeepUpMode=All``) and the subscription they make."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

from dispatcher.compression import CODECS
from dispatcher.subscription import KeepUp, Subscription, SubscriptionError
from dispatcher.suggest import did_you_mean

from ..client import DDSClient
from ..errors import DDSError, MessageType
from ..failover import server_list, server_text

__all__ = ["DEFAULT_TIMEOUT", "SETTINGS", "InputModule", "Setting"]

DEFAULT_TIMEOUT = 120.0  # seconds, as in MINOS


# ----------------------------------------------------------------------------- parsers


def _text(value: Any) -> str:
    return str(value).strip()


def _streams(value: Any) -> tuple:
    if isinstance(value, str):
        value = [s.strip() for s in value.split(",")]
    names = tuple(s for s in value if s)
    if not names:
        raise ValueError("DDSStreams needs at least one stream name, e.g. DDSStreams=DaqSnarl,DaqMonitor")
    return names


def _keep_up(value: Any) -> KeepUp:
    try:
        return KeepUp.parse(value)
    except SubscriptionError as exc:
        raise ValueError(f"DDSKeepUpMode: {exc}") from None


def _seconds(what: str) -> Callable[[Any], float]:
    def parse(value: Any) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{what} must be a number of seconds, not {value!r}") from None
        if not number > 0 or math.isinf(number):
            raise ValueError(f"{what} must be a positive number of seconds, not {value!r}")
        return number

    return parse


def _count(what: str) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ValueError(f"{what} must be a whole number, not {value!r}") from None
        if number < 1:
            raise ValueError(f"{what} must be at least 1, not {value!r}")
        return number

    return parse


def _server(value: Any) -> str:
    # one server or a list of them (a list, or "hostA:9090,hostB:9091"), tried in order
    return server_text(server_list(value))  # an IPv6 address keeps its brackets


def _flag(value: Any) -> bool:
    text = str(value).strip().lower()
    if isinstance(value, bool) or text in ("true", "false", "yes", "no", "on", "off", "1", "0"):
        return value if isinstance(value, bool) else text in ("true", "yes", "on", "1")
    raise ValueError(f"expected true or false, not {value!r}")


def _compression(value: Any) -> str | None:
    text = "" if value is None else str(value).strip().lower()
    if text in ("", "none"):
        return None
    if text not in CODECS:
        raise ValueError(f"DDSCompression must be one of {', '.join(CODECS)} or none, not {value!r}")
    return text


def _selection(value: Any) -> str | dict | None:
    if value is None or isinstance(value, dict):
        return value
    text = _text(value)
    return text or None


def _branches(value: Any) -> list | dict | None:
    if value is None or isinstance(value, dict):
        return value
    if isinstance(value, str):
        value = [b.strip() for b in value.split(",") if b.strip()]
    return list(value)


def _optional_name(value: Any) -> str | None:
    text = _text(value) if value is not None else ""
    return text or None


# ----------------------------------------------------------------------------- the table


class Setting(NamedTuple):
    """One input setting: its MINOS-style key, how its value is read, its default and meaning."""

    key: str
    parse: Callable[[Any], Any]
    default: Any
    meaning: str


#: setting -> (MINOS-style key, parser, default, meaning)
SETTINGS: dict[str, Setting] = {
    "server": Setting("DDSServer", _server, "localhost:9090",
                      "host:port of the ddsparentserver, or several, comma-separated, tried in order"),
    "resume": Setting("DDSResume", _flag, False,
                      "when the server goes away, reconnect (to the server list) and continue where the job was"),
    "compression": Setting("DDSCompression", _compression, None, "zstd or lz4: record data compressed on the wire"),
    "streams": Setting("DDSStreams", _streams, ("DaqSnarl",), "comma-separated stream (tree) names"),
    "keep_up": Setting("DDSKeepUpMode", _keep_up, KeepUp.FILE,
                       "All, FileKeepUp or RecordKeepUp (all, file, record)"),
    "timeout": Setting("DDSTimeOut", _seconds("DDSTimeOut"), DEFAULT_TIMEOUT,
                       "seconds to wait for the next record set; the run ends when it passes"),
    "selection": Setting("DDSSelection", _selection, None, "a selection cut, run on the server"),
    "branches": Setting("DDSBranches", _branches, None, "comma-separated branches to receive (default all)"),
    "start": Setting("DDSStart", _text, "current", "current, oldest, latest or a file name"),
    "prescale": Setting("DDSPrescale", _count("DDSPrescale"), 1, "deliver every n-th passing record per stream"),
    "sync": Setting("DDSSync", _optional_name, None, "branch to build record sets across streams on"),
    "max_sync_delay": Setting("DDSMaxSyncDelay", _seconds("DDSMaxSyncDelay"), 2.0,
                              "seconds to wait for a stream missing from a synced set"),
    "advance_by": Setting("DDSAdvanceBy", _count("DDSAdvanceBy"), 1,
                          "take every n-th record set, skipping the others"),
    "connect_timeout": Setting("DDSConnectTimeOut", _seconds("DDSConnectTimeOut"), 10.0,
                               "seconds to wait for the server to answer the connection"),
}

# Every spelling a setting answers to: the MINOS key in any case, the keyword, the keyword without '_'.
_BY_KEY: dict[str, str] = {}
for _name, _setting in SETTINGS.items():
    _BY_KEY[_setting.key.lower()] = _name
    _BY_KEY[_name] = _name
    _BY_KEY[_name.replace("_", "")] = _name


def setting_name(key: str) -> str:
    """The keyword name of the setting ``key`` names (``"DDSKeepUpMode"`` -> ``"keep_up"``).

    Raises:
        ValueError: no setting is called that, naming the closest and every MINOS-style key.
    """
    name = _BY_KEY.get(key.strip().lower()) or _BY_KEY.get(key.strip().lower().replace("_", ""))
    if name is None:
        known = [setting.key for setting in SETTINGS.values()]
        raise ValueError(f"unknown input setting {key!r}; {did_you_mean(key.strip(), known, kind='settings')}")
    return name


# ----------------------------------------------------------------------------- the input module


class InputModule:
    """The DDS input of a job: which server, and the subscription (MINOS's ``JobC::Input``).

    Settings are strings ``"DDSKeepUpMode=All"`` or keywords ``keep_up="all"``;
    :data:`SETTINGS` lists them all with their MINOS-style keys.
    """

    def __init__(self) -> None:
        self.settings: dict[str, Any] = {name: setting.default for name, setting in SETTINGS.items()}

    def set(self, *settings: str, **keywords: Any) -> InputModule:
        """Change settings: ``set("DDSTimeOut=120", "DDSStreams=DaqSnarl,DaqMonitor", keep_up="all")``.

        Raises:
            ValueError: an unknown setting or a value that cannot be right, naming both.
        """
        for text in settings:
            if not isinstance(text, str) or "=" not in text:
                raise ValueError(f"an input setting reads KEY=VALUE (e.g. 'DDSKeepUpMode=All'), not {text!r}")
            key, _, value = text.partition("=")
            self._set(key, value)
        for key, value in keywords.items():
            self._set(key, value)
        return self

    Set = set  # the MINOS spelling

    def _set(self, key: str, value: Any) -> None:
        name = setting_name(key)
        self.settings[name] = SETTINGS[name].parse(value)

    def __getattr__(self, name: str) -> Any:
        settings = self.__dict__.get("settings")
        if settings is not None and name in settings:
            return settings[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def subscription(self) -> Subscription:
        """The subscription these settings make."""
        s = self.settings
        branches = s["branches"]
        if isinstance(branches, list):
            branches = {stream: branches for stream in s["streams"]}
        try:
            return Subscription(streams=s["streams"], keep_up=s["keep_up"], selection=s["selection"],
                                branches=branches, start=s["start"], prescale=s["prescale"], sync=s["sync"],
                                max_sync_delay=s["max_sync_delay"])
        except SubscriptionError as exc:
            raise DDSError(str(exc), MessageType.BAD_SUBSCRIPTION) from None

    def connect(self) -> DDSClient:
        """A client connected to the server and subscribed."""
        subscription = self.subscription()
        client = DDSClient(server_list(self.settings["server"]), connect_timeout=self.settings["connect_timeout"],
                           resume=self.settings["resume"], compression=self.settings["compression"])
        try:
            client.subscribe(subscription)
        except BaseException:
            client.close()
            raise
        return client

    def describe(self) -> str:
        """The settings in one line, for logs: ``server localhost:9090, streams DaqSnarl, ...``."""
        s = self.settings
        sel = s["selection"]
        parts = [f"server {s['server']}", f"streams {','.join(s['streams'])}", f"keep-up {s['keep_up'].value}",
                 f"start {s['start']}", f"timeout {s['timeout']:g} s"]
        if sel:
            parts.append(f"selection {sel!r}")
        if s["prescale"] > 1:
            parts.append(f"prescale {s['prescale']}")
        if s["sync"]:
            parts.append(f"sync on {s['sync']}")
        return ", ".join(parts)

    def __repr__(self) -> str:
        return f"<InputModule {self.describe()}>"
