"""The CLI's HTTP client against a loopback server that answers what each test scripts: the
scheme and CA it takes from the data dir, and the one-line errors every command shows."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from occupancy.api_client import ApiClient, ApiError, Unreachable
from occupancy.cli import main
from occupancy.settings import Settings
from occupancy.tls import trust_marker


@pytest.fixture
def server():
    """(base URL, answers): each request pops the next (status, content type, body) and is
    recorded in `answers.seen` as (method, path, authorization)."""

    class Answers(list):
        pass

    answers = Answers()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self):
            self.server.seen.append((self.command, self.path, self.headers.get("Authorization")))
            status, kind, body = answers.pop(0)
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = _answer

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.seen = answers.seen = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", answers
    httpd.shutdown()
    httpd.server_close()


def _settings(tmp_path: Path, **extra) -> Settings:
    return Settings.from_env({"OCC_DATA_DIR": str(tmp_path)}, **extra)


def _json(status: int, body) -> tuple:
    return status, "application/json", json.dumps(body)


def test_answers_are_decoded_and_every_call_carries_the_key(server, tmp_path):
    url, answers = server
    answers += [_json(200, {"cells": []}), _json(202, {"id": "job-1"})]
    api = ApiClient(url + "/", "k-1", _settings(tmp_path))
    assert api.get("/v1/top", n=3, bbox=None) == {"cells": []}
    assert api.post("/v1/admin/scale", {"user_shards": 2}) == {"id": "job-1"}
    assert answers.seen == [
        ("GET", "/v1/top?n=3", "Bearer k-1"),
        ("POST", "/v1/admin/scale", "Bearer k-1"),
    ]


def test_an_error_envelope_becomes_its_code_and_message(server, tmp_path):
    url, answers = server
    answers.append(_json(400, {"error": {"code": "bad_bbox", "message": "4 numbers, please"}}))
    with pytest.raises(ApiError) as err:
        ApiClient(url, "k", _settings(tmp_path)).get("/v1/heatmap", bbox="1,2,3")
    assert err.value.format_message() == "bad_bbox: 4 numbers, please"


def test_an_answer_that_is_not_json_is_one_line_that_says_so(server, tmp_path):
    url, answers = server
    answers.append((502, "text/html", "<html>\n<body>Bad Gateway</body>\n</html>\n"))
    with pytest.raises(ApiError) as err:
        ApiClient(url, "k", _settings(tmp_path)).get("/v1/top")
    message = err.value.format_message()
    assert "\n" not in message
    assert message.startswith("GET /v1/top answered 502 with text/html, not JSON: ")
    assert "Bad Gateway" in message


def test_no_engine_is_unreachable(tmp_path):
    with pytest.raises(Unreachable, match="is `occupancy up` running"):
        ApiClient("http://127.0.0.1:9", "k", _settings(tmp_path)).get("/v1/top")


def test_the_data_dir_says_the_scheme_the_ca_and_the_key(tmp_path):
    (tmp_path / "admin.key").write_text("occ_admin_1\n")
    plain = ApiClient(None, None, _settings(tmp_path, http_port=8123))
    assert (plain.url, plain.verify) == ("http://127.0.0.1:8123", True)
    assert plain.headers == {"Authorization": "Bearer occ_admin_1"}
    marker = trust_marker(tmp_path)
    marker.parent.mkdir()
    marker.write_text("/some/ca.pem")
    tls = ApiClient(None, "k", _settings(tmp_path, http_port=8123))
    assert (tls.url, tls.verify) == ("https://127.0.0.1:8123", "/some/ca.pem")


def test_without_a_key_anywhere_a_command_says_so(tmp_path):
    env = {"OCC_DATA_DIR": str(tmp_path), "OCC_API_KEY": None}
    out = CliRunner().invoke(main, ["top"], env=env)
    assert out.exit_code == 1
    assert "no --key given (or OCC_API_KEY) and no admin key in the data dir" in out.output


def test_a_command_shows_the_error_in_one_line(server, tmp_path):
    url, answers = server
    answers.append((503, "text/plain", "upstream connect error"))
    out = CliRunner().invoke(main, ["space", "mall", "--url", url, "--key", "k"])
    assert out.exit_code == 1
    assert out.output.strip().splitlines() == [
        "Error: GET /v1/spaces/mall answered 503 with text/plain, not JSON: "
        "'upstream connect error'"
    ]


def test_series_prints_local_bucket_starts_and_asks_with_the_right_parameters(server, tmp_path):
    url, answers = server
    door = {"step": "1h", "tz": "Europe/Dublin", "space": "hq", "kind": "door",
            "points": [{"t": 1_792_886_400_000, "count": 3, "in": 5, "out": 2},
                       {"t": 1_792_890_000_000, "count": 1, "in": 0, "out": 2}]}  # fmt: skip
    answers.append(_json(200, door))
    args = ["series", "hq", "--tz", "Europe/Dublin", "--from", "2026-10-25", "--to", "2026-10-26"]
    out = CliRunner().invoke(main, [*args, "--url", url, "--key", "k"], env={"COLUMNS": "120"})
    assert out.exit_code == 0, out.output
    # 25 October 2026 in Dublin: 01:00 comes twice, at +01:00 and then at +00:00
    assert "2026-10-25 01:00 +0100" in out.output and "2026-10-25 01:00 +0000" in out.output
    assert " 5 " in out.output and " 2 " in out.output
    method, path, _ = answers.seen[-1]
    assert method == "GET" and path.startswith("/v1/series?")
    assert "space=hq" in path and "tz=Europe%2FDublin" in path and "step=1h" in path
    split = {"step": "1d", "tz": "UTC", "cell": "89195da49b7ffff", "kind": "cell",
             "by": "attr.fleet",
             "series": [{"value": "bus", "points": [{"t": 0, "count": 4}]},
                        {"value": None, "points": [{"t": 0, "count": 1}]}]}  # fmt: skip
    answers.append(_json(200, split))
    args = ["series", "89195da49b7ffff", "--cell", "--step", "1d", "--by", "fleet", "--json"]
    out = CliRunner().invoke(main, [*args, "--url", url, "--key", "k"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output) == split
    path = answers.seen[-1][1]
    assert "cell=89195da49b7ffff" in path and "by=attr.fleet" in path and "space=" not in path
