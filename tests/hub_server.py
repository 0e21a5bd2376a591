"""A loopback stand-in for the Hugging Face Hub: the endpoints huggingface_hub uses to create a
dataset repo, commit files (regular and LFS), list a revision and download files, served from memory.

Selected by the client through ``HF_ENDPOINT``; run the client with ``HF_HUB_DISABLE_XET=1`` (the Xet
storage protocol is not served). Records every request (method, path, Range and Authorization
headers) so tests can check resumption and what the client sent. ``drop_once[path] = n`` makes the
first download of ``path`` stop after n bytes (a broken connection); ``tamper(repo, path)`` changes a
stored file's bytes behind the manifest's back.
"""

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

LFS_SUFFIXES = (".h5", ".safetensors")


class FakeHub:
    def __init__(self, token: str):
        self.token = token
        self.created: list[dict] = []  # bodies of repo-create requests (name, visibility, ...)
        self.repos: dict[str, dict] = {}  # repo_id -> {"branches": {name: sha}, "trees": {sha: {path: oid}}}
        self.blobs: dict[str, bytes] = {}  # oid (sha256 for LFS, sha1 for regular) -> bytes
        self.lfs: set[str] = set()
        self.requests: list[dict] = []
        self.drop_once: dict[str, int] = {}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    # -- state ---------------------------------------------------------------------------------
    def tree(self, repo_id: str, revision: str) -> tuple[str, dict[str, str]] | None:
        repo = self.repos.get(repo_id)
        if repo is None:
            return None
        sha = repo["branches"].get(revision, revision if revision in repo["trees"] else None)
        return (sha, repo["trees"][sha]) if sha else None

    def tamper(self, repo_id: str, path: str) -> None:
        _, files = self.tree(repo_id, "main")
        data = bytearray(self.blobs[files[path]])
        data[len(data) // 2] ^= 0xFF
        self.blobs[files[path]] = bytes(data)

    def _commit(self, repo_id: str, branch: str, lines: list[dict]) -> str:
        repo = self.repos[repo_id]
        parent = repo["branches"].get(branch) or repo["branches"]["main"]
        files = dict(repo["trees"][parent])
        for line in lines:
            value = line["value"]
            if line["key"] == "file":
                data = base64.b64decode(value["content"])
                oid = hashlib.sha1(data).hexdigest()
                self.blobs[oid] = data
                files[value["path"]] = oid
            elif line["key"] == "lfsFile":
                if value["oid"] not in self.blobs:
                    raise KeyError(f"LFS object {value['oid']} was never uploaded")
                files[value["path"]] = value["oid"]
            elif line["key"] == "deletedFile":
                files.pop(value["path"], None)
        sha = hashlib.sha1(json.dumps([parent, sorted(files.items())]).encode()).hexdigest()
        repo["trees"][sha] = files
        repo["branches"][branch] = sha
        return sha

    # -- HTTP ----------------------------------------------------------------------------------
    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _record(self):
                hub.requests.append({"method": self.command, "path": urlparse(self.path).path,
                                     "range": self.headers.get("Range"),
                                     "auth": self.headers.get("Authorization")})

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length", 0)))

            def _json(self, data, status=200, headers=None):
                body = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _error(self, status, code, message):
                self._json({"error": message}, status, {"X-Error-Code": code,
                                                        "X-Error-Message": message})

            def _authorised(self) -> bool:
                if self.headers.get("Authorization") != f"Bearer {hub.token}":
                    self._error(401, "Unauthorized", "Invalid credentials")
                    return False
                return True

            def do_HEAD(self):
                self._record()
                self._resolve()

            def do_GET(self):
                self._record()
                path = unquote(urlparse(self.path).path)
                if path == "/api/whoami-v2":
                    if self._authorised():
                        self._json({"type": "user", "name": "tester",
                                    "auth": {"accessToken": {"role": "write"}}})
                    return
                m = re.fullmatch(r"/api/datasets/([^/]+/[^/]+)/revision/(.+)", path)
                if m:
                    found = hub.tree(m.group(1), m.group(2))
                    if found is None:
                        return self._error(404, "RepoNotFound", "Repository not found")
                    sha, files = found
                    return self._json({"id": m.group(1), "sha": sha, "private": False,
                                       "siblings": [{"rfilename": p} for p in sorted(files)]})
                m = re.fullmatch(r"/api/datasets/([^/]+/[^/]+)/tree/([^/]+)(/.*)?", path)
                if m:
                    found = hub.tree(m.group(1), m.group(2))
                    if found is None:
                        return self._error(404, "RevisionNotFound", "Revision not found")
                    items = []
                    for p, oid in sorted(found[1].items()):
                        item = {"type": "file", "path": p, "size": len(hub.blobs[oid]),
                                "oid": hashlib.sha1(p.encode() + oid.encode()).hexdigest()}
                        if oid in hub.lfs:
                            item["lfs"] = {"oid": oid, "size": len(hub.blobs[oid]),
                                           "pointerSize": 130}
                        items.append(item)
                    return self._json(items)
                self._resolve()

            def _resolve(self):
                path = unquote(urlparse(self.path).path)
                m = re.fullmatch(r"/datasets/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
                found = hub.tree(m.group(1), m.group(2)) if m else None
                if found is None or m.group(3) not in found[1]:
                    return self._error(404, "EntryNotFound", "Entry not found")
                sha, files = found
                oid = files[m.group(3)]
                data = hub.blobs[oid]
                start = 0
                if self.headers.get("Range"):
                    start = int(re.match(r"bytes=(\d+)-", self.headers["Range"]).group(1))
                self.send_response(206 if start else 200)
                self.send_header("X-Repo-Commit", sha)
                self.send_header("ETag", f'"{oid}"')
                if oid in hub.lfs:
                    self.send_header("X-Linked-Etag", f'"{oid}"')
                    self.send_header("X-Linked-Size", str(len(data)))
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(data) - start))
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                if self.command == "HEAD":
                    return
                cut = hub.drop_once.pop(m.group(3), None)
                if cut is not None:
                    self.wfile.write(data[start:start + cut])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.wfile.write(data[start:])

            def do_PUT(self):
                self._record()
                path = urlparse(self.path).path
                m = re.fullmatch(r"/lfs-upload/([0-9a-f]{64})", path)
                data = self._body()
                if not m or hashlib.sha256(data).hexdigest() != m.group(1):
                    return self._error(400, "BadUpload", "content does not match its oid")
                hub.blobs[m.group(1)] = data
                hub.lfs.add(m.group(1))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self):
                self._record()
                path = unquote(urlparse(self.path).path)
                body = self._body()
                if not self._authorised():
                    return
                if path == "/api/validate-yaml":
                    return self._json({"errors": [], "warnings": []})
                if path == "/api/repos/create":
                    data = json.loads(body)
                    hub.created.append(data)
                    repo_id = f"{data.get('organization') or 'tester'}/{data['name']}"
                    if repo_id in hub.repos:
                        return self._error(409, "RepoExists", "You already created this repo")
                    empty = hashlib.sha1(repo_id.encode()).hexdigest()
                    hub.repos[repo_id] = {"branches": {"main": empty}, "trees": {empty: {}}}
                    return self._json({"url": f"{hub.url}/datasets/{repo_id}"})
                m = re.fullmatch(r"/api/datasets/([^/]+/[^/]+)/branch/(.+)", path)
                if m:
                    repo = hub.repos[m.group(1)]
                    if m.group(2) in repo["branches"]:
                        return self._error(409, "BranchExists", "Reference already exists")
                    repo["branches"][m.group(2)] = repo["branches"]["main"]
                    return self._json({})
                m = re.fullmatch(r"/api/datasets/([^/]+/[^/]+)/preupload/(.+)", path)
                if m:
                    files = json.loads(body)["files"]
                    return self._json({"files": [
                        {"path": f["path"], "shouldIgnore": False,
                         "uploadMode": "lfs" if f["path"].endswith(LFS_SUFFIXES) else "regular"}
                        for f in files]})
                m = re.fullmatch(r"/datasets/([^/]+/[^/]+)\.git/info/lfs/objects/batch", path)
                if m:
                    objects = []
                    for obj in json.loads(body)["objects"]:
                        item = {"oid": obj["oid"], "size": obj["size"]}
                        if obj["oid"] not in hub.blobs:
                            item["actions"] = {"upload": {
                                "href": f"{hub.url}/lfs-upload/{obj['oid']}"}}
                        objects.append(item)
                    return self._json({"transfer": "basic", "objects": objects})
                m = re.fullmatch(r"/api/datasets/([^/]+/[^/]+)/commit/(.+)", path)
                if m:
                    lines = [json.loads(line) for line in body.splitlines() if line.strip()]
                    sha = hub._commit(m.group(1), m.group(2), lines[1:])
                    return self._json({"success": True, "commitOid": sha,
                                       "commitUrl": f"{hub.url}/datasets/{m.group(1)}/commit/{sha}"})
                self._error(404, "NotFound", f"no endpoint {path}")

        return Handler
