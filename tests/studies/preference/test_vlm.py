"""The VLM judge against a fake OpenAI-compatible endpoint served on 127.0.0.1 by this test."""

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from humantune.cli import main
from humantune.errors import HumantuneError
from humantune.studies.preference.judges import JudgeNoAnswer
from humantune.studies.preference.vlm import VLMJudge, chat_completions_url, parse_answer

KEY = "sk-test-0123456789abcdef-secret"


def completion(text):
    return {"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant",
                                                                                           "content": text}}]}


class FakeEndpoint:
    """Answers POST /v1/chat/completions from a script: each entry is (status, body, headers, delay_s); the last
    entry repeats. Records every request's headers and JSON."""

    def __init__(self):
        self.script = [(200, completion("left"), {}, 0.0)]
        self.requests = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                status, payload, headers, delay = fake.script[min(len(fake.requests), len(fake.script)) - 1]
                time.sleep(delay)
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint():
    fake = FakeEndpoint()
    yield fake
    fake.close()


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("HT_TEST_VLM_KEY", KEY)
    return "HT_TEST_VLM_KEY"


IMAGES = (Image.new("RGB", (8, 8), (255, 0, 0)), Image.new("RGB", (8, 8), (0, 0, 255)))


def test_parse_answer():
    assert parse_answer(completion("Left")) == "left"
    assert parse_answer(completion("The right image.")) == "right"
    assert parse_answer(completion('{"answer": "tie"}')) == "tie"
    assert parse_answer(completion([{"type": "text", "text": "right"}])) == "right"
    for bad in (completion("left or right?"), completion("neither"), completion(None), {"choices": []}, {}, [1]):
        assert parse_answer(bad) is None
    assert chat_completions_url("http://h:1/v1/") == "http://h:1/v1/chat/completions"
    assert chat_completions_url("http://h:1/v1/chat/completions") == "http://h:1/v1/chat/completions"
    with pytest.raises(HumantuneError, match="must start with http"):
        chat_completions_url("file:///etc/passwd")


def test_request_carries_both_images_and_the_key_only_in_the_header(endpoint, key):
    judge = VLMJudge(endpoint.url, "fake-vlm", key_env=key, backoff=0.0)
    assert judge("a man waving", *IMAGES) == "left"
    judge.close()
    (req,) = endpoint.requests
    assert req["path"] == "/v1/chat/completions" and req["auth"] == f"Bearer {KEY}"
    body = req["body"]
    assert body["model"] == "fake-vlm" and body["temperature"] == 0
    parts = body["messages"][1]["content"]
    assert [p["type"] for p in parts].count("image_url") == 2 and "a man waving" in parts[0]["text"]
    assert KEY not in json.dumps(body)


def test_retries_server_errors_rate_limits_and_malformed_answers(endpoint):
    endpoint.script = [(500, {"error": "boom"}, {}, 0), (429, {"error": "slow down"}, {"Retry-After": "0"}, 0),
                       (200, completion("I cannot decide between left and right"), {}, 0),
                       (200, b"not json", {}, 0), (200, completion("right"), {}, 0)]
    judge = VLMJudge(endpoint.url, "m", retries=4, backoff=0.01)
    assert judge("p", *IMAGES) == "right"
    assert len(endpoint.requests) == 5
    judge.close()


def test_timeout_then_answer(endpoint):
    endpoint.script = [(200, completion("left"), {}, 1.0), (200, completion("tie"), {}, 0.0)]
    judge = VLMJudge(endpoint.url, "m", timeout=0.3, retries=2, backoff=0.01)
    assert judge("p", *IMAGES) == "tie"
    judge.close()


def test_gives_up_after_retries_and_stops_on_a_refused_key(endpoint, key):
    endpoint.script = [(200, completion("blue"), {}, 0)]
    judge = VLMJudge(endpoint.url, "m", retries=2, backoff=0.0)
    with pytest.raises(JudgeNoAnswer, match="no valid answer after 3 tries \\(last: malformed answer\\)"):
        judge("p", *IMAGES)
    judge.close()
    endpoint.script = [(401, {"error": f"bad key {KEY}"}, {}, 0)]
    judge = VLMJudge(endpoint.url, "m", key_env=key, retries=2, backoff=0.0)
    with pytest.raises(HumantuneError, match="refused the API key \\(HTTP 401\\)") as e:
        judge("p", *IMAGES)
    assert KEY not in str(e.value)
    endpoint.script = [(400, {"error": f"bad request for key {KEY}"}, {}, 0)]
    with pytest.raises(HumantuneError, match="HTTP 400") as e:
        judge("p", *IMAGES)
    assert KEY not in str(e.value) and "***" in str(e.value)
    judge.close()


def test_missing_key_variable_is_a_one_line_error(endpoint, monkeypatch):
    monkeypatch.delenv("HT_TEST_MISSING_KEY", raising=False)
    with pytest.raises(HumantuneError, match="environment variable HT_TEST_MISSING_KEY is empty or not set"):
        VLMJudge(endpoint.url, "m", key_env="HT_TEST_MISSING_KEY")


def test_cli_judge_votes_and_never_writes_the_key(endpoint, key, study, capsys, caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    endpoint.script = [(200, completion("right"), {}, 0), (503, {}, {}, 0), (200, completion("left"), {}, 0)]
    code = main(["study", "judge", str(study.path), "--judge", "vlm", "--vlm-url", endpoint.url, "--vlm-model", "fake",
                 "--vlm-key-env", key, "--quiet"])
    out = capsys.readouterr()
    assert code == 0 and "judge:vlm:fake: 8 votes recorded, 0 pairs without an answer" in out.out
    assert main(["study", "results", str(study.path), "--bootstrap", "50"]) == 0
    printed = out.out + out.err + capsys.readouterr().out + caplog.text
    assert KEY not in printed
    for path in study.path.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path
    assert all(r["auth"] == f"Bearer {KEY}" for r in endpoint.requests)
    # the question shown to people is the one asked of the model
    assert "Which person looks more natural?" in endpoint.requests[0]["body"]["messages"][1]["content"][0]["text"]
