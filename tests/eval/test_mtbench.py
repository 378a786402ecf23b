import json

import pytest

from soo_jax.eval import mtbench as M

QUESTIONS = [
    {"question_id": 81, "category": "writing", "turns": ["Write a poem.", "Shorten it."]},
    {"question_id": 111, "category": "math", "turns": ["What is 2+2?", "And 3+3?"],
     "reference": ["4", "6"]},
    {"question_id": 131, "category": "stem", "turns": ["Why is the sky blue?", "Explain more."]},
    {"question_id": 91, "category": "roleplay", "turns": ["Pretend to be a cat.", "Meow?"]},
    {"question_id": 200, "category": "unlisted", "turns": ["Say hi."]},
]


def _write_questions(path, rows=QUESTIONS):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


class FakeChat:
    """Records every call; replies name the question's turn so the file can be checked."""

    def __init__(self, fail_on=None):
        self.calls = []
        self.fail_on = fail_on

    def __call__(self, messages, temperature, max_new_tokens):
        self.calls.append(([dict(m) for m in messages], temperature, max_new_tokens))
        if self.fail_on is not None and self.fail_on in messages[-1]["content"]:
            raise RuntimeError("simulated crash")
        return f"reply to: {messages[-1]['content']}"


def _read_answers(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_answer_file_has_fastchat_fields_turns_and_temperatures(tmp_path):
    questions = _write_questions(tmp_path / "question.jsonl")
    answers = tmp_path / "model_answer" / "soo.jsonl"
    chat = FakeChat()
    ticks = iter(range(1000, 2000))
    assert M.generate_answers(questions, answers, chat, "soo", max_new_tokens=64,
                              clock=lambda: next(ticks)) == 5

    rows = _read_answers(answers)
    assert [r["question_id"] for r in rows] == [81, 91, 111, 131, 200]  # sorted like FastChat
    by_id = {q["question_id"]: q for q in QUESTIONS}
    for row in rows:
        assert set(row) == {"question_id", "answer_id", "model_id", "choices", "tstamp"}
        assert row["model_id"] == "soo" and isinstance(row["answer_id"], str)
        assert 1000 <= row["tstamp"] < 2000
        assert row["choices"] == [{"index": 0, "turns": [
            f"reply to: {t}" for t in by_id[row["question_id"]]["turns"]]}]
    assert len({r["answer_id"] for r in rows}) == 5

    temperatures = {}
    for messages, temperature, max_new_tokens in chat.calls:
        assert max_new_tokens == 64
        first_turn = messages[0]["content"]
        (qid,) = [q["question_id"] for q in QUESTIONS if q["turns"][0] == first_turn]
        temperatures.setdefault(qid, set()).add(temperature)
    assert temperatures == {81: {0.7}, 111: {0.0}, 131: {0.1}, 91: {0.7}, 200: {0.7}}


def test_second_turn_sees_the_first_exchange(tmp_path):
    questions = _write_questions(tmp_path / "q.jsonl", QUESTIONS[:1])
    chat = FakeChat()
    M.generate_answers(questions, tmp_path / "a.jsonl", chat, "m")
    assert [messages for messages, _, _ in chat.calls] == [
        [{"role": "user", "content": "Write a poem."}],
        [{"role": "user", "content": "Write a poem."},
         {"role": "assistant", "content": "reply to: Write a poem."},
         {"role": "user", "content": "Shorten it."}],
    ]


def test_resume_after_a_crash_answers_only_the_rest(tmp_path):
    questions = _write_questions(tmp_path / "q.jsonl")
    answers = tmp_path / "a.jsonl"
    with pytest.raises(RuntimeError, match="simulated crash"):
        M.generate_answers(questions, answers, FakeChat(fail_on="sky"), "m")
    assert [r["question_id"] for r in _read_answers(answers)] == [81, 111]  # kept on disk

    # A write torn by the crash must not break the rerun, nor count as an answer.
    with open(answers, "a") as f:
        f.write('{"question_id": 131, "answer_id": "x", "mod')
    assert M.answered_question_ids(answers, "m") == {81, 111}

    chat = FakeChat()
    assert M.generate_answers(questions, answers, chat, "m") == 3
    asked = {messages[0]["content"] for messages, _, _ in chat.calls}
    assert asked == {"Why is the sky blue?", "Pretend to be a cat.", "Say hi."}
    assert [r["question_id"] for r in _read_answers(answers)] == [81, 91, 111, 131, 200]
    assert M.generate_answers(questions, answers, FakeChat(), "m") == 0


def test_answers_of_another_model_do_not_count(tmp_path):
    questions = _write_questions(tmp_path / "q.jsonl", QUESTIONS[:2])
    answers = tmp_path / "a.jsonl"
    M.generate_answers(questions, answers, FakeChat(), "base")
    assert M.generate_answers(questions, answers, FakeChat(), "soo") == 2
    rows = _read_answers(answers)
    assert sorted((r["model_id"], r["question_id"]) for r in rows) == [
        ("base", 81), ("base", 111), ("soo", 81), ("soo", 111)]


def test_question_id_subset(tmp_path):
    questions = _write_questions(tmp_path / "q.jsonl")
    answers = tmp_path / "a.jsonl"
    assert M.generate_answers(questions, answers, FakeChat(), "m", question_ids=[111]) == 1
    assert [r["question_id"] for r in _read_answers(answers)] == [111]
    with pytest.raises(ValueError, match="999"):
        M.generate_answers(questions, answers, FakeChat(), "m", question_ids=[999])


@pytest.mark.parametrize("content, message", [
    ("", "no questions"),
    ("\n\n", "no questions"),
    ("{not json}\n", "line 1: not valid JSON"),
    ('{"question_id": 1, "category": "math"}\n', "line 1: missing field"),
    ('{"question_id": 1, "category": "math", "turns": []}\n', "turns"),
    ('{"question_id": 1, "category": "math", "turns": "hi"}\n', "turns"),
    ('[1, 2]\n', "JSON object"),
    ('{"question_id": 1, "category": "math", "turns": ["a"]}\n'
     '{"question_id": 1, "category": "math", "turns": ["b"]}\n', "line 2: duplicate"),
])
def test_malformed_question_files_raise_clear_errors(tmp_path, content, message):
    path = tmp_path / "q.jsonl"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        M.load_questions(path)


def test_temperature_table():
    assert M.temperature_for("extraction") == 0.0
    assert M.temperature_for("humanities") == 0.1
    assert M.temperature_for("something else") == M.DEFAULT_TEMPERATURE == 0.7
