"""MT-Bench answer generation in FastChat's file formats (docs/paper_notes.md §3.5).

The caller supplies the question file (FastChat's `data/mt_bench/question.jsonl`) and a `chat`
callable that runs the model; this module only drives the two-turn conversations, applies
FastChat's per-category temperatures and writes FastChat's answer file, one line per
question as soon as it is answered, so a crash loses at most the question in progress and
a rerun resumes where it stopped. Judging (GPT-4) stays with FastChat's `gen_judgment.py`.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Protocol

from soo_jax import run_dir

__all__ = [
    "CATEGORY_TEMPERATURE", "DEFAULT_TEMPERATURE", "GREEDY_BELOW", "MTBenchQuestion",
    "ChatFunction", "temperature_for", "load_questions", "answered_question_ids",
    "generate_answers", "reorganise_answer_file",
]

# FastChat `llm_judge/common.py::temperature_config`; other categories get 0.7.
CATEGORY_TEMPERATURE: dict[str, float] = {
    "writing": 0.7, "roleplay": 0.7, "extraction": 0.0, "math": 0.0, "coding": 0.0,
    "reasoning": 0.0, "stem": 0.1, "humanities": 0.1, "arena-hard-200": 0.0,
}
DEFAULT_TEMPERATURE = 0.7
# FastChat decodes greedily (do_sample=False) below this temperature; `chat` should too.
GREEDY_BELOW = 1e-4


class ChatFunction(Protocol):
    def __call__(self, messages: list[dict], temperature: float, max_new_tokens: int) -> str:
        """Reply to `messages` ([{"role": "user"|"assistant", "content": str}, ...], ending
        with a user message), applying the model's chat template itself."""


@dataclasses.dataclass(frozen=True)
class MTBenchQuestion:
    question_id: int | str
    category: str
    turns: tuple[str, ...]


def temperature_for(category: str) -> float:
    return CATEGORY_TEMPERATURE.get(category, DEFAULT_TEMPERATURE)


def load_questions(path: str | os.PathLike) -> list[MTBenchQuestion]:
    """Questions of a FastChat question file (JSON lines with `question_id`, `category`,
    `turns`), in file order. Raises ValueError naming the line for anything malformed."""
    questions: list[MTBenchQuestion] = []
    seen: set = set()
    with open(path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}, line {line_number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: not valid JSON ({e})") from e
            if not isinstance(row, dict):
                raise ValueError(f"{where}: expected a JSON object")
            missing = {"question_id", "category", "turns"} - row.keys()
            if missing:
                raise ValueError(f"{where}: missing field(s) {sorted(missing)}")
            qid, category, turns = row["question_id"], row["category"], row["turns"]
            if isinstance(qid, bool) or not isinstance(qid, (int, str)):
                raise ValueError(f"{where}: question_id must be an int or a string")
            if not isinstance(category, str):
                raise ValueError(f"{where}: category must be a string")
            if (not isinstance(turns, list) or not turns
                    or not all(isinstance(t, str) and t for t in turns)):
                raise ValueError(f"{where}: turns must be a non-empty list of non-empty strings")
            if qid in seen:
                raise ValueError(f"{where}: duplicate question_id {qid!r}")
            seen.add(qid)
            questions.append(MTBenchQuestion(qid, category, tuple(turns)))
    if not questions:
        raise ValueError(f"{path}: no questions")
    return questions


def _drop_torn_tail(path: str | os.PathLike) -> None:
    """Cut a last line that a crash left unterminated, so appending continues on a fresh line."""
    with open(path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)


def answered_question_ids(answer_file: str | os.PathLike, model_id: str) -> set:
    """Question ids already answered by `model_id` in an answer file (empty if none). An
    unterminated last line (a write cut off by a crash) does not count as an answer."""
    if not os.path.exists(answer_file):
        return set()
    answered = set()
    with open(answer_file, encoding="utf-8") as f:
        for line_number, line in enumerate(f, start=1):
            if not line.endswith("\n") or not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{answer_file}, line {line_number}: not valid JSON ({e})") from e
            if row.get("model_id") == model_id:
                answered.add(row["question_id"])
    return answered


def _answer_turns(chat: ChatFunction, question: MTBenchQuestion,
                  max_new_tokens: int) -> list[str]:
    temperature = temperature_for(question.category)
    messages: list[dict] = []
    replies = []
    for turn in question.turns:
        messages.append({"role": "user", "content": turn})
        reply = chat(list(messages), temperature, max_new_tokens)
        if not isinstance(reply, str):
            raise TypeError(f"chat returned {type(reply).__name__}, expected str")
        messages.append({"role": "assistant", "content": reply})
        replies.append(reply)
    return replies


def generate_answers(question_file: str | os.PathLike, answer_file: str | os.PathLike,
                     chat: ChatFunction, model_id: str, *, max_new_tokens: int = 1024,
                     question_ids: Sequence[int | str] | None = None,
                     clock: Callable[[], float] = time.time,
                     progress: Callable[[MTBenchQuestion], None] | None = None) -> int:
    """Answer every question not yet answered by `model_id` in `answer_file`; return how many
    were answered now. Each answer is appended as FastChat writes it (`question_id`,
    `answer_id`, `model_id`, `choices: [{"index": 0, "turns": [...]}]`, `tstamp`) and flushed
    to disk before the next question starts. `question_ids` restricts the run to those ids.
    Finally the file is sorted and de-duplicated like FastChat's `reorg_answer_file`.
    """
    questions = load_questions(question_file)
    if question_ids is not None:
        wanted = set(question_ids)
        unknown = wanted - {q.question_id for q in questions}
        if unknown:
            raise ValueError(f"question ids not in {question_file}: {sorted(unknown, key=str)}")
        questions = [q for q in questions if q.question_id in wanted]
    os.makedirs(os.path.dirname(os.path.abspath(answer_file)), exist_ok=True)
    if os.path.exists(answer_file):
        _drop_torn_tail(answer_file)
    done = answered_question_ids(answer_file, model_id)
    answered_now = 0
    for question in questions:
        if question.question_id in done:
            continue
        if progress is not None:
            progress(question)
        turns = _answer_turns(chat, question, max_new_tokens)
        row = {"question_id": question.question_id, "answer_id": uuid.uuid4().hex,
               "model_id": model_id, "choices": [{"index": 0, "turns": turns}],
               "tstamp": clock()}
        with open(answer_file, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
        answered_now += 1
    if os.path.exists(answer_file):
        reorganise_answer_file(answer_file)
    return answered_now


def reorganise_answer_file(answer_file: str | os.PathLike) -> None:
    """Sort by (model_id, question_id), keeping the last answer of each; written atomically.
    (FastChat keys by question id alone, which assumes one model per file.)"""
    _drop_torn_tail(answer_file)
    latest: dict = {}
    with open(answer_file, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                latest[(row.get("model_id"), row["question_id"])] = line
    ordered = sorted(latest.items(), key=lambda item: (str(item[0][0]), _id_sort_key(item[0][1])))
    run_dir.atomic_write_text(answer_file, "".join(line for _, line in ordered).encode("utf-8"))


def _id_sort_key(question_id: int | str) -> tuple:
    # Numeric ids first in numeric order (MT-Bench's are 81..160), then string ids.
    return (0, question_id, "") if isinstance(question_id, int) else (1, 0, str(question_id))
