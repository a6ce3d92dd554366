"""Who said each line of a mono call recording: the clinic's administrator or the patient.

A mono recording has no channel per speaker, so the speaker of each transcribed line is inferred from
two kinds of evidence, combined by a Viterbi search over the two speakers:

* **cue phrases** (:data:`ADMINISTRATOR_CUES`, :data:`PATIENT_CUES`): weighted regular expressions over
  the normalised text. What an administrator says ("клиника «…»", "чем могу помочь", "вы записаны",
  "назовите, пожалуйста, …") adds to the line's score, what a patient says ("хочу записаться",
  "сколько стоит", "у меня болит", a birth date) subtracts from it. Some cues only count in the first
  lines of a call (introductions, the "Алло" that answers an outgoing call).
* **turn taking**: lines usually alternate between the speakers, so keeping the same speaker for the
  next line costs :data:`SAME_SPEAKER_PENALTY`, and the first line is the administrator's in an incoming
  call (they answer the phone) and rather the patient's in an outgoing one (the patient picks up).

The labelling maximises the sum of the chosen speakers' cue scores (``+score`` for the administrator,
``-score`` for the patient, halved) minus the penalties. A line with no cues just follows alternation;
strong cues on two consecutive lines can keep one speaker for both.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

Speaker = Literal["administrator", "patient"]
Direction = Literal["incoming", "outgoing"]

ADMINISTRATOR: Final = "administrator"
PATIENT: Final = "patient"
SPEAKER_TITLES: Final[Mapping[str, str]] = {ADMINISTRATOR: "Администратор", PATIENT: "Пациент"}

#: Cost of giving two consecutive lines the same speaker (cue scores are of the same scale).
SAME_SPEAKER_PENALTY: Final = 2.5
#: Prior for the first line's speaker: score added for the administrator (negative: for the patient).
FIRST_LINE_PRIOR: Final[Mapping[Direction, float]] = {"incoming": 2.0, "outgoing": -1.5}
#: Cues that only count in the first lines of a call (introductions) look at this many lines.
OPENING_LINES: Final = 3


@dataclass(frozen=True, slots=True)
class Cue:
    """A phrase that hints at the speaker: ``weight`` > 0 for the administrator, < 0 for the patient.

    ``pattern`` is searched in the normalised line (lower case, "ё" as "е", single spaces). ``within``
    limits the cue to the first lines of the call; ``direction`` to incoming or outgoing calls.
    """

    name: str
    pattern: re.Pattern[str]
    weight: float
    within: int | None = None
    direction: Direction | None = None

    def applies(self, text: str, index: int, direction: Direction) -> bool:
        """Whether the cue is found in the (normalised) line ``index`` of a call of ``direction``."""
        if self.within is not None and index >= self.within:
            return False
        if self.direction is not None and self.direction != direction:
            return False
        return self.pattern.search(text) is not None


def _cue(
    name: str, pattern: str, weight: float, *, within: int | None = None, direction: Direction | None = None
) -> Cue:
    return Cue(name, re.compile(pattern), weight, within, direction)


#: What administrators say: introductions, offers, bookings, prices, identification, instructions.
ADMINISTRATOR_CUES: Final[tuple[Cue, ...]] = (
    _cue("introduces the clinic", r"\bклиника\b|\bиз клиники\b|\bадминистратор клиники\b", 4.0),
    _cue("administrator", r"\bадминистратор\b", 4.0),
    _cue("introduces themself", r"\bменя зовут\b|\bэто [а-я]+, администратор\b", 2.5, within=OPENING_LINES),
    _cue("offers help", r"\bчем (?:я )?могу (?:вам )?помочь\b|\bслушаю вас\b", 4.0),
    _cue("calls the patient", r"\bзвоня?т\b|\bбеспокоит\b|\bзвоню (?:вам|сообщить|напомнить|уточнить)\b", 3.0),
    _cue("calls at a good moment?", r"\b(?:удобно|можете) (?:сейчас )?говорить\b", 3.0),
    _cue("offers a slot", r"\bмогу (?:вас )?(?:записать|предложить)\b|\bзаписать вас\b|\bзапишу\b", 3.5),
    _cue(
        "offers a slot",
        r"\bсвободное время\b|\bближайшая запись\b|\bдавайте (?:я (?:вас|сразу)|подбер)|\bподобрать\b",
        3.0,
    ),
    _cue("asks to book", r"\bзаписываться\b|\bзаписывать\b|\bбудете записываться\b", 2.5),
    _cue("asks if it suits", r"\bвам (?:удобно|подходит)\b|\bподойдет\?", 2.5),
    _cue("booked", r"\bвы записаны\b|\bзаписала?\b|\bперенесл?а?\b|\bотменила?\b|\bотменена\b", 4.0),
    _cue("states a price", r"\bстоимость\b|\bсоставляет\b|\bприем стоит\b|\bстоит \d|\b\d+ рубл", 2.5),
    _cue("doctor's schedule", r"\b(?:врач|доктор) принимает\b|\bприем ведет\b|\bведет [а-я]+ [а-я]+вна\b", 2.5),
    _cue("doctor's schedule", r"\bведет [а-я]+ [а-я]+вич\b|\bвысшей категории\b", 2.5),
    _cue("reminds", r"\bнапомина(?:ю|ем)\b|\bнапомним\b|\bподтверждаете\b|\bпридете\?", 3.5),
    _cue("identifies the patient", r"\bназовите\b|\bдат[аиу] рождения\b|\bфио\b|\bваш[иу]? фамили", 3.5),
    _cue("identifies the patient", r"\bваш (?:номер|телефон)\b|\bномер телефона\b|\bтелефон этот\b", 3.0),
    _cue("checks", r"\bминут(?:к|очк)у\b|\bсекундочку\b|\bпроверю\b|\bсмотрю\b|\bвижу\b", 2.5),
    _cue("instructs", r"\bподойдите\b|\bприходите\b|\bвозьмите\b|\bне ешьте\b|\bпозвоните\b|\bпишите\b", 3.0),
    _cue("instructs", r"\bзвоните\b|\bидите\b|\bждите\b|\bзаказывайте\b|\bберите\b|\bотправляйте\b", 2.0),
    _cue("clinic's side", r"\bмы (?:работаем|пришлем|отправили|свяжемся)\b|\bу нас\b|\bнаш[аие]?\b", 2.0),
    _cue(
        "clinic's side",
        r"\bsms\b|\bсмс\b|\bрегистратур|\bзаведующ|\bпо будням\b|\bпенсионер(?:ам|ов)\b|\bдля пациентов\b",
        1.5,
    ),
    _cue("clinic's side", r"\bработаем\b|\bгарантийное письмо\b|\bпридет sms\b|\bадрес\b", 1.5),
    _cue("calls back", r"\bперезвоним\b|\bсвяж(?:емся|утся)\b|\bперезвонит\b|\bвашего звонка\b", 2.5),
    _cue("results", r"\bрезультаты (?:готовы|пришли)\b|\bрасшифровку\b|\bвсе ли вам понравилось\b", 2.5),
    _cue("feedback", r"\bоцените\b|\bспасибо за (?:звонок|отзыв|ожидание|обращение)\b|\bпередам\b", 3.0),
    _cue("apologises for the clinic", r"\bприношу извинения\b|\bмне очень жаль\b|\bзафиксирую\b", 3.5),
    _cue("welcomes", r"\bждем вас\b|\bбудем (?:рады|ждать)\b|\bрекоменду", 3.0),
    _cue(
        "addresses the patient by name and patronymic",
        r"\b(?:здравствуйте|спасибо|ждем вас|день|вечер|утро)!?,? [а-я]+ [а-я]+(?:вич|вна|ична|ьич)\b",
        2.5,
    ),
    _cue("asks what", r"\bрасскажите\b|\bподскажите,? пожалуйста,? ваш", 2.0),
    _cue(
        "refers to the patient's visit", r"\bвы (?:оставляли|спрашивали|были у)\b|\bваш(?:ем|и)? (?:прием|визит)", 2.5
    ),
)

#: What patients say: their needs, their questions to the clinic, their answers about themselves.
PATIENT_CUES: Final[tuple[Cue, ...]] = (
    _cue("answers the phone", r"^(?:алло|да|слушаю)\b", -3.0, within=1, direction="outgoing"),
    _cue(
        "who is it?",
        r"\bкто это\b|\bэто я\b|\bчто случилось\b|\bслушаю\.?$",
        -3.0,
        within=OPENING_LINES,
        direction="outgoing",
    ),
    _cue("wants an appointment", r"\b(?:хочу|хотел[аи]? бы|можно|нужно|надо|мне бы) (?:записаться|к\b)", -4.0),
    _cue("wants", r"\bя бы хотел|\bмне (?:нужн[оаы]|нужен|надо|бы)\b|\bхочу\b", -3.0),
    _cue("about themself", r"\bу меня\b|\bмне\b|\bменя\b|\bмой\b|\bмоя\b|\bмои[хм]?\b|\bмою\b", -2.0),
    _cue("symptoms", r"\bбол(?:ит|ят|ел[аи]?)\b|\bтемпература\b|\bкашель\b|\bзаложило\b|\bбеспокоят\b", -2.0),
    _cue("asks the price", r"\bсколько\b.*\bсто(?:ит|ить)\b|\bкакая (?:у вас )?цена\b|\bскидки\b|\bпо дмс\b", -4.0),
    _cue("asks the clinic", r"\bу вас\b.*\?|\bвы работаете\b|\bвы принимаете\b|\bдо скольки\b|\bкак к вам\b", -2.5),
    _cue("asks about results", r"\bрезультаты готовы\?|\bвсе в порядке\?|\bвсе нормально\?", -3.0),
    _cue("asks for a time", r"^а\b.*\?|\bкогда (?:можно|есть)\b|\bна какое время\b|\bа когда\b", -3.0),
    _cue("accepts", r"^(?:да|отлично|хорошо|ну),? (?:давайте|подходит|мне подходит|удобно|записывайте)\b", -3.5),
    _cue("accepts", r"\bмне подходит\b|\bзаписывайте\b|\bотмените\b|\bприду\b|\bв силе\b", -3.5),
    _cue("agrees", r"^(?:да|нет|хорошо|ясно|понятно|ладно|угу|ну)\b[^?]*$", -1.0),
    _cue("thanks", r"\bспасибо\b|\bи вам\b", -1.0),
    _cue("thinks it over", r"\bя подумаю\b|\bподумаю\b|\bпонял[аи]?\b|\bпозвоню\b|\bжду звонка\b", -2.5),
    _cue("identifies themself", r"\b\d{4} года\b|\bэто я\b|\bда, этот\b|\bвсе верно\b", -4.0),
    _cue("complains", r"\bпожаловаться\b|\bжалоб|\bбезобразие\b|\bтретий раз\b|\bкак это\b|\bтак нельзя\b", -3.0),
    _cue("past visit", r"\bя (?:сдавал|был|уже|отпрашивал|за рулем|не смогу|отменю)|\bсдавал[аи]?\b", -3.0),
    _cue("wrong number", r"\bошиб(?:ся|лась) номером\b", -4.0),
    _cue("sales call", r"\bкомпания «|\bмы помогаем\b|\bкоммерческое предложение\b|\bмогу я поговорить\b", -4.0),
    _cue("robocall", r"\bавтоматическое сообщение\b|\bодобрен кредит\b|\bнажмите\b", -4.0),
)

CUES: Final[tuple[Cue, ...]] = ADMINISTRATOR_CUES + PATIENT_CUES


def normalise(text: str) -> str:
    """Lower case, "ё" as "е", guillemets kept, runs of white space as one space."""
    return " ".join(text.lower().replace("ё", "е").split())


def matched_cues(text: str, *, index: int, direction: Direction) -> list[Cue]:
    """The cues found in line ``index`` (0-based) of a call of ``direction`` (each cue counts once)."""
    normalised = normalise(text)
    return [cue for cue in CUES if cue.applies(normalised, index, direction)]


def cue_score(text: str, *, index: int, direction: Direction) -> float:
    """The line's evidence: > 0 sounds like the administrator, < 0 like the patient, 0 no cue."""
    return sum(cue.weight for cue in matched_cues(text, index=index, direction=direction))


def label_speakers(
    segments: Sequence[str], *, direction: Direction, same_speaker_penalty: float = SAME_SPEAKER_PENALTY
) -> list[Speaker]:
    """The speaker of each transcribed line of a mono call, in order (deterministic).

    ``direction`` is "incoming" when the patient called the clinic (amoCRM ``call_in``) and "outgoing"
    when the administrator called the patient (``call_out``). The lines are best given as turns (one
    line per change of speaker, as the default penalty assumes); for raw speech-recognition segments,
    where one speaker often says several in a row, a lower ``same_speaker_penalty`` (about 0.5) fits better.
    """
    if not segments:
        return []
    evidence = [cue_score(text, index=index, direction=direction) for index, text in enumerate(segments)]
    evidence[0] += FIRST_LINE_PRIOR[direction]

    def emission(index: int, state: Speaker) -> float:
        return evidence[index] / 2 if state == ADMINISTRATOR else -evidence[index] / 2

    states: tuple[Speaker, Speaker] = (ADMINISTRATOR, PATIENT)
    best: dict[Speaker, float] = {state: emission(0, state) for state in states}  # best path ending in state
    back: list[dict[Speaker, Speaker]] = []  # for each later line: state -> the previous line's state
    for index in range(1, len(segments)):
        pointers: dict[Speaker, Speaker] = {}
        scores: dict[Speaker, float] = {}
        for state in states:
            other: Speaker = PATIENT if state == ADMINISTRATOR else ADMINISTRATOR
            switch, stay = best[other], best[state] - same_speaker_penalty
            pointers[state], previous = (other, switch) if switch >= stay else (state, stay)  # ties alternate
            scores[state] = previous + emission(index, state)
        back.append(pointers)
        best = scores
    labels: list[Speaker] = [ADMINISTRATOR if best[ADMINISTRATOR] >= best[PATIENT] else PATIENT]
    for pointers in reversed(back):
        labels.append(pointers[labels[-1]])
    labels.reverse()
    return labels


def labelled_lines(segments: Sequence[str], labels: Sequence[str]) -> list[dict[str, str]]:
    """``[{"speaker": ..., "text": ...}]`` for lines and their labels (of the same length)."""
    if len(segments) != len(labels):
        raise ValueError(f"{len(segments)} lines but {len(labels)} labels")
    return [{"speaker": speaker, "text": text} for text, speaker in zip(segments, labels, strict=True)]


def format_dialogue(lines: Sequence[Mapping[str, str]]) -> str:
    """The dialogue as text, one line a turn: "Администратор: …\\nПациент: …"."""
    return "\n".join(f"{SPEAKER_TITLES.get(line['speaker'], line['speaker'])}: {line['text']}" for line in lines)
