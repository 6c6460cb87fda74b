"""One person's editing session on one loaded model: what the playground page drives.

Everything that touches the model goes through ``Session``, under one lock, so an edit never
interleaves with another edit, a probe or a revert: a second request while an edit runs gets
``Busy`` at once instead of waiting. An edit runs in a worker thread and reports its progress
through the library's own bars (progress.py). It either finishes, and is then a step of the
session's journal, or it is cancelled or fails, and then every weight it wrote is put back from
a copy taken before it started. Closing the page does neither: the edit goes on to the end.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from memit import progress, weights
from memit.delta import Delta
from memit.demo import greedy
from memit.eval.metrics import pair_probabilities
from memit.fingerprint import model_fingerprint
from memit.hparams import MemitHyperParams
from memit.journal import Journal
from memit.lora import save_lora, summed
from memit.methods import METHODS, run
from memit.methods.sequential import sequence_stats
from memit.models.arch import get_arch
from memit.requests import Case, RequestError, check_conflicts, parse_record, records_from_text
from memit.weights import input_device


class Busy(RuntimeError):
    """Another edit holds the model."""


class Cancelled(Exception):
    """Raised inside the edit's own thread, at its next progress update, after a cancel."""


@dataclass
class Job:
    n_facts: int
    state: str = "running"  # running, done, cancelled, failed
    phase: str = "starting"
    done: int = 0
    total: int | None = None
    error: str | None = None
    step: int | None = None
    started: float = field(default_factory=time.time)
    cancel: bool = False

    def view(self) -> dict:
        return {k: getattr(self, k) for k in ("n_facts", "state", "phase", "done", "total", "error", "step", "started")}


def parse(text: str, source: str = "upload") -> tuple[list[Case], list[dict]]:
    """The cases of JSON/JSONL ``text`` in any schema ``memit edit`` reads, and one error per bad
    record ({"record": i or None, "error": the CLI's one-line message})."""
    try:
        records = records_from_text(text, source)
    except RequestError as e:
        return [], [{"record": None, "error": str(e)}]
    if not isinstance(records, list) or not records:
        return [], [{"record": None, "error": f"{source}: holds no records"}]
    cases, errors = [], []
    for i, rec in enumerate(records):
        try:
            cases.append(parse_record(rec, i))
        except RequestError as e:
            errors.append({"record": i, "error": str(e)})
    if not errors:
        try:
            check_conflicts([c.request for c in cases])
        except RequestError as e:
            errors.append({"record": None, "error": str(e)})
    return cases, errors


class Session:
    def __init__(self, model, tokenizer, hp: MemitHyperParams, *, method: str = "memit", name: str = "model",
                 workdir: str | Path | None = None, progress_bars: bool = True):
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
        self.model, self.tokenizer, self.hp, self.method, self.name = model, tokenizer, hp, method, name
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="memit-serve-"))
        self.journal = Journal(self.dir / "journal")
        self.base = model_fingerprint(model)
        self.history: list[dict] = []  # per step: the Delta and what the page shows of it
        self.job: Job | None = None
        self._lock = threading.Lock()
        self._bars = progress_bars
        self._stats = None
        self._names = _edited_weights(model, hp, method)

    # -- the lock ---------------------------------------------------------------------------------
    def _take(self) -> None:
        if not self._lock.acquire(blocking=False):
            job = self.job
            what = f"an edit of {job.n_facts} facts is running ({job.phase})" if job and job.state == "running" \
                else "the model is in use"
            raise Busy(f"busy: {what}; wait for it or cancel it")

    def info(self) -> dict:
        return {"model": self.name, "method": self.method, "layers": list(self.hp.layers),
                "steps": [_step_view(h) for h in self.history], "job": self.job.view() if self.job else None}

    # -- editing ----------------------------------------------------------------------------------
    def start_edit(self, cases: list[Case]) -> Job:
        """Start editing ``cases`` in a worker thread; Busy if anything else holds the model."""
        if not cases:
            raise RequestError("no facts to edit")
        self._take()
        job = Job(len(cases))
        self.job = job
        threading.Thread(target=self._edit, args=(job, cases), daemon=True).start()
        return job

    def cancel(self) -> bool:
        job = self.job
        if job is None or job.state != "running":
            return False
        job.cancel = True
        return True

    def wait(self, timeout: float | None = None) -> Job | None:
        """The job, once it has finished (tests and scripts; the page polls ``info``)."""
        if self._lock.acquire(timeout=-1 if timeout is None else timeout):
            self._lock.release()
        return self.job

    def _edit(self, job: Job, cases: list[Case]) -> None:
        saved = {n: weights.read(self.model, n).detach().clone() for n in self._names}

        def listener(what: str, done: int, total: int | None) -> None:
            if job.cancel:
                raise Cancelled
            job.phase, job.done, job.total = what, done, total

        try:
            requests = [c.request for c in cases]
            with progress.listen(listener):
                asked = [(r.text, r.target_new, r.target_true) for r in requests]
                before = pair_probabilities(self.model, self.tokenizer, asked)
                if self._stats is None and self.hp.sequential_stats == "base":
                    self._stats = sequence_stats(self.model, self.tokenizer, self.hp, self._bars)
                delta = run(self.method, self.model, self.tokenizer, requests, self.hp, prior=self.journal.prior(),
                            progress=self._bars, stats=self._stats)
                progress.phase("scoring the edited model")
                after = pair_probabilities(self.model, self.tokenizer, asked)
            job.step = self.journal.append(self.base, delta)
            self.history.append({"step": job.step, "delta": delta, "facts": _fact_rows(delta, requests, before, after),
                                 "layers": _layer_rows(delta), "verification": delta.meta.get("verification", {}),
                                 "timings": delta.meta.get("timings", {})})
            job.state, job.phase = "done", "done"
        except BaseException as e:  # noqa: BLE001 (cancelled or failed: every weight as it was, bit for bit)
            for n, w in saved.items():
                weights.write(self.model, n, w)
            if len(self.journal.steps) > len(self.history):
                self.journal.revert_to(len(self.history))
            job.step = None
            job.state = "cancelled" if isinstance(e, Cancelled) else "failed"
            job.error = None if isinstance(e, Cancelled) else (str(e) or type(e).__name__)
            job.phase = job.state
        finally:
            self._lock.release()

    # -- after an edit ----------------------------------------------------------------------------
    def revert(self) -> int:
        """Undo the last step bit-exactly; returns the number of steps left."""
        self._take()
        try:
            if not self.history:
                raise RequestError("nothing to revert: no edit was made in this session")
            self.history.pop()["delta"].revert(self.model)
            self.journal.revert_to(len(self.history))
            return len(self.history)
        finally:
            self._lock.release()

    def probe(self, prompt: str, k: int = 5, max_new_tokens: int = 16) -> dict:
        """Greedy text and the top-k next tokens, on the unedited model and on the edited one."""
        if not prompt.strip():
            raise RequestError("give a prompt to probe")
        self._take()
        try:
            after = _look(self.model, self.tokenizer, prompt, k, max_new_tokens)
            if not self.history:
                return {"prompt": prompt, "before": after, "after": after, "edited": False}
            for h in reversed(self.history):  # back to the unedited weights, then forward again: exact both ways
                h["delta"].revert(self.model)
            try:
                before = _look(self.model, self.tokenizer, prompt, k, max_new_tokens)
            finally:
                for h in self.history:
                    h["delta"].apply(self.model)
            return {"prompt": prompt, "before": before, "after": after, "edited": True}
        finally:
            self._lock.release()

    def export(self, what: str) -> Path:
        """A file of the session's whole change so far: "delta" (safetensors), "adapter" (a PEFT
        folder, zipped) or "model" (the edited model, zipped)."""
        if what not in ("delta", "adapter", "model"):
            raise RequestError(f"unknown download {what!r}: delta, adapter or model")
        if what != "model" and not self.history:
            raise RequestError(f"no {what} yet: no edit was made in this session")
        self._take()
        try:
            out = Path(tempfile.mkdtemp(dir=self.dir, prefix="export-"))
            whole = self.history[0]["delta"] if len(self.history) == 1 else \
                summed([h["delta"] for h in self.history]) if self.history else None
            if what == "delta":
                whole.save(out / "delta.safetensors")
                return out / "delta.safetensors"
            folder = out / what
            if what == "adapter":
                save_lora(whole, folder, base_model=self.name)
            else:
                self.model.save_pretrained(folder)
                self.tokenizer.save_pretrained(folder)
            return Path(shutil.make_archive(str(out / what), "zip", folder))
        finally:
            self._lock.release()


def _edited_weights(model, hp: MemitHyperParams, method: str) -> list[str]:
    arch = get_arch(model)
    layers = [hp.rome_layer()] if method in ("rome", "ft", "ft-w") else hp.layers
    return [arch.mlp_out_name(layer) + ".weight" for layer in layers]


def _fact_rows(delta: Delta, requests, before, after) -> list[dict]:
    rows = []
    for r, m, b, a in zip(requests, delta.meta["requests"], before, after):
        rows.append({"subject": r.subject, "prompt": r.text, "target_new": r.target_new, "target_true": r.target_true,
                     "holds": m.get("holds"), "round": m.get("round"), "stop": m.get("stop"), "reason": m.get("reason"),
                     "steps": m.get("steps_total", m.get("steps")), "p_new": [b[0], a[0]], "p_true": [b[1], a[1]]})
    return rows


def _layer_rows(delta: Delta) -> list[dict]:
    return [{"layer": x.get("layer"), "delta_rel_norm": x.get("delta_rel_norm"), "cond": x.get("cond")}
            for x in delta.meta.get("layers_info", [])]


def _step_view(h: dict) -> dict:
    return {k: h[k] for k in ("step", "facts", "layers", "verification", "timings")}


@torch.no_grad()
def _look(model, tokenizer, prompt: str, k: int, max_new_tokens: int) -> dict:
    enc = tokenizer(prompt, return_tensors="pt").to(input_device(model))
    top = model(**enc).logits[0, -1].float().softmax(-1).topk(k)
    return {"text": greedy(model, tokenizer, prompt, max_new_tokens), "top": [{"token": tokenizer.decode([int(i)]), "p": float(p)}
                                  for p, i in zip(top.values, top.indices)]}
