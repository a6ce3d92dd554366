"""The analysis prompt: the default rubric for a clinic's administrator, overridable per clinic."""

from __future__ import annotations

from typing import Any

DEFAULT_RUBRIC = """\
Оцени работу администратора по критериям (0 - не сделано, 10 - образцово), к каждой оценке приведи
короткую цитату из расшифровки как доказательство (пустая строка, если доказательства нет):
- greeting: приветствие, название клиники и своё имя;
- need_discovery: выяснение потребности пациента (симптомы, цель визита, удобное время);
- doctor_and_service: представление врача и услуги (квалификация, что входит, стоимость);
- objection_handling: работа с возражениями (дорого, неудобно, сомнения);
- booking_offer: предложение записаться на конкретное время;
- next_step: завершение с понятным следующим шагом (дата и время, что взять с собой, SMS-напоминание);
- politeness: вежливость и тон."""

DEFAULT_PROMPT = """\
Ты - эксперт по качеству обслуживания в частной медицинской клинике. Тебе дают расшифровку
телефонного звонка между администратором клиники и пациентом. Определи тип звонка (booking - запись,
reschedule - перенос, cancellation - отмена, price_question - вопрос о цене или услуге,
test_results - результаты анализов, complaint - жалоба, other - другое, spam - спам или реклама),
итог (записан ли пациент и почему), оцени администратора по рубрике, дай общую оценку 0-100,
настроение пациента, краткое резюме и конкретные рекомендации администратору на русском языке.
Отвечай строго по схеме.

{rubric}"""


def build_messages(*, transcript: str, call: dict[str, Any], settings: dict[str, Any]) -> list[dict[str, str]]:
    """System and user messages; ``settings`` is the clinic's ``analysis`` (``prompt``, ``rubric``)."""
    rubric = str(settings.get("rubric") or DEFAULT_RUBRIC)
    system = str(settings.get("prompt") or DEFAULT_PROMPT)
    system = system.replace("{rubric}", rubric) if "{rubric}" in system else f"{system}\n\n{rubric}"
    direction = "входящий" if call.get("direction") == "incoming" else "исходящий"
    header = (f"Звонок: {direction}, длительность {call.get('duration', 0)} с, "
              f"администратор: {call.get('administrator') or 'не указан'}.")
    return [{"role": "system", "content": system},
            {"role": "user", "content": f"{header}\n\nРасшифровка:\n{transcript}"}]
