"""Answers written as they are generated, so an interrupted evaluation resumes without
re-answering.

Every generated completion is appended (per batch, flushed) to a JSONL file with what
determined it: the model label, `max_new_tokens`, the prompt and its stop texts. Greedy decoding
makes the completion a function of these (and of the model and settings, which the output
directory's manifest fixes), so a rerun takes stored answers as they are and generates only the
missing ones. A line cut short by a kill is ignored.
"""
from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Callable, Sequence

Generate = Callable[..., list[str]]


def _key(label: str, max_new_tokens: int, prompt: str, stops: Sequence[str] | None) -> str:
    return json.dumps([label, int(max_new_tokens), prompt, list(stops) if stops is not None else None])


class AnswerLog:
    def __init__(self, path: str | os.PathLike):
        self.path = pathlib.Path(path)
        self.answers: dict[str, str] = {}
        if self.path.is_file():
            for line in self.path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # cut short by a kill
                self.answers[record["key"]] = record["response"]
        self.reused = 0

    def _append(self, keys: list[str], responses: list[str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            for key, response in zip(keys, responses):
                f.write(json.dumps({"key": key, "response": response}) + "\n")
                self.answers[key] = response
            f.flush()
            os.fsync(f.fileno())

    def wrap(self, generate: Generate, label: str, max_new_tokens: int) -> Generate:
        """`generate` answering from the log where it can, logging what it generates."""

        def logged(prompts: Sequence[str], stop_texts: Sequence[Sequence[str]] | None = None) -> list[str]:
            stops = list(stop_texts) if stop_texts is not None else [None] * len(prompts)
            keys = [_key(label, max_new_tokens, p, s) for p, s in zip(prompts, stops)]
            missing = [i for i, k in enumerate(keys) if k not in self.answers]
            self.reused += len(keys) - len(missing)
            if missing:
                asked = [prompts[i] for i in missing]
                asked_stops = [stops[i] for i in missing] if stop_texts is not None else None
                kwargs = {} if asked_stops is None else {"stop_texts": asked_stops}
                if getattr(generate, "reports_batches", False):
                    generate(asked, on_batch=lambda idx, texts: self._append([keys[missing[i]] for i in idx], texts),
                             **kwargs)
                else:  # a generator without per-batch reports: logged when the call returns
                    self._append([keys[i] for i in missing], generate(asked, **kwargs))
            return [self.answers[k] for k in keys]

        logged.stops_on_texts = getattr(generate, "stops_on_texts", False)
        return logged

    def remove(self) -> None:
        """Once the full report is written the log has served its purpose."""
        self.path.unlink(missing_ok=True)
