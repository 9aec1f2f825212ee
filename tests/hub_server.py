"""A small Hugging Face Hub-compatible HTTP server, for tests that push and pull over real HTTP.

No public Hub is reachable from CI, so the tests start this server on 127.0.0.1 (ephemeral port)
and point `HF_ENDPOINT` (or `HfApi(endpoint=...)`) at it. It implements the routes that
`huggingface_hub` 2.x and transformers 5.x use to share a model:

- `GET  /api/whoami-v2`                                  who the bearer token belongs to
- `GET  /api/agent-harnesses`                            the (empty) registry huggingface_hub reads
- `POST /api/repos/create`                               create a model repo (409 if it exists)
- `POST /api/validate-yaml`                              check a README's YAML front matter
- `GET  /api/models/{repo}[/revision/{rev}]`             model info (sha, siblings, cardData, ...)
- `GET  /api/models/{repo}/tree/{rev}[/{path}]`          list files (`recursive` flag)
- `POST /api/models/{repo}/preupload/{rev}`              upload modes: always `regular`, so the
                                                         client never takes the LFS/Xet path
- `POST /api/models/{repo}/commit/{rev}`                 NDJSON commit (header, file, deletedFile,
                                                         deletedFolder)
- `HEAD|GET /{repo}/resolve/{rev}/{path}`                file metadata (`X-Repo-Commit`, `ETag`,
                                                         `X-Linked-Size`) and content

Storage is git-like: content-addressed blobs (git-SHA1 ids, as the Hub's ETags), immutable commit
records, and one ref file per branch. A commit is parsed and validated in full, its blobs and
record written, and only then the branch ref is swapped with `os.replace` under a lock: a commit
whose body was cut short (client killed, connection dropped) never becomes visible.

Errors carry the Hub's `X-Error-Code` / `X-Error-Message` headers, so the client raises its usual
exceptions (`RepositoryNotFoundError`, `RevisionNotFoundError`, `EntryNotFoundError`, a 401
`HfHubHTTPError` for an invalid token).

Fault injection for tests: `interrupt_next_commit(after_bytes)` drops the connection after that
many bytes of the next commit body; `hold_next_commit(after_bytes)` pauses the next commit there
until the test releases it (so it can kill the client in the middle of the upload);
`with hub.hanging():` accepts every request but answers none (an endpoint that stalls) until the
block ends, or at most `at_most` seconds, so that no test can hang for ever.
"""

import base64
import contextlib
import datetime
import hashlib
import json
import os
import re
import socket
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

import yaml

DEFAULT_TOKENS = {"hf_test_write_token": "alice"}
DEFAULT_ORGS = {"alice": ["nasbert-org"]}
COMMIT_ID = re.compile(r"^[0-9a-f]{40}$")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
# What the Hub writes as the first commit of every new repo.
GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"


class HubError(Exception):
    """An HTTP error answered the way the Hub does (status, `X-Error-Code`, JSON `error`)."""

    def __init__(self, status, message, code=None, headers=None, body=None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}
        self.body = body or {}


def git_blob_id(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _write_atomic(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z")


class RepoStore:
    """Model repos on disk: `root/{namespace}/{name}/{repo.json, refs/, commits/, objects/}`."""

    def __init__(self, root):
        self.root = Path(root)
        self.lock = threading.Lock()

    def _dir(self, repo_id):
        return self.root / repo_id

    def meta(self, repo_id):
        path = self._dir(repo_id) / "repo.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def create(self, repo_id, owner, private):
        with self.lock:
            if self.meta(repo_id) is not None:
                raise HubError(409, "You already created this model repo", headers={"X-Error-Code": "RepoExists"})
            _write_atomic(
                self._dir(repo_id) / "repo.json",
                json.dumps({"id": repo_id, "owner": owner, "private": private, "createdAt": _now()}).encode(),
            )
        self.commit(repo_id, "main", [("file", ".gitattributes", GITATTRIBUTES)], "initial commit", "", None)

    def head(self, repo_id, revision):
        """The commit id `revision` (a branch or a commit id) points to, or None."""
        if COMMIT_ID.match(revision) and (self._dir(repo_id) / "commits" / f"{revision}.json").is_file():
            return revision
        ref = self._dir(repo_id) / "refs" / quote(revision, safe="")
        return ref.read_text().strip() if ref.is_file() else None

    def read_commit(self, repo_id, commit_id):
        return json.loads((self._dir(repo_id) / "commits" / f"{commit_id}.json").read_text())

    def read_blob(self, repo_id, oid):
        return (self._dir(repo_id) / "objects" / oid).read_bytes()

    def commit(self, repo_id, branch, operations, summary, description, parent_commit):
        """Apply `[(kind, path, data)]` on top of `branch` and move the branch: all or nothing."""
        with self.lock:
            parent = self.head(repo_id, branch)
            if parent_commit is not None and parent_commit != parent:
                raise HubError(412, f"Parent commit {parent_commit} is not the head of {branch} ({parent}).")
            files = dict(self.read_commit(repo_id, parent)["files"]) if parent else {}
            for kind, path, data in operations:
                if kind == "file":
                    oid = git_blob_id(data)
                    blob = self._dir(repo_id) / "objects" / oid
                    if not blob.exists():
                        _write_atomic(blob, data)
                    files[path] = {"oid": oid, "size": len(data)}
                elif kind == "deletedFile":
                    if path not in files:
                        raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                    del files[path]
                else:  # deletedFolder
                    for name in [name for name in files if name.startswith(path.rstrip("/") + "/")]:
                        del files[name]
            record = {"parent": parent, "summary": summary, "description": description, "date": _now(), "files": files}
            commit_id = hashlib.sha1(json.dumps(record, sort_keys=True).encode()).hexdigest()
            _write_atomic(self._dir(repo_id) / "commits" / f"{commit_id}.json", json.dumps(record).encode())
            # The single step that makes the new revision visible.
            _write_atomic(self._dir(repo_id) / "refs" / quote(branch, safe=""), commit_id.encode())
            return commit_id


class HubServer:
    """The server: `with HubServer(tmp_path) as hub: ... hub.url ...`.

    `tokens` maps bearer tokens to user names, `orgs` user names to the organisations they can
    write to. `requests` logs `(method, path, status)` for every request answered; `unknown_routes` and
    `server_errors` collect requests it could not serve (tests assert they stay empty).
    """

    def __init__(self, root, tokens=None, orgs=None):
        self.store = RepoStore(root)
        self.tokens = dict(DEFAULT_TOKENS if tokens is None else tokens)
        self.orgs = dict(DEFAULT_ORGS if orgs is None else orgs)
        self.requests = []
        self.unknown_routes = []  # requests no route matched: tests assert it stays empty
        self.server_errors = []  # exceptions raised while answering (500s): likewise
        self.incomplete_commits = 0
        self._fault = None
        self._fault_lock = threading.Lock()
        self._hang = None  # (release event, most seconds) while `hanging`
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.hub = self
        self._thread = None

    @property
    def url(self):
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self):
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="hub-server", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        hang = self._hang
        if hang is not None:
            hang[0].set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- fault injection ----------------------------------------------------------------
    def interrupt_next_commit(self, after_bytes):
        """Drop the connection once `after_bytes` of the next commit body have arrived."""
        with self._fault_lock:
            self._fault = {"after": after_bytes, "mode": "drop"}

    def hold_next_commit(self, after_bytes):
        """Pause the next commit after `after_bytes` of its body; returns `(reached, release, done)` events."""
        events = {name: threading.Event() for name in ("reached", "release", "done")}
        with self._fault_lock:
            self._fault = {"after": after_bytes, "mode": "hold", **events}
        return events["reached"], events["release"], events["done"]

    @contextlib.contextmanager
    def hanging(self, at_most=30):
        """Within the block, read every request and answer none; each waits until the block ends, at
        most `at_most` seconds, and then its connection is closed unanswered."""
        release = threading.Event()
        self._hang = (release, at_most)
        try:
            yield
        finally:
            self._hang = None
            release.set()

    def _take_fault(self):
        with self._fault_lock:
            fault, self._fault = self._fault, None
        return fault

    # -- access control ---------------------------------------------------------------------
    def user(self, authorization):
        if not authorization:
            return None
        token = authorization.removeprefix("Bearer ").strip()
        if token not in self.tokens:
            # The Hub's answer to a bad token, whatever the route; the client does not mistake it for a 404.
            message = "Invalid credentials in Authorization header"
            raise HubError(401, message, headers={"X-Error-Message": message})
        return self.tokens[token]

    def can_write(self, user, namespace):
        return user is not None and (namespace == user or namespace in self.orgs.get(user, ()))

    def readable_repo(self, repo_id, user):
        meta = self.store.meta(repo_id)
        if meta is None or (meta["private"] and not self.can_write(user, repo_id.split("/")[0])):
            raise HubError(404, "Repository not found", "RepoNotFound")
        return meta

    def writable_repo(self, repo_id, user):
        self.readable_repo(repo_id, user)
        if not self.can_write(user, repo_id.split("/")[0]):
            raise HubError(403, f"You don't have the rights to write to {repo_id}")

    def commit_of(self, repo_id, revision):
        commit_id = self.store.head(repo_id, revision)
        if commit_id is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit_id


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as httpx expects; every answer has a Content-Length

    ROUTES = [
        ("GET", r"/api/whoami-v2", "whoami"),
        ("GET", r"/api/agent-harnesses", "agent_harnesses"),
        ("POST", r"/api/repos/create", "create_repo"),
        ("POST", r"/api/validate-yaml", "validate_yaml"),
        ("GET", r"/api/models/(?P<repo>[^/]+/[^/]+)", "model_info"),
        ("GET", r"/api/models/(?P<repo>[^/]+/[^/]+)/revision/(?P<rev>[^/]+)", "model_info"),
        ("GET", r"/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)(?:/(?P<path>.+))?", "tree"),
        ("POST", r"/api/models/(?P<repo>[^/]+/[^/]+)/preupload/(?P<rev>[^/]+)", "preupload"),
        ("POST", r"/api/models/(?P<repo>[^/]+/[^/]+)/commit/(?P<rev>[^/]+)", "commit"),
        ("HEAD", r"/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve"),
        ("GET", r"/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve"),
    ]

    def log_message(self, *args):  # keep test output quiet
        pass

    @property
    def hub(self):
        return self.server.hub

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def _dispatch(self, method):
        split = urlsplit(self.path)
        self.query, self.fault = parse_qs(split.query), None  # one handler serves a whole keep-alive connection
        status = 500
        try:
            if self.hub._hang is not None:
                status = self._stall(*self.hub._hang)
                return
            for route_method, pattern, name in self.ROUTES:
                match = re.fullmatch(pattern, split.path)
                if route_method == method and match:
                    args = {key: unquote(value) for key, value in match.groupdict().items() if value is not None}
                    if name != "commit":  # the commit route reads its own body, in a fault-injectable way
                        self.body = self._read_body()
                        self.current_user = self.hub.user(self.headers.get("Authorization"))
                    status = getattr(self, name)(**args)
                    return
            self._read_body()
            self.hub.unknown_routes.append((method, split.path))
            raise HubError(404, f"{method} {split.path} is not a route of this test server")
        except HubError as error:
            status = error.status
            self._send_error(error)
        except (_Dropped, BrokenPipeError, ConnectionResetError):
            status, self.close_connection = 499, True  # the client is gone: nothing to answer
        except Exception as error:  # a bug of this server: answer 500 and let the tests see it
            self.hub.server_errors.append(f"{method} {split.path}: {error!r}")
            status = 500
            self._send_error(HubError(500, f"test server error: {error!r}"))
        finally:
            self.hub.requests.append((method, split.path, status))
            fault = getattr(self, "fault", None)
            if fault is not None and "done" in fault:
                fault["done"].set()

    # -- plumbing ---------------------------------------------------------------------------
    def _stall(self, release, at_most):
        """Take the request, answer nothing, and close the connection once released (`hanging`)."""
        self._read_body()
        release.wait(at_most)
        self.close_connection = True
        return 0  # logged as "never answered"

    def _read_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status, body=b"", headers=None, content_type="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        return status

    def _json(self, data, status=200, headers=None):
        return self._send(status, json.dumps(data).encode(), headers)

    def _send_error(self, error):
        headers = dict(error.headers)
        if error.code:
            headers["X-Error-Code"] = error.code
        headers.setdefault("X-Error-Message", error.message)
        headers["Connection"] = "close"  # the request body may be unread: this connection is not reused
        self._json({"error": error.message, **error.body}, error.status, headers)

    def _repo_id(self, repo):
        namespace, _, name = repo.partition("/")
        if not (NAME.match(namespace) and NAME.match(name)):
            raise HubError(400, f"Invalid repo id {repo!r}: expected 'namespace/name'")
        return repo

    # -- routes -------------------------------------------------------------------------------
    def whoami(self):
        user = self.current_user
        if user is None:
            raise HubError(401, "Invalid username or password.")
        orgs = [{"name": org, "type": "org"} for org in self.hub.orgs.get(user, ())]
        return self._json({"type": "user", "name": user, "orgs": orgs, "auth": {"accessToken": {"role": "write"}}})

    def agent_harnesses(self):
        # huggingface_hub fetches this registry (best effort) to tag its user agent; an empty one tags nothing.
        return self._json({"standardEnvVars": [], "harnesses": {}})

    def create_repo(self):
        payload = json.loads(self.body or b"{}")
        if payload.get("type", "model") != "model":
            raise HubError(400, f"This test server only hosts model repos, not {payload.get('type')!r}")
        user = self.current_user
        if user is None:
            raise HubError(401, "You must be authenticated to create a repo")
        namespace = payload.get("organization") or user
        repo_id = self._repo_id(f"{namespace}/{payload.get('name')}")
        if not self.hub.can_write(user, namespace):
            raise HubError(403, f"You don't have the rights to create a model under the namespace {namespace!r}")
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        try:
            self.hub.store.create(repo_id, user, private)
        except HubError as error:
            error.body["url"] = f"{self.hub.url}/{repo_id}"  # `create_repo(exist_ok=True)` reads it from the 409
            raise
        return self._json({"url": f"{self.hub.url}/{repo_id}", "name": repo_id, "id": repo_id})

    def validate_yaml(self):
        content = json.loads(self.body or b"{}").get("content", "")
        try:
            _front_matter(content)
        except (yaml.YAMLError, ValueError) as error:
            return self._json({"errors": [{"message": f"Invalid YAML front matter: {error}"}]}, 400)
        return self._json({"errors": [], "warnings": []})

    def model_info(self, repo, rev="main"):
        repo_id = self._repo_id(repo)
        meta = self.hub.readable_repo(repo_id, self.current_user)
        commit_id = self.hub.commit_of(repo_id, rev)
        record = self.hub.store.read_commit(repo_id, commit_id)
        blobs = "blobs" in self.query
        siblings = [
            {"rfilename": path, **({"size": f["size"], "blobId": f["oid"]} if blobs else {})}
            for path, f in sorted(record["files"].items())
        ]
        card = {}
        if "README.md" in record["files"]:
            card = _front_matter(self.hub.store.read_blob(repo_id, record["files"]["README.md"]["oid"]).decode())
        info = {
            "id": repo_id,
            "modelId": repo_id,
            "author": repo_id.split("/")[0],
            "sha": commit_id,
            "private": meta["private"],
            "disabled": False,
            "gated": False,
            "createdAt": meta["createdAt"],
            "lastModified": record["date"],
            "downloads": 0,
            "likes": 0,
            "tags": list(card.get("tags") or []),
            "library_name": card.get("library_name"),
            "pipeline_tag": card.get("pipeline_tag"),
            "cardData": card or None,
            "siblings": siblings,
        }
        return self._json(info)

    def tree(self, repo, rev, path=""):
        repo_id = self._repo_id(repo)
        self.hub.readable_repo(repo_id, self.current_user)
        record = self.hub.store.read_commit(repo_id, self.hub.commit_of(repo_id, rev))
        recursive = self.query.get("recursive", ["false"])[0].lower() in ("1", "true")
        prefix = f"{path.strip('/')}/" if path else ""
        entries, folders = [], set()
        for name, f in sorted(record["files"].items()):
            if not name.startswith(prefix):
                continue
            parts = name[len(prefix) :].split("/")
            for depth in range(1, len(parts)):
                if recursive or depth == 1:
                    folders.add(prefix + "/".join(parts[:depth]))
            if recursive or len(parts) == 1:
                entries.append({"type": "file", "oid": f["oid"], "size": f["size"], "path": name})
        if path and not entries and not folders:
            raise HubError(404, f"{path} does not exist on {rev}", "EntryNotFound")
        entries += [
            {"type": "directory", "oid": hashlib.sha1(folder.encode()).hexdigest(), "size": 0, "path": folder}
            for folder in sorted(folders)
        ]
        return self._json(entries)

    def preupload(self, repo, rev):
        repo_id = self._repo_id(repo)
        self.hub.writable_repo(repo_id, self.current_user)
        files = self.hub.store.read_commit(repo_id, self.hub.commit_of(repo_id, rev))["files"]
        answer = [
            # `regular` for every file: contents travel inside the commit, never through LFS/Xet.
            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
             "oid": files.get(f["path"], {}).get("oid")}
            for f in json.loads(self.body or b"{}").get("files", [])
        ]
        return self._json({"files": answer, "commitOid": self.hub.commit_of(repo_id, rev)})

    def commit(self, repo, rev):
        body = self._read_commit_body()  # read in full before anything is checked or written
        self.current_user = self.hub.user(self.headers.get("Authorization"))
        repo_id = self._repo_id(repo)
        self.hub.writable_repo(repo_id, self.current_user)
        if "create_pr" in self.query:
            raise HubError(400, "Pull requests are not supported by this test server")
        self.hub.commit_of(repo_id, rev)
        header, operations = _parse_commit(body)
        summary, description = header.get("summary", ""), header.get("description", "")
        commit_id = self.hub.store.commit(repo_id, rev, operations, summary, description, header.get("parentCommit"))
        return self._json(
            {"success": True, "commitOid": commit_id, "commitUrl": f"{self.hub.url}/{repo_id}/commit/{commit_id}"}
        )

    def _read_commit_body(self):
        length = self.headers.get("Content-Length")
        if length is None:
            raise HubError(411, "A commit needs a Content-Length")
        length = int(length)
        self.fault = fault = self.hub._take_fault()  # `done` is set once the whole request is handled
        body = bytearray()
        if fault is not None:
            body += self._read_upto(min(fault["after"], length))
            if fault["mode"] == "drop":
                self._drop("connection dropped by fault injection")
            fault["reached"].set()
            fault["release"].wait(timeout=60)
        body += self._read_upto(length - len(body))
        if len(body) < length:
            self._drop(f"commit body cut short: {len(body)} of {length} bytes")
        return bytes(body)

    def _read_upto(self, count):
        data = bytearray()
        while len(data) < count:
            try:
                chunk = self.rfile.read1(count - len(data))
            except (ConnectionError, OSError):
                break
            if not chunk:
                break
            data += chunk
        return bytes(data)

    def _drop(self, reason):
        self.hub.incomplete_commits += 1
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        raise _Dropped(reason)

    def resolve(self, repo, rev, path):
        repo_id = self._repo_id(repo)
        self.hub.readable_repo(repo_id, self.current_user)
        commit_id = self.hub.commit_of(repo_id, rev)
        entry = self.hub.store.read_commit(repo_id, commit_id)["files"].get(path)
        if entry is None:
            raise HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": commit_id})
        data = self.hub.store.read_blob(repo_id, entry["oid"])
        headers = {"X-Repo-Commit": commit_id, "ETag": f'"{entry["oid"]}"', "X-Linked-Size": str(entry["size"])}
        return self._send(200, data, headers, content_type="application/octet-stream")


class _Dropped(Exception):
    """The connection was dropped before the request was complete; nothing is answered."""


def _front_matter(text):
    """The YAML metadata block at the top of a README (`{}` when there is none)."""
    if not text.startswith("---"):
        return {}
    _, sep, rest = text.partition("\n")
    block, sep, _ = rest.partition("\n---")
    if not sep:
        raise ValueError("the metadata block opened with '---' is never closed")
    data = yaml.safe_load(block) or {}
    if not isinstance(data, dict):
        raise ValueError(f"metadata must be a mapping, got {type(data).__name__}")
    return data


def _parse_commit(body):
    header, operations = None, []
    for line in body.decode().splitlines():
        if not line.strip():
            continue
        item = json.loads(line)
        key, value = item.get("key"), item.get("value", {})
        if key == "header":
            header = value
            continue
        path = value.get("path", "")
        if path.startswith("/") or ".." in path.split("/") or not path.strip("/"):
            raise HubError(400, f"Invalid path in commit: {path!r}")
        if key == "file":
            if value.get("encoding") != "base64":
                raise HubError(400, f"Unsupported encoding {value.get('encoding')!r} for {path}")
            operations.append(("file", path, base64.b64decode(value["content"])))
        elif key in ("deletedFile", "deletedFolder"):
            operations.append((key, path, None))
        else:
            raise HubError(400, f"Unsupported commit operation {key!r}: preupload answers 'regular' for every file")
    if header is None:
        raise HubError(400, "Commit payload has no header line")
    return header, operations
