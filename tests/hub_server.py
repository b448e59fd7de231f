"""A stdlib-only stand-in of the Hugging Face Hub, for dataset repos, served over real HTTP on 127.0.0.1.

It answers the endpoints that ``Dataset(Dict).push_to_hub(config_name=...)``, ``DatasetCard.load/push_to_hub``,
``snapshot_download`` and ``load_dataset("user/name", config)`` use, with the reply shapes measured in
``shared/ENVIRONMENT.md`` section 6. Clients must import huggingface_hub/datasets with
``HF_ENDPOINT=<url>`` and ``HF_HUB_DISABLE_XET=1`` already set (both are read at import time).

Storage (under ``root/<namespace>/<name>/``): ``blobs/<git sha1>`` for regular files, ``lfs/<sha256>`` for LFS
objects, ``commits/<sha>.json`` (parent, summary and the full path -> entry tree) and ``refs.json``
(``{"main": sha}``). Past commits stay servable by sha, as HfFileSystem pins reads to one.

Faults: ``server.inject_fault("commit", match="C/")`` makes the next commit whose summary or paths contain
``"C/"`` fail with 500 (``"lfs_put"`` and ``"preupload"`` work the same way, matched on the object id or paths).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit


_REPO = r"(?P<repo>[\w.-]+/[\w.-]+)"
_LFS_SUFFIXES = (".parquet", ".arrow")


@dataclass
class Fault:
    """One injected failure: the next ``times`` requests of kind ``op`` whose text contains ``match`` fail."""

    op: str
    status: int = 500
    times: int = 1
    match: str = ""
    #: quote the request's Authorization header in the error (as a careless server or proxy does)
    echo_token: bool = False


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a regular file, as the Hub reports it."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubStandIn(ThreadingHTTPServer):
    """The server: one global lock, one folder per repo, a list of pending faults and a request log."""

    daemon_threads = True

    def __init__(self, root: Path, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.root = Path(root)
        self.lock = threading.Lock()
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def inject_fault(
        self, op: str, *, status: int = 500, times: int = 1, match: str = "", echo_token: bool = False
    ) -> None:
        """Fail the next ``times`` ``op`` requests ("commit", "lfs_put" or "preupload") that contain ``match``;
        with ``echo_token`` the error message quotes the request's Authorization header."""
        with self.lock:
            self.faults.append(Fault(op, status, times, match, echo_token))

    def _take_fault(self, op: str, text: str) -> Fault | None:
        for fault in self.faults:
            if fault.op == op and fault.match in text and fault.times > 0:
                fault.times -= 1
                return fault
        return None

    # -- storage, also the API tests read -------------------------------------------------------------------
    def repo_dir(self, repo_id: str) -> Path:
        return self.root / repo_id

    def head(self, repo_id: str, rev: str = "main") -> str | None:
        """The commit sha that ``rev`` (a branch or a sha) points to, or None for an unknown repo/revision."""
        refs_file = self.repo_dir(repo_id) / "refs.json"
        if not refs_file.is_file():
            return None
        refs = json.loads(refs_file.read_text())
        if rev in refs:
            return refs[rev]
        return rev if (self.repo_dir(repo_id) / "commits" / f"{rev}.json").is_file() else None

    def commit(self, repo_id: str, sha: str) -> dict:
        return json.loads((self.repo_dir(repo_id) / "commits" / f"{sha}.json").read_text())

    def tree(self, repo_id: str, rev: str = "main") -> dict[str, dict]:
        """Path -> ``{"oid", "size", "lfs"?}`` of every file at ``rev``."""
        return self.commit(repo_id, self.head(repo_id, rev))["tree"]

    def read(self, repo_id: str, path: str, rev: str = "main") -> bytes:
        entry = self.tree(repo_id, rev)[path]
        kind, oid = ("lfs", entry["lfs"]) if "lfs" in entry else ("blobs", entry["oid"])
        return (self.repo_dir(repo_id) / kind / oid).read_bytes()

    def _store(self, repo_id: str, kind: str, oid: str, data: bytes) -> None:
        path = self.repo_dir(repo_id) / kind / oid
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def _write_commit(self, repo_id: str, parent: str | None, tree: dict, summary: str) -> str:
        body = json.dumps({"parent": parent, "tree": tree, "summary": summary, "time": time.time()}, sort_keys=True)
        sha = hashlib.sha1(body.encode()).hexdigest()
        commits = self.repo_dir(repo_id) / "commits"
        commits.mkdir(parents=True, exist_ok=True)
        (commits / f"{sha}.json").write_text(json.dumps({"parent": parent, "tree": tree, "summary": summary}))
        (self.repo_dir(repo_id) / "refs.json").write_text(json.dumps({"main": sha}))
        return sha


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: HubStandIn

    def log_message(self, format, *args):  # noqa: A002 - silence the default stderr access log
        pass

    # -- plumbing --------------------------------------------------------------------------------------------
    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while size := int(self.rfile.readline().split(b";")[0], 16):
                data += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
            return data
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, body: bytes | dict | list = b"", headers: dict | None = None, ctype=None) -> None:
        if not isinstance(body, bytes):
            body, ctype = json.dumps(body).encode(), ctype or "application/json"
        self.send_response(status)
        self.send_header("Content-Type", ctype or "application/octet-stream")
        self.send_header("Content-Length", str((headers or {}).pop("Content-Length", len(body))))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, code: str, message: str) -> None:
        self._send(status, {"error": message}, {"X-Error-Code": code, "X-Error-Message": message})

    def _fault_error(self, fault: Fault, message: str) -> None:
        if fault.echo_token:
            message += f" (credentials sent: {self.headers.get('Authorization')})"
        self._error(fault.status, "InjectedFault", message)

    def _route(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        self.server.requests.append((self.command, url.path))
        body = self._body() if self.command in ("POST", "PUT") else b""
        for method, pattern, handler in _ROUTES:
            match = re.fullmatch(pattern, url.path)
            if match and method == self.command:
                params = {k: unquote(v) if v is not None else None for k, v in match.groupdict().items()}
                with self.server.lock:
                    return handler(self, body=body, query=query, **params)
        self._error(404, "EntryNotFound", f"no route for {self.command} {url.path}")

    do_GET = do_HEAD = do_POST = do_PUT = _route

    def _resolve_rev(self, repo: str, rev: str) -> str | None:
        if not (self.server.repo_dir(repo) / "refs.json").is_file():
            self._error(404, "RepoNotFound", f"Repository {repo} not found")
            return None
        sha = self.server.head(repo, rev)
        if sha is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        return sha

    # -- endpoints -------------------------------------------------------------------------------------------
    def repo_info(self, *, repo, rev="main", **_):
        if (sha := self._resolve_rev(repo, rev)) is None:
            return
        siblings = [{"rfilename": path} for path in sorted(self.server.tree(repo, sha))]
        self._send(
            200,
            {
                "id": repo,
                "sha": sha,
                "private": False,
                "author": repo.split("/")[0],
                "tags": [],
                "lastModified": "2026-01-01T00:00:00.000Z",
                "siblings": siblings,
                "downloads": 0,
            },
        )

    def create_repo(self, *, body, **_):
        payload = json.loads(body)
        repo = f"{payload.get('organization') or 'user'}/{payload['name']}"
        if (self.server.repo_dir(repo) / "refs.json").is_file():
            return self._error(409, "RepoExists", "You already created this dataset repo")
        attributes = b"*.parquet filter=lfs diff=lfs merge=lfs -text\n*.arrow filter=lfs diff=lfs merge=lfs -text\n"
        self.server._store(repo, "blobs", git_blob_sha1(attributes), attributes)
        tree = {".gitattributes": {"oid": git_blob_sha1(attributes), "size": len(attributes)}}
        self.server._write_commit(repo, None, tree, "initial commit")
        self._send(200, {"url": f"{self.server.url}/datasets/{repo}", "name": repo})

    def validate_yaml(self, **_):
        self._send(200, {"errors": [], "warnings": []})

    def preupload(self, *, repo, rev, body, **_):
        if (sha := self._resolve_rev(repo, rev)) is None:
            return
        files = json.loads(body)["files"]
        if fault := self.server._take_fault("preupload", " ".join(f["path"] for f in files)):
            return self._fault_error(fault, "injected preupload fault")
        tree, replies = self.server.tree(repo, sha), []
        for file in files:
            lfs = file["path"].endswith(_LFS_SUFFIXES) or b"\0" in base64.b64decode(file["sample"])
            entry = tree.get(file["path"], {})
            replies.append(
                {
                    "path": file["path"],
                    "uploadMode": "lfs" if lfs else "regular",
                    "shouldIgnore": False,
                    "oid": entry.get("lfs") if lfs else entry.get("oid"),
                }
            )
        self._send(200, {"files": replies, "commitOid": sha})

    def lfs_batch(self, *, repo, body, **_):
        objects = []
        for obj in json.loads(body)["objects"]:
            reply = {"oid": obj["oid"], "size": obj["size"]}
            if not (self.server.repo_dir(repo) / "lfs" / obj["oid"]).is_file():
                reply["actions"] = {"upload": {"href": f"{self.server.url}/_lfs/{repo}/{obj['oid']}"}}
            objects.append(reply)
        self._send(200, {"transfer": "basic", "objects": objects}, ctype="application/vnd.git-lfs+json")

    def lfs_put(self, *, repo, oid, body, **_):
        if fault := self.server._take_fault("lfs_put", oid):
            return self._fault_error(fault, "injected LFS upload fault")
        if hashlib.sha256(body).hexdigest() != oid:
            return self._error(400, "BadRequest", f"sha256 mismatch for LFS object {oid}")
        self.server._store(repo, "lfs", oid, body)
        self._send(200, b"")

    def commit(self, *, repo, rev, body, **_):
        if (head := self._resolve_rev(repo, rev)) is None:
            return
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        header = next(line["value"] for line in lines if line["key"] == "header")
        ops = [line for line in lines if line["key"] != "header"]
        text = " ".join([header["summary"]] + [op["value"]["path"] for op in ops])
        if fault := self.server._take_fault("commit", text):
            return self._fault_error(fault, f"injected commit fault ({fault.match!r})")
        if header.get("parentCommit") not in (None, head):
            return self._error(412, "PreconditionFailed", "A commit has happened since. Please refresh and try again.")
        tree = dict(self.server.tree(repo, head))
        for op in ops:
            key, value = op["key"], op["value"]
            if key == "file":
                data = base64.b64decode(value["content"])
                self.server._store(repo, "blobs", git_blob_sha1(data), data)
                tree[value["path"]] = {"oid": git_blob_sha1(data), "size": len(data)}
            elif key == "lfsFile":
                if not (self.server.repo_dir(repo) / "lfs" / value["oid"]).is_file():
                    return self._error(422, "LfsObjectMissing", f"LFS object {value['oid']} was never uploaded")
                pointer = (
                    f"version https://git-lfs.github.com/spec/v1\noid sha256:{value['oid']}\nsize {value['size']}\n"
                )
                tree[value["path"]] = {
                    "oid": git_blob_sha1(pointer.encode()),
                    "size": value["size"],
                    "lfs": value["oid"],
                }
            elif key == "deletedFile":
                tree.pop(value["path"], None)
            elif key == "deletedFolder":
                tree = {p: e for p, e in tree.items() if not p.startswith(value["path"].rstrip("/") + "/")}
        sha = self.server._write_commit(repo, head, tree, header["summary"])
        self._send(200, {"commitOid": sha, "commitUrl": f"{self.server.url}/datasets/{repo}/commit/{sha}"})

    @staticmethod
    def _entry(path: str, entry: dict | None) -> dict:
        if entry is None:
            return {"type": "directory", "path": path, "oid": git_blob_sha1(path.encode()), "size": 0}
        lfs = {"lfs": {"oid": entry["lfs"], "size": entry["size"], "pointerSize": 128}} if "lfs" in entry else {}
        return {"type": "file", "path": path, "size": entry["size"], "oid": entry["oid"], **lfs}

    def tree_listing(self, *, repo, rev, path, query, **_):
        if (sha := self._resolve_rev(repo, rev)) is None:
            return
        prefix, recursive = (path or "").strip("/"), query.get("recursive", "").lower() in ("true", "1")
        prefix, found = prefix + "/" if prefix else "", {}  # path -> tree entry, or None for a folder
        for file, entry in self.server.tree(repo, sha).items():
            if not file.startswith(prefix):
                continue
            parts = file[len(prefix) :].split("/")
            for depth in range(1, len(parts) if recursive else min(len(parts), 2)):
                found[prefix + "/".join(parts[:depth])] = None
            if recursive or len(parts) == 1:
                found[file] = entry
        if prefix and not found:
            return self._error(404, "EntryNotFound", f"{path} does not exist on {rev}")
        self._send(200, [self._entry(p, e) for p, e in sorted(found.items())])

    def paths_info(self, *, repo, rev, body, **_):
        if (sha := self._resolve_rev(repo, rev)) is None:
            return
        tree, entries = self.server.tree(repo, sha), []
        for path in parse_qs(body.decode()).get("paths", []):
            if path in tree:
                entries.append(self._entry(path, tree[path]))
            elif any(file.startswith(path.rstrip("/") + "/") for file in tree):
                entries.append(self._entry(path, None))
        self._send(200, entries)

    def resolve(self, *, repo, rev, path, **_):
        if (sha := self._resolve_rev(repo, rev)) is None:
            return
        entry = self.server.tree(repo, sha).get(path)
        if entry is None:
            return self._error(404, "EntryNotFound", f"{path} does not exist on {rev}")
        data = self.server.read(repo, path, sha)
        headers = {"ETag": f'"{entry.get("lfs", entry["oid"])}"', "X-Repo-Commit": sha, "Accept-Ranges": "bytes"}
        status, ranged = 200, re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if ranged:
            start, end = int(ranged[1]), int(ranged[2] or len(data) - 1)
            headers["Content-Range"] = f"bytes {start}-{min(end, len(data) - 1)}/{len(data)}"
            status, data = 206, data[start : end + 1]
        if self.command == "HEAD":
            headers["Content-Length"] = len(data)
            data = b""
        self._send(status, data, headers)


_API = rf"/api/datasets/{_REPO}"
_ROUTES = [
    ("GET", _API, _Handler.repo_info),
    ("GET", rf"{_API}/revision/(?P<rev>[^/]+)", _Handler.repo_info),
    ("GET", rf"{_API}/tree/(?P<rev>[^/]+)(?:/(?P<path>.+))?", _Handler.tree_listing),
    ("POST", rf"{_API}/paths-info/(?P<rev>[^/]+)", _Handler.paths_info),
    ("POST", rf"{_API}/preupload/(?P<rev>[^/]+)", _Handler.preupload),
    ("POST", rf"{_API}/commit/(?P<rev>[^/]+)", _Handler.commit),
    ("POST", r"/api/repos/create", _Handler.create_repo),
    ("POST", r"/api/validate-yaml", _Handler.validate_yaml),
    ("POST", rf"/datasets/{_REPO}\.git/info/lfs/objects/batch", _Handler.lfs_batch),
    ("PUT", rf"/_lfs/{_REPO}/(?P<oid>[0-9a-f]{{64}})", _Handler.lfs_put),
    ("GET", rf"/datasets/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", _Handler.resolve),
    ("HEAD", rf"/datasets/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", _Handler.resolve),
]

# Space repos (an ``evaluate`` module published as a Space, loaded with ``evaluate.load("user/name")``, which reads
# ``{HF_ENDPOINT}/spaces/{id}/resolve/{rev}/{file}``): the same handlers and store; repo ids share one namespace.
_SPACE_API = rf"/api/spaces/{_REPO}"
_ROUTES += [
    ("GET", _SPACE_API, _Handler.repo_info),
    ("GET", rf"{_SPACE_API}/revision/(?P<rev>[^/]+)", _Handler.repo_info),
    ("GET", rf"{_SPACE_API}/tree/(?P<rev>[^/]+)(?:/(?P<path>.+))?", _Handler.tree_listing),
    ("POST", rf"{_SPACE_API}/preupload/(?P<rev>[^/]+)", _Handler.preupload),
    ("POST", rf"{_SPACE_API}/commit/(?P<rev>[^/]+)", _Handler.commit),
    ("GET", rf"/spaces/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", _Handler.resolve),
    ("HEAD", rf"/spaces/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", _Handler.resolve),
]


@contextlib.contextmanager
def serve_hub(tmp_dir: Path):
    """Serve a fresh stand-in storing under ``tmp_dir`` in a background thread; yield ``(url, server)``."""
    server = HubStandIn(Path(tmp_dir))
    thread = threading.Thread(target=server.serve_forever, name="hub-stand-in", daemon=True)
    thread.start()
    try:
        yield server.url, server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
