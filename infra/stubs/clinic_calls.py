"""Deterministic, realistic demo data: a month of a Russian clinic's calls, as amoCRM call notes.

Pure module (no I/O). The same arguments always give the same calls; when ``now`` is not given it is
anchored to the start of the current UTC day, so one day gives one data set.

Each answered call carries a :class:`Scenario`: what the call was about, who spoke, whether the
patient was booked, how well the administrator worked, and the dialogue itself (``script``), which a
stub transcription service returns as the "transcript".
"""

from __future__ import annotations

import hashlib
import random
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any, Final, Literal, TypeVar

T = TypeVar("T")
MSK: Final = timezone(timedelta(hours=3), "MSK")  # Europe/Moscow is UTC+3 all year (since 2014)
CLINIC_NAME: Final = "Клиника «Здоровье»"
CLINIC_SUBDOMAIN: Final = "demo"
CLINIC_TIMEZONE: Final = "Europe/Moscow"
ACCOUNT_ID: Final = 30114578
RECORDING_SOURCE: Final = "Mango Office"
DEFAULT_SEED: Final = 20261128

CallType = Literal[
    "booking", "reschedule", "cancellation", "price_question", "test_results", "complaint", "other", "spam"
]
NoteType = Literal["call_in", "call_out"]
EntityType = Literal["leads", "contacts", "companies", "customers"]
#: how a note's ``params.call_responsible`` carries the administrator: the user id (a number, or digits in a
#: string), the user's name, or the administrator's phone (amoCRM stores what the telephony sent)
ResponsibleForm = Literal["id", "id_text", "name", "phone"]
#: how a note's ``params.duration`` is written: a number, digits in a string ("37"), a fraction ("37.5")
DurationForm = Literal["int", "text", "fraction"]
Speaker = Literal["administrator", "patient"]
#: the container of a call's recording file
RecordingFormat = Literal["mp3", "wav", "ogg"]
RECORDING_CONTENT_TYPES: Final[dict[RecordingFormat, str]] = {
    "mp3": "audio/mpeg",
    "wav": "audio/wav",
    "ogg": "audio/ogg",
}
#: how the telephony stores recordings: mostly MP3 (the amoCRM player plays only MP3), some WAV, some OGG/Opus
RECORDING_FORMAT_SHARES: Final[dict[RecordingFormat, float]] = {"mp3": 0.70, "wav": 0.18, "ogg": 0.12}
MP3_BITRATES_KBPS: Final = (16, 24, 32)
#: the share of answered calls that are very long (25 to 60 minutes: a consultation, a complaint escalated)
VERY_LONG_SHARE: Final = 0.025
VERY_LONG_SECONDS: Final = (1500, 3600)

CALL_TYPES: Final[tuple[CallType, ...]] = (
    "booking",
    "reschedule",
    "cancellation",
    "price_question",
    "test_results",
    "complaint",
    "other",
    "spam",
)
NOTE_TYPES: Final[tuple[NoteType, ...]] = ("call_in", "call_out")
ENTITY_TYPES: Final[tuple[EntityType, ...]] = ("leads", "contacts", "companies", "customers")

CALL_STATUS_LEFT_MESSAGE: Final = 1
CALL_STATUS_CALL_BACK: Final = 2
CALL_STATUS_NOT_AVAILABLE: Final = 3
CALL_STATUS_CONVERSATION: Final = 4
CALL_RESULTS: Final[dict[int, str]] = {
    CALL_STATUS_LEFT_MESSAGE: "Оставил сообщение",
    CALL_STATUS_CALL_BACK: "Перезвонить",
    CALL_STATUS_NOT_AVAILABLE: "Абонент недоступен",
    CALL_STATUS_CONVERSATION: "Разговор состоялся",
}

#: Phrase every booked call's confirmation contains (and no other call does).
BOOKING_CONFIRMATION_MARKER: Final = "вы записаны"
#: Reasons a call ended without a booking (``Scenario.not_booked_reason``).
REASON_EXPENSIVE: Final = "дорого"
REASON_NO_SLOT: Final = "нет удобного времени"
REASON_THINKING: Final = "хочет подумать"
REASON_DOCTOR_AWAY: Final = "нужный врач в отпуске"
REASON_PRICE_ONLY: Final = "уточнял только цену"
REASON_CANCELLED: Final = "пациент отменил визит"
REASON_UNHAPPY: Final = "недоволен обслуживанием"
REASON_NOT_OFFERED: Final = "администратор не предложил запись"


# --------------------------------------------------------------------------------------- people


@dataclass(frozen=True)
class Administrator:
    """A clinic administrator (an amoCRM user)."""

    id: int
    name: str
    female: bool
    email: str
    diligence: float  # 0..1: how reliably the administrator follows the call script
    shift_weight: float  # share of the calls the administrator handles
    phone: str = ""  # the administrator's line, as some telephony integrations put it in call_responsible

    @property
    def first_name(self) -> str:
        return self.name.split()[0]


ADMINISTRATORS: Final[tuple[Administrator, ...]] = (
    Administrator(1000001, "Анна Смирнова", True, "a.smirnova@zdorovie-clinic.ru", 0.93, 0.27, "+7 495 120-45-01"),
    Administrator(1000002, "Ольга Кузнецова", True, "o.kuznetsova@zdorovie-clinic.ru", 0.84, 0.24, "+7 495 120-45-02"),
    Administrator(1000003, "Екатерина Попова", True, "e.popova@zdorovie-clinic.ru", 0.70, 0.20, "+7 495 120-45-03"),
    Administrator(1000004, "Мария Васильева", True, "m.vasilieva@zdorovie-clinic.ru", 0.52, 0.17, "+7 495 120-45-04"),
    Administrator(1000005, "Дмитрий Соколов", False, "d.sokolov@zdorovie-clinic.ru", 0.78, 0.12, "+7 495 120-45-05"),
)


@dataclass(frozen=True)
class Doctor:
    full_name: str  # "Петров Сергей Александрович"
    name_dat: str  # "Сергею Александровичу"
    name_gen: str  # "Сергея Александровича"
    specialty: str  # "кардиолог"
    specialty_dat: str  # "кардиологу"
    female: bool
    services: tuple[tuple[str, int], ...]  # (service, price in rubles); the first is the consultation
    complaints: tuple[str, ...]
    weight: float = 1.0

    @property
    def name(self) -> str:
        """How staff and patients address the doctor: first name and patronymic."""
        return " ".join(self.full_name.split()[1:])

    @property
    def specialty_gen(self) -> str:
        """'кардиолога', 'врача УЗИ-диагностики'."""
        first, _, rest = self.specialty.partition(" ")
        return f"{first}а {rest}".strip()


DOCTORS: Final[tuple[Doctor, ...]] = (
    Doctor(
        "Иванова Елена Викторовна",
        "Елене Викторовне",
        "Елены Викторовны",
        "терапевт",
        "терапевту",
        True,
        (("Приём терапевта", 1800), ("Повторный приём терапевта", 1500)),
        ("температура третий день", "кашель никак не проходит", "нужно пройти диспансеризацию"),
        3.0,
    ),
    Doctor(
        "Петров Сергей Александрович",
        "Сергею Александровичу",
        "Сергея Александровича",
        "кардиолог",
        "кардиологу",
        False,
        (
            ("Консультация кардиолога", 2500),
            ("ЭКГ с расшифровкой", 1200),
            ("Суточное мониторирование ЭКГ по Холтеру", 3900),
        ),
        ("давление скачет", "сердце покалывает по вечерам", "одышка при ходьбе"),
        1.5,
    ),
    Doctor(
        "Морозова Татьяна Игоревна",
        "Татьяне Игоревне",
        "Татьяны Игоревны",
        "гинеколог",
        "гинекологу",
        True,
        (("Приём гинеколога", 2300), ("УЗИ органов малого таза", 2100)),
        ("нужно на плановый осмотр", "нужен осмотр перед отпуском"),
        1.5,
    ),
    Doctor(
        "Волков Андрей Николаевич",
        "Андрею Николаевичу",
        "Андрея Николаевича",
        "невролог",
        "неврологу",
        False,
        (("Консультация невролога", 2400),),
        ("спина болит уже неделю", "часто болит голова", "немеют пальцы на руке"),
    ),
    Doctor(
        "Лебедева Наталья Сергеевна",
        "Наталье Сергеевне",
        "Натальи Сергеевны",
        "эндокринолог",
        "эндокринологу",
        True,
        (("Приём эндокринолога", 2400), ("УЗИ щитовидной железы", 1600)),
        ("анализы на гормоны плохие", "сахар повышен"),
    ),
    Doctor(
        "Козлов Игорь Павлович",
        "Игорю Павловичу",
        "Игоря Павловича",
        "оториноларинголог",
        "оториноларингологу",
        False,
        (("Приём ЛОР-врача", 2000), ("Промывание миндалин", 900)),
        ("ухо заложило", "горло болит вторую неделю", "нос не дышит"),
    ),
    Doctor(
        "Новикова Ирина Олеговна",
        "Ирине Олеговне",
        "Ирины Олеговны",
        "офтальмолог",
        "офтальмологу",
        True,
        (("Приём офтальмолога", 2200), ("Подбор очков", 1500)),
        ("зрение упало", "глаза краснеют и слезятся"),
    ),
    Doctor(
        "Гусев Павел Дмитриевич",
        "Павлу Дмитриевичу",
        "Павла Дмитриевича",
        "уролог",
        "урологу",
        False,
        (("Приём уролога", 2300),),
        ("нужно на профилактический осмотр", "беспокоят почки"),
    ),
    Doctor(
        "Михайлов Алексей Викторович",
        "Алексею Викторовичу",
        "Алексея Викторовича",
        "гастроэнтеролог",
        "гастроэнтерологу",
        False,
        (("Консультация гастроэнтеролога", 2600), ("Гастроскопия", 5500)),
        ("желудок беспокоит", "изжога постоянно"),
    ),
    Doctor(
        "Соловьёва Юлия Андреевна",
        "Юлии Андреевне",
        "Юлии Андреевны",
        "дерматолог",
        "дерматологу",
        True,
        (("Приём дерматолога", 2100), ("Удаление папиллом", 1200)),
        ("сыпь на руках", "нужно посмотреть родинку"),
    ),
    Doctor(
        "Орлов Максим Евгеньевич",
        "Максиму Евгеньевичу",
        "Максима Евгеньевича",
        "врач УЗИ-диагностики",
        "врачу УЗИ-диагностики",
        False,
        (("УЗИ брюшной полости", 2000), ("УЗИ почек", 1500)),
        ("терапевт дал направление на УЗИ", "нужно сделать УЗИ"),
    ),
)

_FEMALE_FIRST: Final = (
    "Ольга",
    "Наталья",
    "Елена",
    "Ирина",
    "Татьяна",
    "Светлана",
    "Марина",
    "Юлия",
    "Анастасия",
    "Ксения",
    "Людмила",
    "Галина",
    "Валентина",
    "Дарья",
    "Виктория",
    "Алина",
    "Надежда",
    "Вера",
)
_MALE_FIRST: Final = (
    "Александр",
    "Сергей",
    "Андрей",
    "Алексей",
    "Михаил",
    "Владимир",
    "Николай",
    "Игорь",
    "Павел",
    "Евгений",
    "Артём",
    "Константин",
    "Виктор",
    "Юрий",
    "Роман",
    "Олег",
)
_PATRONYMICS: Final = (
    ("Александрович", "Александровна"),
    ("Сергеевич", "Сергеевна"),
    ("Владимирович", "Владимировна"),
    ("Николаевич", "Николаевна"),
    ("Петрович", "Петровна"),
    ("Иванович", "Ивановна"),
    ("Михайлович", "Михайловна"),
    ("Андреевич", "Андреевна"),
    ("Викторович", "Викторовна"),
    ("Юрьевич", "Юрьевна"),
    ("Олегович", "Олеговна"),
    ("Геннадьевич", "Геннадьевна"),
    ("Анатольевич", "Анатольевна"),
    ("Дмитриевич", "Дмитриевна"),
)
_SURNAMES: Final = (
    "Белов",
    "Павлов",
    "Семёнов",
    "Голубев",
    "Виноградов",
    "Богданов",
    "Воробьёв",
    "Фролов",
    "Никитин",
    "Захаров",
    "Зайцев",
    "Борисов",
    "Яковлев",
    "Григорьев",
    "Романов",
    "Воронов",
    "Тарасов",
    "Беляев",
    "Комаров",
    "Киселёв",
    "Макаров",
    "Андреев",
    "Ковалёв",
    "Ильин",
    "Гаврилов",
    "Титов",
    "Кудрявцев",
    "Баранов",
    "Куликов",
    "Алексеев",
    "Степанов",
    "Сорокин",
    "Медведев",
    "Ершов",
    "Денисов",
    "Жуков",
)
_INVARIANT_SURNAMES: Final = ("Шевченко", "Ткаченко", "Бондаренко", "Черных", "Седых")
_MOBILE_CODES: Final = (
    "903",
    "905",
    "909",
    "910",
    "912",
    "915",
    "916",
    "917",
    "919",
    "925",
    "926",
    "929",
    "936",
    "950",
    "958",
    "962",
    "963",
    "964",
    "965",
    "967",
    "968",
    "977",
    "985",
    "999",
)
_SELLERS: Final = (
    ("Кирилл", "МедСофт", "автоматизировать запись пациентов"),
    ("Виктория", "ПромоМед", "продвигать клинику в интернете"),
    ("Денис", "ТелекомПлюс", "снизить расходы на связь"),
    ("Алина", "ЧистоСервис", "с уборкой медицинских помещений"),
)

_MONTHS_GEN: Final = (
    "января",
    "февраля",
    "марта",
    "апреля",
    "мая",
    "июня",
    "июля",
    "августа",
    "сентября",
    "октября",
    "ноября",
    "декабря",
)
_WEEKDAYS_V: Final = ("в понедельник", "во вторник", "в среду", "в четверг", "в пятницу", "в субботу", "в воскресенье")
_WEEKDAYS_NA: Final = (
    "на понедельник",
    "на вторник",
    "на среду",
    "на четверг",
    "на пятницу",
    "на субботу",
    "на воскресенье",
)


@dataclass(frozen=True)
class _Patient:
    surname: str
    first: str
    patronymic: str
    female: bool
    phone: str
    birth: date
    contact_id: int
    lead_id: int
    company_id: int

    @property
    def customer_id(self) -> int:
        """The patient's customer ("Покупатель": a regular patient), derived so the draws stay as they were."""
        return 51_300_000 + self.contact_id % 100_000

    @property
    def full_name(self) -> str:
        return f"{self.surname} {self.first} {self.patronymic}"

    @property
    def io(self) -> str:
        return f"{self.first} {self.patronymic}"


# ------------------------------------------------------------------------------------ data model


@dataclass(frozen=True)
class Scenario:
    """What an answered call was about, how it went, and what was said."""

    call_type: CallType
    patient_name: str
    administrator_name: str
    doctor_name: str | None
    doctor_specialty: str | None
    service: str | None
    price_rub: int | None
    booked: bool
    not_booked_reason: str | None
    appointment_at: str | None  # ISO 8601 (Moscow time) of the booked visit
    greeted_properly: bool
    offered_booking: bool
    named_next_step: bool
    polite: bool
    script: list[tuple[str, str]]  # (speaker, text); speaker is "administrator" or "patient"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["script"] = [[speaker, text] for speaker, text in self.script]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Scenario:
        values = dict(data)
        values["script"] = [(str(speaker), str(text)) for speaker, text in data["script"]]
        return cls(**values)

    def transcript(self) -> str:
        """The dialogue as plain text, one utterance a line (what a transcription would give)."""
        return "\n".join(text for _, text in self.script)

    def labelled_transcript(self) -> str:
        labels = {"administrator": "Администратор", "patient": "Пациент"}
        return "\n".join(f"{labels.get(speaker, speaker)}: {text}" for speaker, text in self.script)


@dataclass(frozen=True)
class NoteFiling:
    """One note of a call: the entity it is filed on and the note's id."""

    entity_type: EntityType
    entity_id: int
    note_id: int


@dataclass(frozen=True)
class DemoCall:
    """One call as amoCRM stores it: a ``call_in`` / ``call_out`` note on a lead, contact, company or customer,
    and possibly more notes of the same call (same ``uniq``) on the patient's other entities (``copies``)."""

    note_id: int
    entity_type: EntityType
    entity_id: int
    note_type: NoteType
    created_at: int
    updated_at: int
    duration: int
    call_status: int
    call_result: str
    uniq: str
    phone: str
    responsible_user_id: int
    has_recording: bool
    scenario: Scenario | None
    #: raw ``params`` overrides applied last by :func:`to_note` (a ``None`` value removes the key)
    extra_params: dict[str, Any] = field(default_factory=dict)
    #: the same call filed on other entities too: one more note each, with the same params
    copies: tuple[NoteFiling, ...] = ()
    responsible_as: ResponsibleForm = "id"
    duration_as: DurationForm = "int"
    #: ids, entity ids and ``call_status`` written as strings, as some integrations send them
    ids_as_text: bool = False
    #: the recording's format; ``None``: chosen by the call's ``uniq`` (:attr:`recording_format`)
    recording_as: RecordingFormat | None = None

    @property
    def incoming(self) -> bool:
        return self.note_type == "call_in"

    @property
    def answered(self) -> bool:
        return self.call_status == CALL_STATUS_CONVERSATION

    @property
    def recording_format(self) -> RecordingFormat:
        """The recording's container, by :data:`RECORDING_FORMAT_SHARES` (a hash of ``uniq``: no random draw)."""
        if self.recording_as is not None:
            return self.recording_as
        roll = _unit(f"format:{self.uniq}")
        for fmt, share in RECORDING_FORMAT_SHARES.items():
            if roll < share:
                return fmt
            roll -= share
        return "mp3"

    @property
    def recording_bitrate_kbps(self) -> int:
        """An MP3 recording's bitrate: telephony's 16, 24 or 32 kbit/s."""
        return MP3_BITRATES_KBPS[int(_unit(f"bitrate:{self.uniq}") * len(MP3_BITRATES_KBPS))]

    @property
    def recording_path(self) -> str:
        return f"/recordings/{self.uniq}.{self.recording_format}"

    @property
    def filings(self) -> tuple[NoteFiling, ...]:
        """Every note of the call: the first on ``entity_type``, then the copies."""
        return (NoteFiling(self.entity_type, self.entity_id, self.note_id), *self.copies)

    @property
    def administrator_name(self) -> str:
        """The administrator a sync can name from the note: none when the note carries only a phone."""
        admin = administrator(self.responsible_user_id)
        return "" if admin is None or self.responsible_as == "phone" else admin.name


def _call_responsible(call: DemoCall) -> int | str:
    admin = administrator(call.responsible_user_id)
    if call.responsible_as == "name" and admin is not None:
        return admin.name
    if call.responsible_as == "phone" and admin is not None and admin.phone:
        return admin.phone
    if call.responsible_as == "id_text":
        return str(call.responsible_user_id)
    return call.responsible_user_id


def _duration(call: DemoCall) -> int | str:
    if call.duration_as == "text":
        return str(call.duration)
    if call.duration_as == "fraction":
        return f"{call.duration}.5"  # whole seconds: still ``duration``
    return call.duration


def to_note(call: DemoCall, base_url: str, filing: NoteFiling | None = None) -> dict[str, Any]:
    """The amoCRM API v4 JSON of the call's note (the first, or the given filing of it); recording links point
    at ``base_url``."""
    base = base_url.rstrip("/")
    where = filing or call.filings[0]
    params: dict[str, Any] = {
        "uniq": call.uniq,
        "duration": _duration(call),
        "source": RECORDING_SOURCE,
        "link": f"{base}{call.recording_path}",
        "phone": call.phone,
        "call_result": call.call_result,
        "call_status": str(call.call_status) if call.ids_as_text else call.call_status,
        "call_responsible": _call_responsible(call),
    }
    if not call.has_recording:
        del params["link"]
    for key, value in call.extra_params.items():
        if value is None:
            params.pop(key, None)
        else:
            params[key] = value
    return {
        "id": str(where.note_id) if call.ids_as_text else where.note_id,
        "entity_id": str(where.entity_id) if call.ids_as_text else where.entity_id,
        "created_by": call.responsible_user_id,
        "updated_by": call.responsible_user_id,
        "created_at": call.created_at,
        "updated_at": call.updated_at,
        "responsible_user_id": call.responsible_user_id,
        "group_id": 0,
        "note_type": call.note_type,
        "account_id": ACCOUNT_ID,
        "params": params,
        "_links": {"self": {"href": f"{base}/api/v4/{where.entity_type}/{where.entity_id}/notes/{where.note_id}"}},
    }


def administrator(user_id: int) -> Administrator | None:
    return next((admin for admin in ADMINISTRATORS if admin.id == user_id), None)


# ----------------------------------------------------------------------------------- generation


def anchor_now(now: datetime | None = None) -> datetime:
    """The reference "now": the given moment (naive means UTC) or the start of the current UTC day."""
    if now is None:
        return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now


def generate_calls(
    count: int = 200, *, days: int = 30, seed: int = DEFAULT_SEED, now: datetime | None = None
) -> list[DemoCall]:
    """``count`` calls spread over the ``days`` days before ``now``, ordered by note id (= by time).

    The shapes real accounts send (a name, a phone or digits in ``call_responsible``, durations and ids as
    strings, calls on customers, the same call filed on a lead and its contact) are drawn from a second
    generator, so the calls themselves are the same as without them."""
    if count < 0:
        raise ValueError("count must be >= 0")
    if days < 1:
        raise ValueError("days must be >= 1")
    now_ts = int(anchor_now(now).timestamp())
    start_ts = now_ts - days * 86400
    rng = random.Random(f"callsight-demo:{seed}:{count}:{days}:{now_ts}")
    shapes = random.Random(f"callsight-demo-shapes:{seed}:{count}:{days}:{now_ts}")
    patients = _make_patients(rng, max(12, count * 3 // 5))
    by_entity = {entity: p for p in patients for entity in (p.lead_id, p.contact_id)}
    times = sorted(_pick_time(rng, start_ts, now_ts, days) for _ in range(count))
    calls: list[DemoCall] = []
    note_id = 61_204_000 + rng.randrange(1000)
    for ts in times:
        note_id += rng.randint(1, 37)
        calls.append(_with_shapes(shapes, _make_call(rng, note_id, ts, now_ts, patients), by_entity))
    return calls


def _make_patients(rng: random.Random, n: int) -> list[_Patient]:
    patients: list[_Patient] = []
    phones: set[str] = set()
    companies = [40_210_001 + 13 * i for i in range(5)]
    for i in range(n):
        female = rng.random() < 0.62
        first = rng.choice(_FEMALE_FIRST if female else _MALE_FIRST)
        patronymic = rng.choice(_PATRONYMICS)[1 if female else 0]
        if rng.random() < 0.1:
            surname = rng.choice(_INVARIANT_SURNAMES)
        else:
            surname = rng.choice(_SURNAMES) + ("а" if female else "")
        phone = ""
        while not phone or phone in phones:
            phone = f"+7{rng.choice(_MOBILE_CODES)}{rng.randrange(10_000_000):07d}"
        phones.add(phone)
        birth = date(rng.randint(1948, 2005), rng.randint(1, 12), rng.randint(1, 28))
        patients.append(
            _Patient(
                surname,
                first,
                patronymic,
                female,
                phone,
                birth,
                contact_id=31_400_000 + 17 * i + rng.randrange(17),
                lead_id=22_700_000 + 23 * i + rng.randrange(23),
                company_id=rng.choice(companies),
            )
        )
    return patients


_HOUR_WEIGHTS: Final[dict[int, float]] = {
    8: 0.8,
    9: 1.4,
    10: 1.5,
    11: 1.3,
    12: 1.0,
    13: 0.8,
    14: 0.9,
    15: 1.0,
    16: 1.0,
    17: 1.1,
    18: 1.0,
    19: 0.7,
}
_DAY_WEIGHTS: Final = (1.0, 0.95, 0.95, 0.9, 0.9, 0.7, 0.3)  # Monday..Sunday
_OPEN_HOURS: Final = ((8, 20), (8, 20), (8, 20), (8, 20), (8, 20), (9, 17), (9, 15))


def _is_open(local: datetime) -> bool:
    start, end = _OPEN_HOURS[local.weekday()]
    return start <= local.hour < end


def _pick_time(rng: random.Random, start_ts: int, now_ts: int, days: int) -> int:
    local_now = datetime.fromtimestamp(now_ts, MSK)
    for _ in range(200):
        day = (local_now - timedelta(days=rng.randrange(days + 1))).date()
        if rng.random() > _DAY_WEIGHTS[day.weekday()]:
            continue
        start, end = _OPEN_HOURS[day.weekday()]
        if rng.random() < 0.06:  # before opening or after closing: mostly missed incoming calls
            hour = rng.choice((start - 1, end, end + 1))
        else:
            hours = list(range(start, end))
            hour = rng.choices(hours, weights=[_HOUR_WEIGHTS.get(h, 0.8) for h in hours])[0]
        moment = datetime(day.year, day.month, day.day, hour, rng.randrange(60), rng.randrange(60), tzinfo=MSK)
        ts = int(moment.timestamp())
        if start_ts <= ts < now_ts:
            return ts
    return rng.randrange(start_ts, now_ts)


def _make_call(rng: random.Random, note_id: int, ts: int, now_ts: int, patients: list[_Patient]) -> DemoCall:
    local = datetime.fromtimestamp(ts, MSK)
    in_hours = _is_open(local)
    incoming = True if not in_hours else rng.random() < 0.70
    admin = rng.choices(ADMINISTRATORS, weights=[a.shift_weight for a in ADMINISTRATORS])[0]
    patient = rng.choice(patients)
    answered = rng.random() < ((0.80 if in_hours else 0.08) if incoming else 0.72)

    roll = rng.random()
    entity_type: EntityType
    if roll < 0.72:
        entity_type, entity_id = "leads", patient.lead_id
    elif roll < 0.93:
        entity_type, entity_id = "contacts", patient.contact_id
    else:
        entity_type, entity_id = "companies", patient.company_id

    scenario: Scenario | None = None
    if answered:
        scenario, duration = _make_scenario(rng, incoming, admin, patient, local)
        duration = _very_long(note_id, ts) or duration
        status = CALL_STATUS_CONVERSATION
        has_recording = rng.random() < 0.9
    else:
        status = rng.choices(
            (CALL_STATUS_NOT_AVAILABLE, CALL_STATUS_CALL_BACK, CALL_STATUS_LEFT_MESSAGE), weights=(45, 40, 15)
        )[0]
        duration = rng.randint(8, 30) if status == CALL_STATUS_LEFT_MESSAGE else rng.randint(0, 25)
        has_recording = False

    created_at = ts
    if created_at <= now_ts - 2 * 86400 and rng.random() < 0.05:
        latest = min(created_at + 4 * 86400, now_ts - 60)
        updated_at = rng.randint(created_at + 86400, latest)
    else:
        updated_at = min(created_at + duration + rng.randint(1, 40), now_ts - 1)
    updated_at = max(updated_at, created_at)
    return DemoCall(
        note_id=note_id,
        entity_type=entity_type,
        entity_id=entity_id,
        note_type="call_in" if incoming else "call_out",
        created_at=created_at,
        updated_at=updated_at,
        duration=duration,
        call_status=status,
        call_result=CALL_RESULTS[status],
        uniq=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        phone=patient.phone if scenario is None or scenario.call_type != "spam" else _random_phone(rng),
        responsible_user_id=admin.id,
        has_recording=has_recording,
        scenario=scenario,
    )


def _unit(key: str) -> float:
    """A number in [0, 1) fixed by ``key`` (not drawn from the generator: adding it changes no other call)."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2**64


def _very_long(note_id: int, ts: int) -> int | None:
    """The duration of one of the :data:`VERY_LONG_SHARE` very long calls, or ``None``."""
    if _unit(f"very-long:{note_id}:{ts}") >= VERY_LONG_SHARE:
        return None
    low, high = VERY_LONG_SECONDS
    return low + int(_unit(f"very-long-seconds:{note_id}:{ts}") * (high - low + 1))


#: shares of the demo notes in each of the shapes real accounts send
SHAPE_SHARES: Final = {"customers": 0.05, "copy_on_contact": 0.12, "copy_on_company": 0.03, "responsible_name": 0.10,
                       "responsible_phone": 0.05, "responsible_digits": 0.08, "duration_text": 0.10,
                       "duration_fraction": 0.05, "ids_as_text": 0.10}
_COPY_NOTE_BASE: Final = 70_000_000



def _pick(roll: float, default: T, shares: Sequence[tuple[float, T]]) -> T:
    """The value whose share (in order, laid end to end from 0) the ``roll`` in [0, 1) falls in, else ``default``."""
    bound = 0.0
    for part, value in shares:
        bound += part
        if roll < bound:
            return value
    return default

def _with_shapes(shapes: random.Random, call: DemoCall, by_entity: dict[int, _Patient]) -> DemoCall:
    patient = by_entity.get(call.entity_id) if call.entity_type in ("leads", "contacts") else None
    share = SHAPE_SHARES
    entity_type, entity_id = call.entity_type, call.entity_id
    copies: list[NoteFiling] = []
    serial = (call.note_id - 61_204_000) * 4  # copies' note ids: unique, apart from the first notes'
    if patient is not None and shapes.random() < share["customers"]:
        entity_type, entity_id = "customers", patient.customer_id
    elif patient is not None and call.entity_type == "leads" and shapes.random() < share["copy_on_contact"]:
        copies.append(NoteFiling("contacts", patient.contact_id, _COPY_NOTE_BASE + serial + 1))
        if shapes.random() < share["copy_on_company"] / share["copy_on_contact"]:
            copies.append(NoteFiling("companies", patient.company_id, _COPY_NOTE_BASE + serial + 2))
    responsible: ResponsibleForm = _pick(shapes.random(), "id", (
        (share["responsible_name"], "name"), (share["responsible_phone"], "phone"),
        (share["responsible_digits"], "id_text")))
    duration: DurationForm = _pick(shapes.random(), "int", (
        (share["duration_text"], "text"), (share["duration_fraction"], "fraction")))
    return replace(call, entity_type=entity_type, entity_id=entity_id, copies=tuple(copies),
                   responsible_as=responsible, duration_as=duration,
                   ids_as_text=shapes.random() < share["ids_as_text"])


def _random_phone(rng: random.Random) -> str:
    return f"+7{rng.choice(_MOBILE_CODES)}{rng.randrange(10_000_000):07d}"


# ------------------------------------------------------------------------------------ scenarios

_INCOMING_TYPES: Final[dict[CallType, float]] = {
    "booking": 34,
    "reschedule": 9,
    "cancellation": 6,
    "price_question": 16,
    "test_results": 12,
    "complaint": 4,
    "other": 11,
    "spam": 8,
}
_OUTGOING_TYPES: Final[dict[CallType, float]] = {
    "booking": 40,
    "reschedule": 12,
    "cancellation": 8,
    "price_question": 4,
    "test_results": 17,
    "other": 19,
}
_BOOKED_IF_OFFERED: Final[dict[CallType, float]] = {
    "booking": 0.82,
    "reschedule": 0.85,
    "cancellation": 0.2,
    "price_question": 0.45,
    "test_results": 0.5,
    "complaint": 0.3,
    "other": 0.3,
}
_REASONS_IF_OFFERED: Final[dict[CallType, tuple[str, ...]]] = {
    "booking": (REASON_EXPENSIVE, REASON_NO_SLOT, REASON_THINKING, REASON_DOCTOR_AWAY),
    "reschedule": (REASON_NO_SLOT, REASON_THINKING),
    "cancellation": (REASON_CANCELLED,),
    "price_question": (REASON_EXPENSIVE, REASON_THINKING, REASON_PRICE_ONLY),
    "test_results": (REASON_THINKING, REASON_NO_SLOT),
    "complaint": (REASON_UNHAPPY,),
    "other": (REASON_THINKING,),
}


@dataclass
class _Traits:
    greeted: bool
    offered: bool
    next_step: bool
    polite: bool


def _sample_traits(rng: random.Random, admin: Administrator) -> _Traits:
    d = admin.diligence
    return _Traits(
        greeted=rng.random() < min(0.98, d + 0.05),
        offered=rng.random() < d,
        next_step=rng.random() < max(0.1, d - 0.05),
        polite=rng.random() < min(0.97, d + 0.15),
    )


def _make_scenario(
    rng: random.Random, incoming: bool, admin: Administrator, patient: _Patient, when: datetime
) -> tuple[Scenario, int]:
    traits = _sample_traits(rng, admin)
    short_call = rng.random() < 0.045
    weights = _INCOMING_TYPES if incoming else _OUTGOING_TYPES
    call_type: CallType = "other" if short_call else rng.choices(list(weights), weights=list(weights.values()))[0]
    not_for = "уролог" if patient.female else "гинеколог"
    doctors = [d for d in DOCTORS if d.specialty != not_for]
    doctor = rng.choices(doctors, weights=[d.weight for d in doctors])[0]
    service, price = doctor.services[0]
    if call_type in ("booking", "price_question") and rng.random() < 0.35:
        service, price = rng.choice(doctor.services)
    talk = _Talk(
        rng,
        admin=admin,
        patient=patient,
        doctor=doctor,
        service=service,
        price=price,
        when=when,
        incoming=incoming,
        traits=traits,
    )
    if call_type in ("spam", "other") or short_call:
        traits.next_step = traits.next_step and call_type == "other" and not short_call

    booked = False
    reason: str | None = None
    if call_type in _BOOKED_IF_OFFERED and not short_call:
        if traits.offered:
            booked = rng.random() < _BOOKED_IF_OFFERED[call_type]
            if not booked:
                reason = rng.choice(_REASONS_IF_OFFERED[call_type])
        else:
            reason = {"cancellation": REASON_CANCELLED, "complaint": REASON_UNHAPPY, "other": None}.get(
                call_type, REASON_NOT_OFFERED
            )
    else:
        traits.offered = False

    duration: int | None = None
    patient_name = patient.full_name
    has_doctor = True
    if short_call:
        _short_call(talk)
        has_doctor = False
        duration = rng.randint(3, 9)
    elif call_type == "spam":
        patient_name, robot = _spam(talk)
        has_doctor = False
        if robot:
            duration = rng.randint(10, 25)
    else:
        flow = {
            "booking": _booking,
            "reschedule": _reschedule,
            "cancellation": _cancellation,
            "price_question": _price_question,
            "test_results": _test_results,
            "complaint": _complaint,
            "other": _other,
        }[call_type]
        reason = flow(talk, booked, reason)
        booked = talk.appointment is not None  # a reminder call may turn out to need no booking at all
        _closing(talk, booked)

    if duration is None:
        duration = _answered_duration(rng, talk, call_type)
    appointment = talk.appointment.isoformat() if booked and talk.appointment else None
    doc = talk.doctor
    scenario = Scenario(
        call_type=call_type,
        patient_name=patient_name,
        administrator_name=admin.name,
        doctor_name=doc.full_name if has_doctor else None,
        doctor_specialty=doc.specialty if has_doctor else None,
        service=talk.service if has_doctor else None,
        price_rub=talk.price if has_doctor else None,
        booked=booked,
        not_booked_reason=None if booked else reason,
        appointment_at=appointment,
        greeted_properly=traits.greeted,
        offered_booking=traits.offered,
        named_next_step=traits.next_step,
        polite=traits.polite,
        script=_merge_turns(talk.lines),
    )
    return scenario, duration


def _merge_turns(lines: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Consecutive lines of one speaker are one turn."""
    merged: list[tuple[str, str]] = []
    for speaker, text in lines:
        if merged and merged[-1][0] == speaker:
            merged[-1] = (speaker, f"{merged[-1][1]} {text}")
        else:
            merged.append((speaker, text))
    return merged


def _answered_duration(rng: random.Random, talk: _Talk, call_type: CallType) -> int:
    chars = sum(len(text) for _, text in talk.lines)
    seconds = chars / 13.0 + 1.3 * len(talk.lines) + talk.hold_seconds
    seconds *= rng.lognormvariate(0.0, 0.25)
    if rng.random() < (0.4 if call_type == "complaint" else 0.04):  # the long tail: up to 20 minutes
        seconds = rng.uniform(420, 1200)
    return int(max(10, min(1200, seconds)))


def _price_text(price: int) -> str:
    return f"{price:,}".replace(",", " ") + " рублей"  # prices are whole hundreds: always "рублей"


def _accusative(service: str) -> str:
    first, _, rest = service.partition(" ")
    if first.endswith("ия"):
        first = first[:-2] + "ию"
    return f"{first.lower()} {rest}".strip() if rest else first.lower()


def _date_text(day: date) -> str:
    return f"{day.day} {_MONTHS_GEN[day.month - 1]}"


class _Talk:
    """Collects the dialogue lines of one call and the context the templates need."""

    def __init__(
        self,
        rng: random.Random,
        *,
        admin: Administrator,
        patient: _Patient,
        doctor: Doctor,
        service: str,
        price: int,
        when: datetime,
        incoming: bool,
        traits: _Traits,
    ) -> None:
        self.rng = rng
        self.admin = admin
        self.patient = patient
        self.doctor = doctor
        self.service = service
        self.price = price
        self.when = when
        self.incoming = incoming
        self.traits = traits
        self.lines: list[tuple[str, str]] = []
        self.hold_seconds = 0.0
        self.appointment: datetime | None = None

    # lines
    def a(self, *variants: str) -> None:
        self.lines.append(("administrator", self.rng.choice(variants)))

    def p(self, *variants: str) -> None:
        self.lines.append(("patient", self.rng.choice(variants)))

    def a2(self, polite: tuple[str, ...], rude: tuple[str, ...]) -> None:
        """An administrator line in the polite or the curt manner (curt lines never say please/thanks)."""
        self.a(*(polite if self.traits.polite else rude))

    def hold(self, low: float, high: float) -> None:
        self.hold_seconds += self.rng.uniform(low, high)

    # grammar helpers
    def af(self, female: str, male: str) -> str:
        return female if self.admin.female else male

    def pf(self, female: str, male: str) -> str:
        return female if self.patient.female else male

    def df(self, female: str, male: str) -> str:
        return female if self.doctor.female else male

    @property
    def price_text(self) -> str:
        return _price_text(self.price)

    @property
    def birth_text(self) -> str:
        b = self.patient.birth
        return f"{_date_text(b)} {b.year} года"

    @property
    def time_of_day(self) -> str:
        if self.when.hour < 12:
            return "Доброе утро"
        return "Добрый день" if self.when.hour < 18 else "Добрый вечер"

    def slot(self, *, min_days: int = 1, max_days: int = 7, evening: bool = False) -> datetime:
        day = self.when.date() + timedelta(days=self.rng.randint(min_days, max_days))
        while day.weekday() == 6:
            day += timedelta(days=1)
        if evening:
            hour = self.rng.choice((17, 18, 19)) if day.weekday() < 5 else self.rng.choice((14, 15))
        else:
            hour = self.rng.randint(9, 15 if day.weekday() == 5 else 18)
        minute = self.rng.choice((0, 0, 15, 30, 30, 45))
        return datetime(day.year, day.month, day.day, hour, minute, tzinfo=MSK)

    def at(self, slot: datetime) -> str:
        """'в четверг, 14 ноября, в 10:30' / 'завтра в 10:30'."""
        time = f"{slot.hour}:{slot.minute:02d}"
        if slot.date() - self.when.date() == timedelta(days=1):
            return f"завтра в {time}"
        return f"{_WEEKDAYS_V[slot.weekday()]}, {_date_text(slot.date())}, в {time}"

    def on(self, slot: datetime) -> str:
        """'на четверг, 14 ноября, на 10:30' / 'на завтра на 10:30'."""
        time = f"{slot.hour}:{slot.minute:02d}"
        if slot.date() - self.when.date() == timedelta(days=1):
            return f"на завтра на {time}"
        return f"{_WEEKDAYS_NA[slot.weekday()]}, {_date_text(slot.date())}, на {time}"


# ------------------------------------------------------------------------------- common blocks


def _opening(t: _Talk) -> None:
    admin, patient = t.admin, t.patient
    if t.incoming:
        if t.traits.greeted:
            t.a(
                f"Клиника «Здоровье», администратор {admin.first_name}, здравствуйте! Чем могу помочь?",
                f"{t.time_of_day}! Клиника «Здоровье», меня зовут {admin.first_name}. Слушаю вас.",
                f"{t.time_of_day}, клиника «Здоровье», {admin.first_name}. Чем могу помочь?",
            )
        else:
            t.a("Алло.", "Да, слушаю.", "Клиника, говорите.", "Алло, говорите.")
        return
    t.p("Алло.", "Да, слушаю.", "Алло, кто это?", "Да?")
    if t.traits.greeted:
        t.a(
            f"Здравствуйте, {patient.io}! Это {admin.first_name}, администратор клиники «Здоровье». "
            "Вам удобно сейчас говорить?",
            f"{t.time_of_day}, {patient.io}! Меня зовут {admin.first_name}, я администратор клиники «Здоровье». "
            "Удобно говорить?",
        )
        t.p("Да, удобно.", "Да, здравствуйте, говорите.", "Да, только недолго, пожалуйста.")
    else:
        t.a(
            f"Алло, это {patient.surname}? Из клиники «Здоровье» звонят.",
            f"{patient.surname}? Клиника «Здоровье» беспокоит.",
        )
        t.p("Да, это я.", "Да. А что случилось?")


def _closing(t: _Talk, booked: bool) -> None:
    io = t.patient.io
    if t.traits.polite:
        variants = [f"Спасибо за звонок, {io}! Всего доброго.", "Всего доброго, до свидания!"]
        if not t.incoming:
            variants = [f"Спасибо, {io}, всего доброго!", "Хорошего дня, всего доброго!"]
        if booked:
            variants.append(f"Ждём вас, {io}. Всего доброго!")
        t.a(*variants)
        t.p("До свидания.", "Спасибо, до свидания!", "И вам всего доброго.")
    else:
        t.a("Всё, до свидания.", "Угу. До свидания.", "Ладно, всё.")
        t.p("До свидания.", "Эм... до свидания.")


def _identify(t: _Talk) -> None:
    t.a2(
        (
            "Назовите, пожалуйста, фамилию, имя, отчество и дату рождения.",
            "Подскажите, пожалуйста, ваши ФИО и дату рождения.",
        ),
        ("ФИО и дата рождения.", "Фамилия, имя, отчество, дата рождения?"),
    )
    t.p(f"{t.patient.full_name}, {t.birth_text}.")
    if t.incoming and t.rng.random() < 0.5:
        t.a2(("Номер телефона для связи — тот, с которого вы звоните?",), ("Телефон этот?",))
        t.p("Да, этот.", "Да, всё верно.")


def _offer(t: _Talk, slot: datetime) -> None:
    d = t.doctor
    t.a2(
        (
            f"Могу записать вас к {d.specialty_dat} {d.name_dat} {t.at(slot)}. Вам удобно?",
            f"Есть свободное время у {d.name_gen} {t.at(slot)}. Записать вас?",
            f"Ближайшая запись к {d.specialty_dat} — {t.at(slot)}, приём ведёт {d.name}. Вам подходит?",
        ),
        (f"Есть {t.at(slot)} к {d.name_dat}. Записывать?", f"Только {t.at(slot)}. Будете записываться?"),
    )


def _confirm(t: _Talk, slot: datetime, *, moved: bool = False) -> None:
    d = t.doctor
    if moved:
        t.a2(
            (f"Готово, перенес{t.af('ла', '')}: теперь {BOOKING_CONFIRMATION_MARKER} к {d.name_dat} {t.on(slot)}.",),
            (f"Перенес{t.af('ла', '')}, теперь {BOOKING_CONFIRMATION_MARKER} {t.on(slot)}.",),
        )
    else:
        t.a2(
            (
                f"Отлично, {BOOKING_CONFIRMATION_MARKER} к {d.specialty_dat} {d.name_dat} {t.on(slot)}. "
                f"{t.service} — {t.price_text}.",
                f"Записал{t.af('а', '')}: {BOOKING_CONFIRMATION_MARKER} к {d.name_dat}, {d.specialty}, {t.on(slot)}. "
                f"Стоимость — {t.price_text}.",
            ),
            (f"Всё, {BOOKING_CONFIRMATION_MARKER} {t.on(slot)}. {t.service} — {t.price_text}.",),
        )
    t.appointment = slot


def _next_step_after_booking(t: _Talk) -> None:
    fasting = t.service.startswith(("УЗИ брюшной", "Гастроскопия"))
    extra = " Исследование делается натощак: не ешьте за 6–8 часов до него." if fasting else ""
    t.a(
        f"Накануне придёт SMS с напоминанием. Подойдите за 10–15 минут до приёма и возьмите паспорт.{extra}",
        f"Мы пришлём SMS с адресом и временем. Адрес: улица Ленина, 15, второй этаж, возьмите паспорт.{extra}",
        f"За день до приёма вам придёт SMS. Приходите за 10 минут, регистратура на первом этаже.{extra}",
    )


def _offer_block(
    t: _Talk, booked: bool, reason: str | None, *, identify: bool, price_known: bool = False, moved: bool = False
) -> None:
    """An offered slot and what came of it: a confirmed booking or the patient's reason to decline."""
    slot = t.slot()
    if booked:
        final = slot
        if t.rng.random() < 0.3:
            _offer(t, slot)
            later = t.rng.random() < 0.5
            t.p("А попозже нельзя? Я до шести работаю." if later else "А пораньше ничего нет? Мне бы с утра.")
            final = t.slot(evening=True) if later else t.slot(min_days=2, max_days=8)
            if not later:
                final = final.replace(hour=t.rng.choice((8, 9)), minute=t.rng.choice((0, 30)))
            t.a2(
                (f"Тогда могу предложить {t.at(final)}.", f"Есть ещё {t.at(final)}. Подойдёт?"),
                (f"Есть {t.at(final)}.",),
            )
        else:
            _offer(t, slot)
        t.p("Да, давайте.", "Да, мне подходит.", "Отлично, записывайте.", "Да, удобно.")
        if identify:
            _identify(t)
        _confirm(t, final, moved=moved)
        if t.traits.next_step:
            _next_step_after_booking(t)
        t.p("Спасибо большое!", f"Хорошо, понял{t.pf('а', '')}, спасибо.", "Отлично, спасибо!")
        return

    _offer(t, slot)
    if reason == REASON_EXPENSIVE:
        if price_known:
            t.p("Нет, для меня это дороговато. Я подумаю.")
        else:
            t.p("А сколько это будет стоить?", "А какая стоимость приёма?")
            t.a2((f"{t.service} — {t.price_text}.",), (f"{t.price_text}.",))
            t.p("Ой, дороговато. Я, наверное, подумаю.", "Хм, дорого. Я ещё подумаю, спасибо.")
        t.a2(("Понимаю. Если надумаете — звоните, пожалуйста, будем рады помочь.",), ("Ну, как хотите.",))
    elif reason == REASON_NO_SLOT:
        t.p("Нет, в это время я не могу, я работаю. А вечером или в субботу ничего нет?")
        t.a2(
            (f"К сожалению, вечером и в субботу к {t.doctor.name_dat} всё занято на две недели вперёд.",),
            ("Вечером всё занято. Других окон нет.",),
        )
        t.p("Тогда не получится. Я попозже позвоню.", "Жаль. Ладно, поищу другой вариант.")
    elif reason == REASON_PRICE_ONLY:
        t.p("Нет, я пока просто узнаю цены, спасибо.")
        t.a2(("Хорошо, будем рады вас видеть, если решите.",), ("Ясно.",))
    elif reason == REASON_CANCELLED:
        t.p("Нет, спасибо, пока не нужно, мне уже лучше.", "Нет, я пока не планирую, спасибо.")
        t.a2(("Хорошо, будем рады видеть вас в любое время.",), ("Ясно.",))
    elif reason == REASON_UNHAPPY:
        t.p("Нет уж, спасибо. Я лучше в другую клинику пойду.")
        t.a2(("Очень жаль. Ещё раз приносим извинения.",), ("Как хотите.",))
    else:  # REASON_THINKING and anything else
        t.p(
            f"Я пока не готов{t.pf('а', '')} сказать точно, мне нужно посмотреть график на работе. Я вам перезвоню.",
            "Давайте я подумаю и перезвоню, хорошо?",
        )
        t.a2(("Хорошо, конечно. Звоните, пожалуйста, будем ждать.",), ("Ладно.",))
    if t.traits.next_step:
        t.a("Я отправлю вам SMS со ссылкой на онлайн-запись, там можно выбрать удобное время.")
        t.p("Хорошо.", "Ладно, посмотрю.")


# ------------------------------------------------------------------------------------ call flows


def _booking(t: _Talk, booked: bool, reason: str | None) -> str | None:
    d, rng = t.doctor, t.rng
    _opening(t)
    if t.incoming:
        complaint = rng.choice(d.complaints)
        t.p(
            f"Здравствуйте! Я хотел{t.pf('а', '')} бы записаться к {d.specialty_dat}.",
            f"Добрый день. Мне бы к {d.specialty_dat} попасть, {complaint}.",
            f"Здравствуйте, у меня {complaint}. Можно к {d.specialty_dat} записаться?"
            if not complaint.startswith(("нужн", "терапевт"))
            else f"Здравствуйте, {complaint}. Можно к {d.specialty_dat} записаться?",
            f"Здравствуйте! Можно записаться на {_accusative(t.service)}?",
        )
        if rng.random() < 0.5:
            t.a2(("Вы у нас уже были раньше?", "Вы раньше у нас наблюдались?"), ("Раньше у нас были?",))
            t.p("Да, в прошлом году.", "Нет, впервые.", f"Да, был{t.pf('а', '')} у терапевта весной.")
    else:
        t.a2(
            (
                f"Вы оставляли заявку на сайте на {_accusative(t.service)}. Подскажите, когда вам было бы удобно "
                "прийти?",
                f"Вы оставляли заявку на приём {d.specialty_gen}, я перезваниваю, чтобы подобрать время.",
            ),
            (f"Вы заявку оставляли на {_accusative(t.service)}. Когда придёте?",),
        )
        t.p(
            f"Да-да, оставлял{t.pf('а', '')}. Лучше в первой половине дня.",
            "Да, было такое. Мне в любой день после обеда удобно.",
        )
    t.a2(
        (
            "Минутку, посмотрю расписание.",
            "Сейчас посмотрю, одну секунду.",
            "Да, конечно, секундочку, открываю расписание.",
        ),
        ("Ждите.", "Сейчас гляну."),
    )
    t.hold(10, 40)

    if reason == REASON_DOCTOR_AWAY:
        back = t.when.date() + timedelta(days=rng.randint(8, 20))
        t.a2(
            (
                f"{d.name} сейчас в отпуске до {_date_text(back)}. Могу записать вас к другому {d.specialty_dat} "
                "или на время после отпуска, как вам удобнее?",
            ),
            (f"{d.name} в отпуске до {_date_text(back)}. Записывать к другому врачу?",),
        )
        t.p(f"Нет, я хочу именно к {d.name_dat}, мне {t.df('её', 'его')} советовали. Позвоню позже.")
        t.a2(("Хорошо, будем ждать вашего звонка.",), ("Ладно.",))
        return reason
    if t.traits.offered:
        _offer_block(t, booked, reason, identify=t.incoming)
        return reason
    t.a2(
        (
            f"К сожалению, к {d.specialty_dat} на этой неделе всё занято.",
            f"Извините, к {d.name_dat} свободных мест пока нет.",
        ),
        (f"К {d.specialty_dat} мест нет.", "Всё занято, мест нет."),
    )
    t.p("А на следующую неделю?", "А когда будут?")
    t.a2(
        (
            "Расписание на следующую неделю пока не открыто. Позвоните, пожалуйста, в понедельник.",
            "Пока сказать не могу, расписание ещё не сформировано. Позвоните, пожалуйста, через пару дней.",
        ),
        ("Расписание ещё не открыли. Звоните в понедельник.", "Не знаю. Перезвоните позже."),
    )
    t.p("Понятно. Ладно.", "Хорошо, попробую позже.", "Ну ладно...")
    return reason


def _state_surname(t: _Talk) -> None:
    t.a2(
        ("Да, конечно. Назовите, пожалуйста, вашу фамилию.", "Подскажите, пожалуйста, фамилию и дату рождения."),
        ("Фамилия?",),
    )
    t.p(f"{t.patient.full_name}, {t.birth_text}.", f"{t.patient.surname}, {t.patient.io}.")


def _reschedule(t: _Talk, booked: bool, reason: str | None) -> str | None:
    d = t.doctor
    original = t.slot(min_days=1, max_days=5)
    _opening(t)
    if t.incoming:
        t.p(
            f"Здравствуйте. Я записан{t.pf('а', '')} к {d.specialty_dat} {t.at(original)}, но не смогу прийти. "
            "Можно перенести?",
            f"Добрый день, мне нужно перенести запись к {d.name_dat}, у меня {t.at(original)}.",
        )
        _state_surname(t)
        t.a2(
            (
                f"Вижу вашу запись. Минутку, посмотрю свободное время у {d.name_gen}.",
                "Да, нашла вашу запись. Сейчас посмотрю другие окна."
                if t.admin.female
                else "Да, нашёл вашу запись. Сейчас посмотрю другие окна.",
            ),
            ("Сейчас.", "Ждите."),
        )
        t.hold(10, 35)
        if not t.traits.offered:
            t.a2(
                (
                    "Хорошо, я отменил" + t.af("а", "") + " вашу запись. Когда определитесь со временем — звоните, "
                    "пожалуйста.",
                ),
                ("Запись отменил" + t.af("а", "") + ". Звоните, когда сможете.",),
            )
            t.p("Ну... хорошо.", "А сразу на другой день нельзя было? Ладно.")
            return reason
    else:
        why = t.rng.choice(
            (
                "у врача изменился график",
                f"{t.df('она', 'он')} будет на обучении",
                f"{t.df('она', 'он')} заболел" + t.df("а", ""),
            )
        )
        if not t.traits.offered:
            t.a(f"Звоню сказать, что приём у {d.name_gen} {t.at(original)} отменяется: {why}.")
            t.p("Ой. А куда мне теперь?", "И что мне делать?")
            t.a2(("Когда появится новое расписание, позвоните нам, пожалуйста.",), ("Звоните позже.",))
            t.p("Понятно...")
            return reason
        t.a2(
            (
                f"Звоню по поводу вашей записи к {d.specialty_dat} {t.at(original)}. К сожалению, {d.name} в этот "
                f"день не принимает: {why}. Давайте подберём другое время?",
            ),
            (f"Приём у {d.name_gen} {t.at(original)} отменяется: {why}. Переносить будем?",),
        )
        t.p("Ой, жалко. Ну давайте перенесём.", "Понятно. А когда можно?")
    _offer_block(t, booked, reason, identify=False, moved=True)
    return reason


def _cancellation(t: _Talk, booked: bool, reason: str | None) -> str | None:
    d = t.doctor
    _opening(t)
    if t.incoming:
        original = t.slot(min_days=1, max_days=5)
        t.p(
            f"Здравствуйте, я хочу отменить запись к {d.specialty_dat} {t.at(original)}.",
            f"Добрый день. Я записан{t.pf('а', '')} к {d.name_dat} {t.at(original)}, хочу отменить.",
        )
        _state_surname(t)
    else:
        original = t.slot(min_days=1, max_days=1)
        t.a2(
            (f"Напоминаю о вашем приёме у {d.name_gen} {t.at(original)}. Подтверждаете визит?",),
            (f"Приём у {d.name_gen} {t.at(original)}. Придёте?",),
        )
        t.p(
            "Ой, хорошо, что позвонили. Я не смогу прийти, отмените, пожалуйста.",
            "Нет, к сожалению, не получится. Отмените.",
        )
    t.a2(
        ("Хорошо, запись отменил" + t.af("а", "") + ".", "Готово, ваша запись отменена."),
        ("Отменил" + t.af("а", "") + ".",),
    )
    if t.traits.offered:
        t.a2(
            ("Может быть, подобрать другое удобное время?", "Хотите, запишу вас на другой день?"),
            ("На другой день записывать?",),
        )
        if booked:
            t.p("А давайте, на следующую неделю, если есть.")
            _offer_block(t, True, None, identify=False)
        else:
            t.p("Нет, спасибо, пока не нужно, мне уже лучше.", "Нет, я пока не планирую, спасибо.")
            t.a2(("Хорошо, будем рады видеть вас в любое время.",), ("Ясно.",))
    else:
        t.p("Спасибо.", "Хорошо.")
    return reason


def _price_question(t: _Talk, booked: bool, reason: str | None) -> str | None:
    d, rng = t.doctor, t.rng
    _opening(t)
    if t.incoming:
        t.p(
            f"Здравствуйте, подскажите, сколько у вас стоит {t.service[0].lower()}{t.service[1:]}?",
            f"Добрый день. Какая у вас цена на {_accusative(t.service)}?",
        )
        extra = rng.choice(
            (
                "Приём длится около 30 минут.",
                "Если понадобятся анализы, их можно сдать у нас в тот же день.",
                f"Ведёт {d.name}, {d.specialty} высшей категории.",
            )
        )
        t.a2(
            (f"{t.service} стоит {t.price_text}. {extra}", f"{t.service} — {t.price_text}. {extra}"),
            (f"{t.price_text}.", f"{t.price_text}. Цены есть на сайте."),
        )
    else:
        t.a2(
            (f"Вы оставляли на сайте вопрос о стоимости: {t.service[0].lower()}{t.service[1:]} стоит {t.price_text}.",),
            (f"Вы спрашивали цену. {t.service} — {t.price_text}.",),
        )
        t.p("Да-да, спасибо, что перезвонили.")
    if rng.random() < 0.4:
        t.p("А по ДМС вы принимаете?", "А скидки пенсионерам есть?")
        if t.lines[-1][1].startswith("А по ДМС"):
            t.a2(
                (
                    "Да, работаем с основными страховыми: СОГАЗ, Ингосстрах, РЕСО. Нужно только гарантийное "
                    "письмо от страховой.",
                ),
                ("Да. Нужно гарантийное письмо.",),
            )
        else:
            t.a2(
                ("Да, пенсионерам скидка 10 % на все приёмы, только возьмите с собой пенсионное удостоверение.",),
                ("Десять процентов. С удостоверением.",),
            )
    if t.traits.offered:
        t.a2(("Хотите, я вас запишу?", "Давайте я сразу подберу вам время?"), ("Записывать будем?",))
        t.p("А когда есть свободное время?", "А на какое время есть запись?")
        _offer_block(t, booked, reason, identify=t.incoming, price_known=True)
    else:
        t.p("Понятно, спасибо.", "Ясно, спасибо, я подумаю.")
    return reason


_ANALYSES: Final = ("общий анализ крови", "биохимический анализ крови", "анализ на витамин D", "общий анализ мочи")


def _test_results(t: _Talk, booked: bool, reason: str | None) -> str | None:
    d, rng = t.doctor, t.rng
    analysis = {"эндокринолог": "анализ на гормоны щитовидной железы", "кардиолог": "липидный профиль"}.get(
        d.specialty
    ) or rng.choice(_ANALYSES)
    _opening(t)
    if t.incoming:
        ago = rng.choice(("в понедельник", "три дня назад", "на прошлой неделе", "позавчера"))
        t.p(f"Здравствуйте, я сдавал{t.pf('а', '')} {analysis} {ago}. Подскажите, результаты готовы?")
        t.a2(("Назовите, пожалуйста, фамилию и дату рождения.",), ("Фамилия, дата рождения?",))
        t.p(f"{t.patient.full_name}, {t.birth_text}.")
        t.a2(("Минутку, проверю.", "Секундочку, смотрю."), ("Сейчас.",))
        t.hold(5, 20)
        if rng.random() < 0.7:
            t.a2(
                (
                    "Да, результаты готовы. Мы отправили их вам на электронную почту, также можно забрать "
                    "распечатку в регистратуре.",
                ),
                ("Готовы. На почту отправили.",),
            )
            t.p("А там всё в порядке?", "А можете сказать, там всё нормально?")
            t.a2(
                ("Я, к сожалению, не могу комментировать результаты: расшифровку даёт только врач.",),
                ("Это не ко мне, это к врачу.",),
            )
        else:
            ready = t.when.date() + timedelta(days=rng.randint(1, 3))
            t.a2(
                (
                    f"Пока не готовы: {analysis} делается до пяти рабочих дней. Будут готовы к {_date_text(ready)}, "
                    "мы пришлём их на почту.",
                ),
                ("Ещё не готовы. Ждите.",),
            )
        if t.traits.offered:
            t.a2(
                (f"Рекомендую записаться к {d.specialty_dat}, чтобы врач посмотрел результаты.",),
                (f"С результатами идите к {d.specialty_dat}.",),
            )
            t.p(
                "А когда можно к нему попасть?" if not d.female else "А когда можно к ней попасть?",
                "Хорошо, а когда есть время?",
            )
        else:
            t.p(f"Хорошо, понял{t.pf('а', '')}.", "Ладно, спасибо.")
            return reason
    else:
        t.a2(
            (
                f"Звоню сообщить, что ваши результаты анализов готовы. {d.name} их посмотрел{t.df('а', '')} и "
                "просит прийти на приём, чтобы всё обсудить.",
            ),
            (f"Анализы ваши готовы. {d.name} просит прийти.",),
        )
        t.p("Хорошо, а когда можно прийти?", "Спасибо, что позвонили. А когда можно прийти?")
        if not t.traits.offered:
            t.a2(
                ("Подробности расскажет врач. Позвоните, пожалуйста, в регистратуру, когда будет удобно.",),
                ("Это врач скажет. Звоните в регистратуру.",),
            )
            t.p("Хорошо, позвоню.")
            return reason
    _offer_block(t, booked, reason, identify=False)
    return reason


_COMPLAINTS: Final = ("waited", "results", "money", "rude")


def _complaint(t: _Talk, booked: bool, reason: str | None) -> str | None:
    d, rng = t.doctor, t.rng
    issue = rng.choice(_COMPLAINTS)
    _opening(t)
    female = t.patient.female
    if issue == "waited":
        t.p(
            f"Здравствуйте. Я хочу пожаловаться. Вчера я был{t.pf('а', '')} записан{t.pf('а', '')} к "
            f"{d.name_dat}, прождал{t.pf('а', '')} в коридоре сорок минут, и никто даже не извинился!"
        )
        t.p(
            "Я отпрашивал" + ("ась" if female else "ся") + " с работы, у меня было время впритык. "
            "Так нельзя работать с людьми!"
        )
    elif issue == "results":
        t.p(
            "Добрый день. Я уже неделю жду результаты анализов, мне обещали прислать на почту — и ничего! "
            "Третий раз звоню!"
        )
    elif issue == "money":
        t.p("Здравствуйте. У меня с карты дважды списали оплату за приём, я хочу разобраться.")
    else:
        t.p(
            f"Здравствуйте. Я хочу оставить жалобу: {d.name} разговаривал{t.df('а', '')} со мной очень грубо, "
            "даже не выслушал" + t.df("а", "") + "."
        )
    t.a2(
        (
            "Приношу извинения за эту ситуацию. Расскажите, пожалуйста, подробнее, я всё зафиксирую.",
            "Мне очень жаль, что так получилось. Давайте разберёмся, подскажите, пожалуйста, вашу фамилию.",
        ),
        ("Ну а я что сделаю? Я администратор.", "Это не ко мне."),
    )
    if t.traits.polite:
        t.p(f"{t.patient.full_name}. Визит был {rng.choice(('вчера', 'в понедельник', 'на прошлой неделе'))}.")
        t.a2(("Спасибо. Минутку, посмотрю.",), ("Сейчас.",))
        t.hold(15, 60)
        details = {
            "waited": "Вижу: перед вами врач принимал пациента с осложнением, приём затянулся. Это нас не "
            "оправдывает, вас должны были предупредить.",
            "results": "Вижу: результаты пришли из лаборатории позавчера, но письмо не отправилось. "
            "Сейчас отправлю повторно.",
            "money": "Вижу два платежа. Второй возврат оформим на ту же карту, деньги придут в течение "
            "десяти рабочих дней.",
            "rude": "Я зафиксирую ваше обращение и передам заведующей отделением.",
        }
        t.a(details[issue])
        t.p("Ну хорошо, хоть так.", "Надеюсь, это не повторится.")
    else:
        t.p("То есть как это не к вам? А к кому?")
        t.a("Пишите жалобу на сайте.", "Звоните заведующей.")
        t.p("Безобразие какое-то.")
    if t.traits.next_step:
        t.a2(
            (f"Заведующая свяжется с вами сегодня до 18:00, номер вашего обращения — {rng.randint(1200, 4800)}.",),
            ("Заведующая перезвонит до шести.",),
        )
        t.p("Хорошо, жду звонка.")
    if t.traits.offered:
        t.a2(("Также могу подобрать вам удобное время для повторного приёма.",), ("Записывать ещё будете?",))
        t.p("Ну, давайте посмотрим.", "А когда?")
        _offer_block(t, booked, reason, identify=False)
    return reason


def _other(t: _Talk, booked: bool, reason: str | None) -> str | None:
    rng = t.rng
    _opening(t)
    if t.incoming:
        topic = rng.choice(("hours", "dms", "tax", "pool", "parking"))
        if topic == "pool":
            t.doctor = DOCTORS[0]
            t.service, t.price = t.doctor.services[0]
        if topic == "hours":
            t.p("Здравствуйте, подскажите, до скольки вы сегодня работаете и как к вам проехать?")
            t.a2(
                (
                    "Мы работаем по будням с 8 до 20, в субботу с 9 до 17, в воскресенье с 9 до 15. Адрес: улица "
                    "Ленина, 15, пять минут пешком от метро «Садовая».",
                ),
                ("С 8 до 20. Ленина, 15.",),
            )
        elif topic == "dms":
            t.p("Добрый день. Вы работаете по ДМС? У меня полис «Ингосстраха».")
            t.a2(
                (
                    "Да, с «Ингосстрахом» у нас есть договор. Нужно только гарантийное письмо от страховой, его "
                    "можно запросить по телефону, который указан на полисе.",
                ),
                ("Работаем. Берите гарантийное письмо.",),
            )
        elif topic == "tax":
            t.p("Здравствуйте, мне нужна справка для налогового вычета за прошлый год.")
            t.a2(
                (
                    "Справку можно заказать на сайте или у нас в регистратуре, она готовится до пяти рабочих дней. "
                    "Понадобятся паспорт и ИНН.",
                ),
                ("Заказывайте на сайте. Пять рабочих дней.",),
            )
        elif topic == "pool":
            t.p("Здравствуйте, нужна справка в бассейн. Что для этого нужно?")
            t.a2(
                (f"Нужен приём терапевта, это минут пятнадцать. {t.service} стоит {t.price_text}.",),
                (f"Приём терапевта, {t.price_text}.",),
            )
        else:
            t.p("Здравствуйте, а у вас есть парковка рядом с клиникой?")
            t.a2(
                ("Да, во дворе есть бесплатная парковка для пациентов, въезд со стороны улицы Гагарина.",),
                ("Во дворе. Въезд с Гагарина.",),
            )
        if t.traits.offered:
            t.p("Понятно, спасибо.")
            t.a2(("Может быть, сразу вас записать на приём?",), ("Записывать?",))
            t.p("А когда есть время?", "Можно, а на когда?")
            _offer_block(t, booked, reason, identify=True)
        else:
            t.p("Понятно, спасибо.", "Ясно, спасибо большое.")
        return reason
    d = t.doctor
    if rng.random() < 0.5:  # reminder: the appointment already exists, nothing to book
        t.traits.offered = False
        original = t.slot(min_days=1, max_days=1)
        t.a2(
            (f"Напоминаю о вашем приёме у {d.name_gen} {t.at(original)}. Подтверждаете визит?",),
            (f"У вас приём {t.at(original)}. Придёте?",),
        )
        t.p("Да, конечно, приду.", "Да, всё в силе.")
        if t.traits.next_step:
            t.a("Подойдите за 10–15 минут до приёма и возьмите паспорт.")
            t.p("Хорошо.")
        return None
    t.a2(
        (
            f"Вы были у нас на приёме у {d.name_gen} на прошлой неделе. Хотели бы узнать, всё ли вам понравилось? "
            "Оцените, пожалуйста, визит от 1 до 10.",
        ),
        (f"Вы были у {d.name_gen}. Оцените от 1 до 10.",),
    )
    t.p("Ну, на девятку. Врач хороший, только ждать пришлось.", "Десять, всё понравилось.")
    t.a2(("Спасибо за отзыв! Обязательно передам руководству.",), ("Ясно.",))
    if t.traits.offered:
        t.a2(
            (f"{d.name} рекомендовал{t.df('а', '')} контрольный визит через месяц. Давайте подберём время?",),
            ("Контрольный визит записывать?",),
        )
        t.p("Давайте посмотрим.", "Да, а когда можно?")
        _offer_block(t, booked, reason, identify=False)
    return reason


def _short_call(t: _Talk) -> None:
    """A very short answered call (under 10 s): wrong number or a bad moment."""
    if t.incoming:
        _opening(t)
        name = t.rng.choice(("Света", "Серёжа", "Мам", "Оля"))
        t.p(
            f"Алло, {name}? Ой... Извините, я, кажется, ошибся номером."
            if not t.patient.female
            else f"Алло, {name}? Ой... Извините, я, кажется, ошиблась номером."
        )
        t.a2(("Ничего страшного, всего доброго.",), ("Бывает.",))
    else:
        _opening(t)
        t.p("Я за рулём, неудобно говорить, перезвоните позже.")
        t.a2(("Хорошо, извините, перезвоню позже.",), ("Ладно.",))


def _spam(t: _Talk) -> tuple[str, bool]:
    """A spam call; returns the caller's name and whether it was a robot."""
    _opening(t)
    if t.rng.random() < 0.3:
        t.p(
            "Здравствуйте! Это автоматическое сообщение. Вам предварительно одобрен кредит на сумму до пятисот "
            "тысяч рублей. Чтобы узнать подробности, нажмите единицу."
        )
        t.a2(("Алло? Это автоответчик какой-то... Всего доброго.",), ("Робот. Всё.",))
        return "Автоинформатор", True
    name, company, offer = t.rng.choice(_SELLERS)
    t.p(
        f"Добрый день! Меня зовут {name}, компания «{company}». Мы помогаем клиникам {offer}. Могу я поговорить "
        "с главным врачом или руководителем?"
    )
    t.a2(
        ("Спасибо, нам это не интересно.", "Руководитель сейчас занят. Если хотите, пришлите предложение на почту."),
        ("Нам ничего не надо.",),
    )
    t.p("Может быть, я всё-таки отправлю вам коммерческое предложение?")
    t.a2(
        ("Отправляйте на info@zdorovie-clinic.ru, если будет интересно — с вами свяжутся. Всего доброго.",),
        ("Не надо. До свидания.",),
    )
    return f"{name}, компания «{company}»", False
