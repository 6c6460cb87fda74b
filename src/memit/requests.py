"""Edit requests and the files they come in.

A request is one fact to write: a prompt template with ``{}`` for the subject, the subject, and
the new target. Benchmark records also carry prompts to judge the edit by (paraphrases,
neighbours); a :class:`Case` holds both. Loaders accept our own JSON/JSONL, the ROME/CounterFact
schema, EasyEdit's reduced CounterFact and zsRE (MEND) records, and say in one line which record
and which field is wrong.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

MAX_FILE_BYTES = 512 * 1024 * 1024


class RequestError(ValueError):
    """A bad request or request file; the message names the record and the field."""


@dataclass(frozen=True)
class EditRequest:
    prompt: str  # template with "{}" where the subject goes
    subject: str
    target_new: str
    target_true: str | None = None
    case_id: int | str | None = None

    @property
    def text(self) -> str:
        return self.prompt.replace("{}", self.subject, 1)


@dataclass(frozen=True)
class Case:
    """A request with the prompts that evaluate it (all filled in, no ``{}``)."""

    request: EditRequest
    paraphrase_prompts: tuple[str, ...] = ()
    neighborhood_prompts: tuple[str, ...] = ()
    generation_prompts: tuple[str, ...] = ()
    # zsRE's specificity probe: an unrelated question and its answer.
    loc_prompt: str | None = None
    loc_answer: str | None = None
    extra: dict = field(default_factory=dict)


def where_of(i: int, case_id=None, kind: str = "record") -> str:
    """How an error names a record: its index, and its case_id (repr'd, so it stays one line)."""
    if case_id is None:
        return f"{kind} {i}"
    return f"{kind} {i} (case_id {case_id if isinstance(case_id, int) else repr(case_id)})"


def _where(i: int, rec) -> str:
    return where_of(i, rec.get("case_id") if isinstance(rec, dict) else None)


def _str(rec: dict, key: str, where: str, *, path: str | None = None) -> str:
    value = rec.get(key) if isinstance(rec, dict) else None
    name = path or key
    if value is None:
        raise RequestError(f"{where}: missing field '{name}'")
    if not isinstance(value, str):
        raise RequestError(f"{where}: field '{name}' must be a string, got {type(value).__name__}")
    return value


def _template(prompt: str, subject: str, where: str) -> str:
    """A template with exactly one ``{}``; a filled-in prompt is turned into one."""
    if "{}" in prompt:
        return prompt
    if subject and subject in prompt:
        return prompt.replace(subject, "{}", 1)
    raise RequestError(f"{where}: field 'subject': {subject!r} does not occur in prompt {prompt!r} and the prompt has no '{{}}'")


def make_request(rec: dict, where: str, case_id=None) -> EditRequest:
    """Our own format: {"prompt", "subject", "target_new", optional "target_true"}."""
    subject = _str(rec, "subject", where)
    prompt = _template(_str(rec, "prompt", where), subject, where)
    target_true = rec.get("target_true")
    if target_true is not None and not isinstance(target_true, str):
        raise RequestError(f"{where}: field 'target_true' must be a string")
    req = EditRequest(prompt, subject, _str(rec, "target_new", where), target_true,
                      rec.get("case_id", case_id))
    validate(req, where)
    return req


def validate(req: EditRequest, where: str = "request") -> None:
    if not req.subject.strip():
        raise RequestError(f"{where}: field 'subject' is empty")
    if req.prompt.count("{}") != 1:
        raise RequestError(f"{where}: field 'prompt' must contain '{{}}' exactly once: {req.prompt!r}")
    if not req.target_new.strip():
        raise RequestError(f"{where}: field 'target_new' is empty")
    if req.target_true is not None and req.target_new.strip() == req.target_true.strip():
        raise RequestError(f"{where}: field 'target_new' equals target_true ({req.target_new!r})")


def parse_record(rec, i: int) -> Case:
    """One record of any supported schema, told apart by its keys."""
    where = _where(i, rec)
    if not isinstance(rec, dict):
        raise RequestError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    if "requested_rewrite" in rec:  # ROME / CounterFact
        rw = rec["requested_rewrite"]
        if not isinstance(rw, dict):
            raise RequestError(f"{where}: field 'requested_rewrite' must be an object")
        flat = {
            "prompt": _str(rw, "prompt", where, path="requested_rewrite.prompt"),
            "subject": _str(rw, "subject", where, path="requested_rewrite.subject"),
            "target_new": _str(rw.get("target_new") or {}, "str", where, path="requested_rewrite.target_new.str"),
            "target_true": (rw.get("target_true") or {}).get("str"),
        }
        req = make_request(flat, where, rec.get("case_id"))
        return Case(req, _strs(rec, "paraphrase_prompts", where), _strs(rec, "neighborhood_prompts", where),
                    _strs(rec, "generation_prompts", where))
    if "src" in rec and "answers" in rec:  # zsRE (MEND)
        answers = rec["answers"]
        if not isinstance(answers, list) or not answers or not isinstance(answers[0], str):
            raise RequestError(f"{where}: field 'answers' must be a non-empty list of strings")
        req = make_request({"prompt": _str(rec, "src", where), "subject": _str(rec, "subject", where),
                            "target_new": answers[0]}, where, rec.get("case_id", i))
        return Case(req, paraphrase_prompts=(_str(rec, "rephrase", where),),
                    loc_prompt=rec.get("loc"), loc_answer=rec.get("loc_ans"))
    if "ground_truth" in rec:  # EasyEdit reduced CounterFact
        flat = dict(rec, target_true=rec.get("ground_truth"))
        req = make_request(flat, where)
        para = (rec["rephrase_prompt"],) if isinstance(rec.get("rephrase_prompt"), str) else ()
        neigh = (rec["locality_prompt"],) if isinstance(rec.get("locality_prompt"), str) else ()
        return Case(req, para, neigh)
    req = make_request(rec, where, i)
    return Case(req, _strs(rec, "paraphrase_prompts", where), _strs(rec, "neighborhood_prompts", where),
                _strs(rec, "generation_prompts", where))


def _strs(rec: dict, key: str, where: str) -> tuple[str, ...]:
    value = rec.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RequestError(f"{where}: field '{key}' must be a list of strings")
    return tuple(value)


def read_records(path: str | Path) -> list:
    """The raw records of a JSON array or JSONL file, with one-line errors for bad files."""
    path = Path(path)
    if not path.is_file():
        raise RequestError(f"{path}: no such file")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise RequestError(f"{path}: {size} bytes is larger than the {MAX_FILE_BYTES}-byte limit for request files")
    return records_from_text(path.read_text(encoding="utf-8", errors="replace"), str(path))


def records_from_text(text: str, source: str) -> list:
    """The raw records of JSON array or JSONL text; errors name ``source`` (a file, an upload)."""
    if not text.strip():
        raise RequestError(f"{source}: file is empty")
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise RequestError(f"{source}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
        return data
    if stripped.startswith("{"):
        try:  # a single object, or JSONL
            return [json.loads(text)]
        except json.JSONDecodeError:
            pass
        records = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise RequestError(f"{source}: line {n} is not valid JSON ({e.msg})") from None
        return records
    raise RequestError(f"{source}: neither JSON nor JSONL (it must start with '[' or '{{')")


def load_cases(path: str | Path, n: int | None = None, offset: int = 0,
               case_ids: list | None = None, check_batch: bool = True) -> list[Case]:
    """Records of ``path`` as cases; select by ``case_ids``, or by ``offset`` and count ``n``.

    ``check_batch`` refuses a selection that asks for two targets for one subject and prompt;
    turn it off to load a whole benchmark file from which batches are drawn later.
    """
    records = read_records(path)
    if not records:
        raise RequestError(f"{path}: holds no records")
    indexed = list(enumerate(records))
    if case_ids is not None:
        wanted = {str(c) for c in case_ids}
        indexed = [(i, r) for i, r in indexed if isinstance(r, dict) and str(r.get("case_id")) in wanted]
    else:
        indexed = indexed[offset: None if n is None else offset + n]
    if not indexed:
        raise RequestError(f"{path}: the selection is empty")
    cases = [parse_record(r, i) for i, r in indexed]
    if check_batch:
        check_conflicts([c.request for c in cases])
    return cases


def load_requests(path: str | Path, n: int | None = None, offset: int = 0) -> list[EditRequest]:
    return [c.request for c in load_cases(path, n, offset)]


def check_conflicts(requests: list[EditRequest]) -> None:
    seen: dict[tuple[str, str], tuple[int, str]] = {}
    for i, r in enumerate(requests):
        key = (r.prompt, r.subject)
        if key in seen and seen[key][1] != r.target_new:
            j, other = seen[key]
            raise RequestError(
                f"record {i}: field 'target_new': conflicts with record {j} "
                f"(same subject and prompt, targets {other!r} and {r.target_new!r})"
            )
        seen.setdefault(key, (i, r.target_new))
