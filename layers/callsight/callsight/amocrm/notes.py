"""amoCRM call notes as typed values: tolerant of what real accounts send, strict about what a call needs.

A note's payload is untrusted (any JSON value). :func:`parse_call_note` returns a :class:`CallNote` or a
:class:`RejectedNote` naming the field and what was wrong with it; it never raises.

Tolerated (the official PHP library types these loosely and integrations send what they like): ids, timestamps
and ``call_status`` as strings (``"61204123"``) or integral floats; ``duration`` as ``int|string`` with
fractions (``"12.5"`` is 12 whole seconds); ``call_responsible`` as a user id, a user's name or a phone
number; ``params`` missing or ``null``; any optional field missing or of an odd type (it is then left empty).
Required: a positive ``id``, a plausible ``created_at`` (a value in milliseconds is converted to seconds,
and the note says so: ``created_at_in_ms``), ``note_type`` ``call_in``/``call_out``, ``params`` an object
when present, a ``duration`` that is a number of seconds between 0 and 24 h, a ``link`` that is a string.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError, model_validator
from pydantic_core import PydanticCustomError

#: a call longer than this is a broken value, not a call
MAX_CALL_SECONDS: Final = 24 * 3600
#: plausible call times (unix seconds): amoCRM did not exist before 2000; 2100 is far beyond any clock skew
EARLIEST_CALL_TIME: Final = 946_684_800  # 2000-01-01
LATEST_CALL_TIME: Final = 4_102_444_800  # 2100-01-01
#: text fields are cut to this many characters (a DynamoDB item holds 400 KB; nobody needs more)
MAX_TEXT: Final = 1000
MAX_LINK: Final = 4096
_INTEGER = re.compile(r"[+-]?\d{1,19}")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")
_PHONE_MARKS = re.compile(r"[\s()\-.]")
#: how many digits make a bare number a phone rather than a user id (amoCRM user ids have 7-8 digits)
_PHONE_DIGITS: Final = 10


class Reject(StrEnum):
    """Why a note returned by the API does not become a call (the counted reason)."""

    NOT_AN_OBJECT = "not_an_object"
    BAD_ID = "bad_id"
    BAD_CREATED_AT = "bad_created_at"
    BAD_NOTE_TYPE = "bad_note_type"
    BAD_PARAMS = "bad_params"
    BAD_DURATION = "bad_duration"
    BAD_LINK = "bad_link"


#: when a note has several problems, the first of these names it
_PRIORITY: Final = (Reject.BAD_ID, Reject.BAD_CREATED_AT, Reject.BAD_NOTE_TYPE, Reject.BAD_PARAMS,
                    Reject.BAD_DURATION, Reject.BAD_LINK)


def _kind(value: Any) -> str:
    """A value's JSON type, for messages (never the value of a string: it may be personal data)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"the number {value!r}"[:40]
    if isinstance(value, str):
        return "an empty string" if not value.strip() else f"a string of {len(value)} character(s)"
    if isinstance(value, list):
        return "a list"
    return "an object" if isinstance(value, dict) else type(value).__name__


def _as_integer(value: Any) -> int | None:
    """An int, an integral finite float or a string of digits as an int; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value.is_integer() else None
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        return int(value.strip())
    return None


def _as_number(value: Any) -> float | None:
    """An int, a finite float or a decimal string (``"12.5"``) as a float; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        number = float(value.strip())
    else:
        return None
    return number if math.isfinite(number) else None


def _fail(reason: Reject, problem: str) -> PydanticCustomError:
    return PydanticCustomError(reason.value, problem)


# ------------------------------------------------------------------------------------------------ validators
def _note_id(value: Any) -> int:
    number = _as_integer(value)
    if number is None or number <= 0:
        raise _fail(Reject.BAD_ID, f"id: {_kind(value)}, not a positive integer")
    return number


def _created_at(value: Any) -> int:
    number = _as_integer(value)
    if number is None:
        raise _fail(Reject.BAD_CREATED_AT, f"created_at: {_kind(value)}, not unix seconds")
    if number < 0:
        raise _fail(Reject.BAD_CREATED_AT, f"created_at: negative ({number})")
    if not EARLIEST_CALL_TIME <= number < LATEST_CALL_TIME:
        raise _fail(Reject.BAD_CREATED_AT, f"created_at: {number} is not a plausible call time")
    return number


def _lenient_time(value: Any) -> int | None:
    number = _as_integer(value)
    if number is not None and EARLIEST_CALL_TIME * 1000 <= number < LATEST_CALL_TIME * 1000:
        number //= 1000
    return number if number is not None and EARLIEST_CALL_TIME <= number < LATEST_CALL_TIME else None


def _lenient_id(value: Any) -> int | None:
    number = _as_integer(value)
    return number if number is not None and number > 0 else None


def _note_type(value: Any) -> str:
    if value not in ("call_in", "call_out"):
        shown = f"'{value[:20]}'" if isinstance(value, str) and value.strip() else _kind(value)
        raise _fail(Reject.BAD_NOTE_TYPE, f"note_type: {shown}, not call_in or call_out")
    return str(value)


def _params(value: Any) -> Any:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _fail(Reject.BAD_PARAMS, f"params: {_kind(value)}, not an object")
    return value


def _duration(value: Any) -> int:
    if value is None or (isinstance(value, str) and not value.strip()):
        return 0
    number = _as_number(value)
    if number is None:
        raise _fail(Reject.BAD_DURATION, f"duration: {_kind(value)}, not a number of seconds")
    if number < 0:
        raise _fail(Reject.BAD_DURATION, f"duration: negative ({number:g})")
    if number > MAX_CALL_SECONDS:
        raise _fail(Reject.BAD_DURATION, f"duration: {number:g} s is over {MAX_CALL_SECONDS} s")
    return int(number)  # whole seconds


def _link(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _fail(Reject.BAD_LINK, f"link: {_kind(value)}, not a URL string")
    link = value.strip()
    if len(link) > MAX_LINK:
        raise _fail(Reject.BAD_LINK, f"link: {len(link)} characters, over {MAX_LINK}")
    return link or None


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value.strip()[:MAX_TEXT]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return ""


def _optional_text(value: Any) -> str | None:
    return _text(value) or None


def _call_status(value: Any) -> int | None:
    number = _as_integer(value)
    return number if number is not None and 1 <= number <= 8 else None


def _responsible(value: Any) -> int | str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return _as_integer(value)
    if isinstance(value, str):
        return value.strip()[:MAX_TEXT] or None
    return None


# ------------------------------------------------------------------------------------------------ models
class CallParams(BaseModel):
    """A call note's ``params``: every field optional; odd optional values become empty."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    uniq: Annotated[str | None, BeforeValidator(_optional_text)] = None
    duration: Annotated[int, BeforeValidator(_duration)] = 0
    link: Annotated[str | None, BeforeValidator(_link)] = None
    phone: Annotated[str, BeforeValidator(_text)] = ""
    source: Annotated[str, BeforeValidator(_text)] = ""
    call_result: Annotated[str, BeforeValidator(_text)] = ""
    call_status: Annotated[int | None, BeforeValidator(_call_status)] = None
    #: as sent: a user id, a user's name or a phone number (see :func:`resolve_responsible`)
    call_responsible: Annotated[int | str | None, BeforeValidator(_responsible)] = None


class CallNote(BaseModel):
    """One ``call_in`` / ``call_out`` note of a lead, contact, company or customer."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    entity_type: str
    id: Annotated[int, BeforeValidator(_note_id)]
    created_at: Annotated[int, BeforeValidator(_created_at)]
    note_type: Annotated[Literal["call_in", "call_out"], BeforeValidator(_note_type)]
    params: Annotated[CallParams, BeforeValidator(_params)] = CallParams()
    updated_at: Annotated[int | None, BeforeValidator(_lenient_time)] = None
    entity_id: Annotated[int | None, BeforeValidator(_lenient_id)] = None
    responsible_user_id: Annotated[int | None, BeforeValidator(_lenient_id)] = None
    #: ``created_at`` arrived in milliseconds and was converted to seconds
    created_at_in_ms: bool = False

    @model_validator(mode="before")
    @classmethod
    def _milliseconds(cls, data: Any) -> Any:
        """A ``created_at`` that is only plausible in milliseconds is unambiguous: convert it, and say so."""
        if isinstance(data, dict):
            number = _as_integer(data.get("created_at"))
            if number is not None and EARLIEST_CALL_TIME * 1000 <= number < LATEST_CALL_TIME * 1000:
                data = {**data, "created_at": number // 1000, "created_at_in_ms": True}
            else:
                data = {**data, "created_at_in_ms": False}
        return data

    @property
    def direction(self) -> str:
        return "incoming" if self.note_type == "call_in" else "outgoing"

    @property
    def last_change(self) -> int:
        """``updated_at``, never before the call (a missing or odd one is the call time)."""
        return max(self.updated_at or 0, self.created_at)


@dataclass(frozen=True, slots=True)
class RejectedNote:
    """A note that did not become a call: the counted ``reason`` and, for the log, what was wrong."""

    entity_type: str
    note_id: int | None
    reason: str
    problem: str

    def describe(self) -> str:
        where = f"{self.entity_type}:{self.note_id}" if self.note_id is not None else f"{self.entity_type}:?"
        return f"{where} {self.problem}"


def parse_call_note(entity_type: str, payload: Any) -> CallNote | RejectedNote:
    """The call note in ``payload`` (any JSON value), or why it is not one. Never raises."""
    if not isinstance(payload, dict):
        return RejectedNote(entity_type, None, Reject.NOT_AN_OBJECT.value, f"the note is {_kind(payload)}")
    note_id = _lenient_id(payload.get("id"))
    try:
        return CallNote.model_validate({**payload, "entity_type": entity_type})
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
    found = {str(e["type"]): str(e["msg"]) for e in reversed(errors)}
    for reason in _PRIORITY:
        if reason.value in found:
            return RejectedNote(entity_type, note_id, reason.value, found[reason.value])
    first = errors[0]  # not one of ours: name the field pydantic names
    field = ".".join(str(part) for part in first["loc"]) or "note"
    return RejectedNote(entity_type, note_id, f"bad_{first['loc'][0]}" if first["loc"] else "bad_note",
                        f"{field}: {first['msg']}")


# ------------------------------------------------------------------------------------------------ responsible
@dataclass(frozen=True, slots=True)
class Responsible:
    """Who handled the call: the amoCRM user (when known) and the name to show."""

    user_id: int | None
    name: str
    kind: Literal["user", "name", "phone", "unknown"]


def _looks_like_phone(text: str) -> bool:
    compact = _PHONE_MARKS.sub("", text)
    digits = compact.removeprefix("+")
    return digits.isdigit() and (compact.startswith("+") or compact != text or len(digits) >= _PHONE_DIGITS)


def resolve_responsible(note: CallNote, users: dict[int, str]) -> Responsible:
    """``params.call_responsible`` read as amoCRM stores it: a user id (an int or digits) is that user; a phone
    number stays a phone (no administrator is guessed for it); any other text is the administrator's name (and
    the user of that name, if there is one). Without it, the note's ``responsible_user_id``."""
    raw = note.params.call_responsible
    if raw is None:
        user = note.responsible_user_id
        return Responsible(user, users.get(user, ""), "user") if user else Responsible(None, "", "unknown")
    text = str(raw)
    number = _as_integer(raw)
    if number is not None and number in users:
        return Responsible(number, users[number], "user")
    if _looks_like_phone(text):
        return Responsible(None, "", "phone")
    if number is not None:
        return Responsible(number, "", "user") if number > 0 else Responsible(None, "", "unknown")
    by_name = {name.casefold(): user for user, name in users.items() if name}
    return Responsible(by_name.get(text.casefold()), text, "name")
