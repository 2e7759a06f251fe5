"""A vision-language model as a study judge, over an OpenAI-compatible ``POST /v1/chat/completions`` endpoint.

The request carries the question, the prompt and both images (PNG data URIs), at temperature 0, and asks for one
word: ``left``, ``right`` or ``tie``. The answer is read from ``choices[0].message.content`` (a string or a list of
text parts): a JSON object ``{"answer": ...}`` or text in which exactly one of the three words occurs.

Failure handling: each request has a timeout; connection errors, timeouts, HTTP 408/409/425/429 and 5xx are
retried up to ``retries`` times with exponential back-off (``backoff · 2^k`` seconds, at most 30; a numeric
``Retry-After`` is honoured up to 60), and so is a malformed answer (the model is asked again); after the last
try the pair is skipped (:class:`~humantune.studies.preference.judges.JudgeNoAnswer`). HTTP 401/403 and other
4xx stop the run with one line.

The API key is read from the environment variable *named* by ``key_env`` and sent only in the ``Authorization``
header: it is never stored in the study, printed, logged or put in an error message (messages are scrubbed of it).
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import time
from typing import Any

import httpx
from PIL import Image

from humantune.errors import HumantuneError
from humantune.studies.preference.judges import Judge, JudgeNoAnswer

RETRY_STATUS = {408, 409, 425, 429}
MAX_BACKOFF = 30.0
MAX_RETRY_AFTER = 60.0
ANSWER_WORDS = re.compile(r"\b(left|right|tie)\b", re.IGNORECASE)
SYSTEM_PROMPT = ("You judge pairs of generated images for a human preference study. Look at both images and answer "
                 "with exactly one word: left, right, or tie.")


def image_data_uri(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def parse_answer(body: Any) -> str | None:
    """``left`` / ``right`` / ``tie`` from a chat-completions response body; None when it holds no single clear
    answer (no choices, no text, none or several of the three words)."""
    try:
        content = body["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return None
    if isinstance(content, list):
        content = " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    if not isinstance(content, str):
        return None
    text = content.strip()
    try:
        parsed = json.loads(text)
        if isinstance(parsed, dict) and isinstance(parsed.get("answer"), str):
            text = parsed["answer"]
    except json.JSONDecodeError:
        pass
    words = {w.lower() for w in ANSWER_WORDS.findall(text)}
    return words.pop() if len(words) == 1 else None


def chat_completions_url(url: str) -> str:
    """The endpoint URL: ``url`` itself when it ends in ``/chat/completions``, else ``url`` + ``/chat/completions``
    (so both ``http://host:port/v1`` and the full URL work)."""
    if not re.match(r"^https?://", url):
        raise HumantuneError(f"the VLM URL must start with http:// or https://, got {url!r}")
    url = url.rstrip("/")
    return url if url.endswith("/chat/completions") else url + "/chat/completions"


class VLMJudge(Judge):
    """Asks a vision-language model which image is better (see the module docstring)."""

    def __init__(self, url: str, model: str, key_env: str | None = None, question: str | None = None,
                 timeout: float = 60.0, retries: int = 3, backoff: float = 1.0, max_tokens: int = 16,
                 transport: httpx.BaseTransport | None = None):
        if not model:
            raise HumantuneError("the VLM judge needs --vlm-model NAME")
        if retries < 0 or timeout <= 0 or backoff < 0:
            raise HumantuneError("VLM judge: retries and backoff must be non-negative, timeout positive")
        self.endpoint = chat_completions_url(url)
        self.model, self.retries, self.backoff, self.max_tokens = model, int(retries), float(backoff), max_tokens
        self.question = question or "Which image is better?"
        self.name = f"vlm:{model}"
        headers = {}
        self._key = None
        if key_env:
            self._key = os.environ.get(key_env)
            if not self._key:
                raise HumantuneError(f"environment variable {key_env} is empty or not set (it must hold the VLM API "
                                     "key; the key itself is never passed on the command line)")
            headers["Authorization"] = f"Bearer {self._key}"
        self._client = httpx.Client(timeout=httpx.Timeout(timeout), headers=headers, transport=transport,
                                    follow_redirects=False)
        self.requests = 0

    def _scrub(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def payload(self, prompt: str, left: Image.Image, right: Image.Image) -> dict:
        return {
            "model": self.model, "temperature": 0, "max_tokens": self.max_tokens,
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": [
                    {"type": "text", "text": f"{self.question}\nThe images were generated for the prompt: {prompt!r}."
                                             "\nLeft image:"},
                    {"type": "image_url", "image_url": {"url": image_data_uri(left)}},
                    {"type": "text", "text": "Right image:"},
                    {"type": "image_url", "image_url": {"url": image_data_uri(right)}},
                    {"type": "text", "text": "Answer with one word: left, right, or tie."},
                ]},
            ],
        }

    def _wait(self, attempt: int, response: httpx.Response | None = None) -> None:
        delay = min(self.backoff * 2 ** attempt, MAX_BACKOFF)
        retry_after = response.headers.get("retry-after") if response is not None else None
        if retry_after is not None:
            try:
                delay = min(max(float(retry_after), 0.0), MAX_RETRY_AFTER)
            except ValueError:
                pass
        time.sleep(delay)

    def __call__(self, prompt: str, left: Image.Image, right: Image.Image) -> str:
        payload = self.payload(prompt, left, right)
        problem, retry_response = "no request made", None
        for attempt in range(self.retries + 1):
            if attempt:
                self._wait(attempt - 1, retry_response)
            retry_response = None
            self.requests += 1
            try:
                response = self._client.post(self.endpoint, json=payload)
            except httpx.TimeoutException:
                problem = "timed out"
                continue
            except httpx.TransportError as e:
                problem = self._scrub(f"connection failed ({type(e).__name__})")
                continue
            if response.status_code in RETRY_STATUS or response.status_code >= 500:
                problem, retry_response = f"HTTP {response.status_code}", response
                continue
            if response.status_code in (401, 403):
                raise HumantuneError(f"the VLM endpoint {self.endpoint} refused the API key (HTTP "
                                     f"{response.status_code})")
            if response.status_code >= 400:
                detail = self._scrub(response.text[:200].replace("\n", " "))
                raise HumantuneError(f"the VLM endpoint {self.endpoint} answered HTTP {response.status_code}: {detail}")
            try:
                verdict = parse_answer(response.json())
            except (json.JSONDecodeError, UnicodeDecodeError):
                verdict = None
            if verdict is not None:
                return verdict
            problem = "malformed answer"
        raise JudgeNoAnswer(f"{self.name}: no valid answer after {self.retries + 1} tries (last: {problem})")

    def close(self) -> None:
        self._client.close()
