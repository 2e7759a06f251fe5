import hashlib
import json

import pytest
from fastapi.testclient import TestClient

from humantune.studies.preference.server import MAX_BODY, create_app
from humantune.studies.preference.storage import StudyStore
from humantune.studies.preference.study import read_access


@pytest.fixture
def client(study):
    app = create_app(study.path)
    with TestClient(app) as c:
        yield c
    app.state.store.close()


@pytest.fixture
def tokens(study):
    return read_access(study.path)


def db_state(study) -> str:
    """Digest of every vote and participant claim: equal before and after a rejected request = nothing changed."""
    store = StudyStore(study.path)
    rows = store.rows("SELECT * FROM votes ORDER BY id") + store.rows("SELECT id, claimed_at FROM participants")
    store.close()
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()


def test_participant_votes_through_a_whole_study(client, tokens):
    token = tokens["participants"]["P1"]
    page = client.get(f"/s/{token}")
    assert page.status_code == 200 and "/static/vote.js" in page.text
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert page.headers["referrer-policy"] == "no-referrer"
    seen = []
    for step in range(8):
        nxt = client.get(f"/api/p/{token}/next").json()
        assert not nxt["done"] and nxt["answered"] == step and nxt["total"] == 8
        left, right = client.get(nxt["left"]), client.get(nxt["right"])
        assert left.status_code == right.status_code == 200 and left.content[:4] == b"\x89PNG"
        r = client.post(f"/api/p/{token}/vote", json={"assignment": nxt["assignment"], "choice": "left",
                                                      "response_ms": 900})
        assert r.status_code == 200 and r.json() == {"status": "recorded", "answered": step + 1, "total": 8}
        seen.append(nxt["assignment"])
    assert client.get(f"/api/p/{token}/next").json()["done"] is True
    assert len(set(seen)) == 8


def test_bad_requests_get_4xx_and_change_nothing(client, tokens, study):
    t1, t2 = tokens["participants"]["P1"], tokens["participants"]["P2"]
    client.get(f"/s/{t1}")
    first = client.get(f"/api/p/{t1}/next").json()["assignment"]
    assert client.post(f"/api/p/{t1}/vote", json={"assignment": first, "choice": "right"}).status_code == 200
    other = client.get(f"/api/p/{t2}/next").json()["assignment"]
    before = db_state(study)
    cases = {
        "unknown token": (client.post(f"/api/p/{'x' * 22}/vote", json={"assignment": first, "choice": "left"}), 404),
        "unknown token page": (client.get("/s/not-a-real-token-at-all"), 404),
        "pair not assigned": (client.post(f"/api/p/{t1}/vote", json={"assignment": other, "choice": "left"}), 403),
        "image of a pair not assigned": (client.get(f"/api/p/{t1}/image/{other}/left"), 403),
        "replayed vote": (client.post(f"/api/p/{t1}/vote", json={"assignment": first, "choice": "left"}), 409),
        "malformed JSON": (client.post(f"/api/p/{t1}/vote", content=b'{"assignment": 1, "choice": '), 400),
        "JSON not an object": (client.post(f"/api/p/{t1}/vote", content=b"[1, 2]"), 400),
        "bad choice": (client.post(f"/api/p/{t1}/vote", json={"assignment": other, "choice": "both"}), 400),
        "unknown field": (client.post(f"/api/p/{t1}/vote", json={"assignment": first, "choice": "left", "x": 1}), 400),
        "oversized body": (client.post(f"/api/p/{t1}/vote", content=b" " * (MAX_BODY + 1)), 413),
        "oversized chunked body": (client.post(f"/api/p/{t1}/vote", content=iter([b" " * 3000] * 3)), 413),
        "static ../": (client.get("/static/%2e%2e/server.py"), 400),
        "static encoded slash": (client.get("/static/..%2F..%2Fstudy.db"), 400),
        "bad side": (client.get(f"/api/p/{t1}/image/{first}/middle"), 404),
        "unknown admin": (client.get(f"/api/admin/{'y' * 22}/status"), 404),
        "unknown join": (client.get(f"/join/{'z' * 22}"), 404),
    }
    for name, (response, status) in cases.items():
        assert response.status_code == status, (name, response.status_code, response.text)
        if response.headers.get("content-type", "").startswith("application/json"):
            assert response.json()["detail"], name
    assert cases["replayed vote"][0].json()["recorded"] == "right"
    assert db_state(study) == before


def test_image_path_leaving_the_study_is_refused(client, tokens, study):
    token = tokens["participants"]["P1"]
    nxt = client.get(f"/api/p/{token}/next").json()
    store = StudyStore(study.path)
    with store.write() as conn:  # a tampered database pointing outside the folder
        conn.execute("UPDATE images SET path = '../gen/base/00000.png' WHERE id = "
                     "(SELECT left_image FROM assignments WHERE id = ?)", (nxt["assignment"],))
    store.close()
    r = client.get(nxt["left"])
    assert r.status_code == 400 and "leaves its folder" in r.json()["detail"]


def test_html_in_prompt_is_data_not_markup(tmp_path):
    from humantune.studies.preference.study import StudyConfig, create_study

    from .conftest import make_generated

    evil = ['<img src=x onerror="alert(1)"><b>bold</b>']
    made = create_study({"a": make_generated(tmp_path / "a", (1, 1, 1), prompts=evil),
                         "b": make_generated(tmp_path / "b", (2, 2, 2), prompts=evil)},
                        tmp_path / "s", StudyConfig(participants=1))
    app = create_app(made.path)
    with TestClient(app) as c:
        token = made.tokens["participants"]["P1"]
        page = c.get(f"/s/{token}").text
        assert "onerror" not in page  # the page itself is static; the prompt arrives as JSON text
        assert c.get(f"/api/p/{token}/next").json()["prompt"] == evil[0]
        assert "textContent = data.prompt" in c.get("/static/vote.js").text
    app.state.store.close()


def test_pause_resume_and_admin_tally(client, tokens):
    admin, token = tokens["admin"], tokens["participants"]["P1"]
    nxt = client.get(f"/api/p/{token}/next").json()
    assert client.post(f"/api/admin/{admin}/pause").json() == {"paused": True}
    r = client.post(f"/api/p/{token}/vote", json={"assignment": nxt["assignment"], "choice": "left"})
    assert r.status_code == 423
    assert client.get(f"/api/p/{token}/next").json()["paused"] is True
    assert client.post(f"/api/admin/{admin}/resume").json() == {"paused": False}
    assert client.post(f"/api/p/{token}/vote", json={"assignment": nxt["assignment"], "choice": "left"}).status_code \
        == 200
    status = client.get(f"/api/admin/{admin}/status").json()
    people = {p["name"]: p for p in status["participants"]}
    assert people["P1"]["answered"] == 1 and people["P2"]["answered"] == 0
    assert sum(t["wins_a"] + t["wins_b"] + t["ties"] for t in status["tally"]) <= 1
    assert client.get(f"/admin/{admin}").status_code == 200


def test_join_link_hands_out_slots_up_to_the_quota(client, tokens):
    issued = set()
    for _ in range(3):
        client.cookies.clear()
        r = client.get(f"/join/{tokens['join']}", follow_redirects=False)
        assert r.status_code == 303
        issued.add(r.headers["location"])
    assert issued == {f"/s/{t}" for t in tokens["participants"].values()}
    client.cookies.clear()
    full = client.get(f"/join/{tokens['join']}", follow_redirects=False)
    assert full.status_code == 409 and "full" in full.json()["detail"]


def test_join_link_remembers_the_browser(client, tokens):
    first = client.get(f"/join/{tokens['join']}", follow_redirects=False).headers["location"]
    again = client.get(f"/join/{tokens['join']}", follow_redirects=False).headers["location"]
    assert first == again
