"""A local HTTP server speaking the GitHub REST endpoints pg-architect calls through PyGithub.

GitHub is SaaS that cannot run here, so this server stands in for it, over the network: PyGithub talks to it
exactly as to api.github.com (``base_url``). It keeps repositories in memory (branches, commits, trees and
blobs, pull requests, issues, labels), checks the bearer token (401 otherwise), answers 422 where GitHub does
(a ref that exists, a pull request that exists), and can be told to fail: ``fail_next(method, path_regex,
status, times)`` for 5xx, ``rate_limit_next(...)`` for a 403 with ``X-RateLimit-Remaining: 0``. Tests close
or merge a pull request with ``close_pull`` / ``merge_pull`` and read ``requests`` to see what was called.

Reusable: ``with GitHubApi(token="t") as api: api.add_repo("acme/shop")``.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import re
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit


@dataclasses.dataclass
class Fault:
    method: str
    path: re.Pattern[str]
    status: int
    times: int
    headers: dict[str, str]
    body: dict[str, Any]


@dataclasses.dataclass
class Repo:
    full_name: str
    default_branch: str
    branches: dict[str, str] = dataclasses.field(default_factory=dict)  # name -> commit sha
    commits: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # sha -> {tree, parents, message}
    trees: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)  # sha -> {path: content}
    pulls: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    labels: dict[int, list[str]] = dataclasses.field(default_factory=dict)
    issues: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # issues share the pulls' numbers


def _sha(*parts: str) -> str:
    return hashlib.sha1("\0".join(parts).encode()).hexdigest()


class GitHubApi:
    def __init__(self, token: str = "test-token", host: str = "127.0.0.1") -> None:
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self.faults: list[Fault] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer((host, 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    # -- lifecycle -------------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> GitHubApi:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- test controls -----------------------------------------------------------------------------------------
    def add_repo(self, full_name: str, default_branch: str = "main", files: dict[str, str] | None = None) -> Repo:
        repo = Repo(full_name, default_branch)
        tree = _sha("tree", json.dumps(files or {}, sort_keys=True))
        repo.trees[tree] = dict(files or {})
        commit = _sha("commit", tree, "initial")
        repo.commits[commit] = {"tree": tree, "parents": [], "message": "initial"}
        repo.branches[default_branch] = commit
        self.repos[full_name] = repo
        return repo

    def fail_next(
        self,
        method: str,
        path: str,
        status: int,
        times: int = 1,
        headers: dict[str, str] | None = None,
        message: str = "Server Error",
    ) -> None:
        """The next ``times`` requests ``method`` whose path matches regex ``path`` get ``status``."""
        with self.lock:
            self.faults.append(Fault(method, re.compile(path), status, times, headers or {}, {"message": message}))

    def rate_limit_next(self, method: str, path: str, reset_in_s: float = 1.0) -> None:
        """One primary rate-limit refusal, as GitHub sends it (403, remaining 0, reset time)."""
        reset = str(int(time.time() + reset_in_s) + 1)
        self.fail_next(
            method,
            path,
            403,
            headers={"X-RateLimit-Limit": "5000", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset},
            message="API rate limit exceeded",
        )

    def open_pull(self, full_name: str, number: int, head: str | None = None) -> str:
        """A pull request opened by someone else (its branch at the base's commit); returns its web URL, as
        pg-architect stores it on a recommendation."""
        repo = self.repos[full_name]
        head = head or f"pg-architect/pr-{number}"
        repo.branches.setdefault(head, repo.branches[repo.default_branch])
        base = repo.default_branch
        repo.pulls.append(
            {
                "number": number,
                "state": "open",
                "merged": False,
                "merged_at": None,
                "merged_by": None,
                "title": f"pull request {number}",
                "body": "",
                "head": {"ref": head, "sha": repo.branches[head], "label": f"{full_name.split('/')[0]}:{head}"},
                "base": {"ref": base, "sha": repo.branches[base]},
            }
        )
        return f"https://github.com/{full_name}/pull/{number}"

    def close_pull(self, full_name: str, number: int) -> None:
        self._pull(full_name, number).update(state="closed", merged=False, merged_at=None)

    def merge_pull(self, full_name: str, number: int, by: str | None = None) -> None:
        pr = self._pull(full_name, number)
        pr.update(state="closed", merged=True, merged_at="2026-01-05T10:00:00Z")
        if by is not None:
            pr["merged_by"] = {"login": by, "id": 1, "type": "User"}
        repo = self.repos[full_name]
        repo.branches[repo.default_branch] = repo.branches[pr["head"]["ref"]]

    def files_on(self, full_name: str, branch: str) -> dict[str, str]:
        repo = self.repos[full_name]
        return dict(repo.trees[repo.commits[repo.branches[branch]]["tree"]])

    def count(self, method: str, pattern: str) -> int:
        return sum(1 for m, p in self.requests if m == method and re.search(pattern, p))

    def _pull(self, full_name: str, number: int) -> dict[str, Any]:
        return next(p for p in self.repos[full_name].pulls if p["number"] == number)

    # -- the API -------------------------------------------------------------------------------------------------
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def do_PUT(self) -> None:
                self._serve("PUT")

            def do_PATCH(self) -> None:
                self._serve("PATCH")

            def _serve(self, method: str) -> None:
                url = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                with api.lock:
                    api.requests.append((method, url.path))
                    status, doc, headers = api._answer(method, url.path, parse_qs(url.query), raw, self.headers)
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

        return Handler

    def _answer(
        self, method: str, path: str, query: dict[str, list[str]], raw: bytes, headers: Any
    ) -> tuple[int, Any, dict[str, str]]:
        rate = {"X-RateLimit-Limit": "5000", "X-RateLimit-Remaining": "4999", "X-RateLimit-Reset": "0"}
        for fault in self.faults:
            if fault.times > 0 and fault.method == method and fault.path.search(path):
                fault.times -= 1
                return fault.status, fault.body, {**rate, **fault.headers}
        auth = headers.get("Authorization") or ""
        if auth not in (f"token {self.token}", f"Bearer {self.token}"):
            return 401, {"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"}, rate
        body = json.loads(raw) if raw else {}
        for pattern, route_method, handler in self._routes():
            match = re.fullmatch(pattern, path)
            if match and route_method == method:
                full_name = f"{match.group('owner')}/{match.group('repo')}"
                repo = self.repos.get(full_name)
                if repo is None:
                    return 404, {"message": "Not Found"}, rate
                status, doc = handler(repo, match.groupdict(), query, body)
                return status, doc, rate
        return 404, {"message": f"Not Found ({method} {path})"}, rate

    def _routes(self) -> list[tuple[str, str, Callable[..., tuple[int, Any]]]]:
        r = r"/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)"
        return [
            (r, "GET", self._get_repo),
            (r + r"/branches/(?P<branch>.+)", "GET", self._get_branch),
            (r + r"/git/ref/heads/(?P<branch>.+)", "GET", self._get_ref),
            (r + r"/git/refs", "POST", self._create_ref),
            (r + r"/git/commits/(?P<sha>[0-9a-f]+)", "GET", self._get_commit),
            (r + r"/git/trees/(?P<sha>[0-9a-f]+)", "GET", self._get_tree),
            (r + r"/git/trees", "POST", self._create_tree),
            (r + r"/git/commits", "POST", self._create_commit),
            (r + r"/pulls", "GET", self._list_pulls),
            (r + r"/pulls", "POST", self._create_pull),
            (r + r"/pulls/(?P<number>\d+)", "GET", self._get_pull),
            (r + r"/issues/(?P<number>\d+)/labels", "POST", self._add_labels),
            (r + r"/issues", "GET", self._list_issues),
            (r + r"/issues/(?P<number>\d+)", "GET", self._get_issue),
            (r + r"/issues", "POST", self._create_issue),
            (r + r"/git/blobs/(?P<sha>[0-9a-f]+)", "GET", self._get_blob),
        ]

    # -- payloads --------------------------------------------------------------------------------------------
    def _repo_json(self, repo: Repo) -> dict[str, Any]:
        owner, name = repo.full_name.split("/")
        return {
            "id": abs(hash(repo.full_name)) % 10**8,
            "name": name,
            "full_name": repo.full_name,
            "owner": {"login": owner, "id": 1, "type": "Organization", "url": f"{self.url}/users/{owner}"},
            "default_branch": repo.default_branch,
            "url": f"{self.url}/repos/{repo.full_name}",
            "html_url": f"https://github.example/{repo.full_name}",
        }

    def _commit_json(self, repo: Repo, sha: str) -> dict[str, Any]:
        c = repo.commits[sha]
        base = f"{self.url}/repos/{repo.full_name}/git"
        return {
            "sha": sha,
            "url": f"{base}/commits/{sha}",
            "message": c["message"],
            "tree": {"sha": c["tree"], "url": f"{base}/trees/{c['tree']}"},
            "parents": [{"sha": p, "url": f"{base}/commits/{p}"} for p in c["parents"]],
        }

    def _pull_json(self, repo: Repo, pr: dict[str, Any]) -> dict[str, Any]:
        n = pr["number"]
        return {
            **pr,
            "id": 1000 + n,
            "url": f"{self.url}/repos/{repo.full_name}/pulls/{n}",
            "html_url": f"https://github.example/{repo.full_name}/pull/{n}",
            "issue_url": f"{self.url}/repos/{repo.full_name}/issues/{n}",
            "labels": [{"name": label} for label in repo.labels.get(n, [])],
        }

    # -- handlers --------------------------------------------------------------------------------------------
    def _get_repo(self, repo: Repo, m: dict[str, str], q: Any, b: Any) -> tuple[int, Any]:
        return 200, self._repo_json(repo)

    def _get_branch(self, repo: Repo, m: dict[str, str], q: Any, b: Any) -> tuple[int, Any]:
        branch = unquote(m["branch"])
        if branch not in repo.branches:
            return 404, {"message": "Branch not found"}
        sha = repo.branches[branch]
        return 200, {
            "name": branch,
            "commit": {
                "sha": sha,
                "url": f"{self.url}/repos/{repo.full_name}/commits/{sha}",
                "commit": self._commit_json(repo, sha),
            },
            "protected": False,
        }

    def _ref_json(self, repo: Repo, branch: str) -> dict[str, Any]:
        sha = repo.branches[branch]
        return {
            "ref": f"refs/heads/{branch}",
            "url": f"{self.url}/repos/{repo.full_name}/git/refs/heads/{branch}",
            "object": {"sha": sha, "type": "commit", "url": f"{self.url}/repos/{repo.full_name}/git/commits/{sha}"},
        }

    def _get_ref(self, repo: Repo, m: dict[str, str], q: Any, b: Any) -> tuple[int, Any]:
        branch = unquote(m["branch"])
        if branch not in repo.branches:
            return 404, {"message": "Not Found"}
        return 200, self._ref_json(repo, branch)

    def _create_ref(self, repo: Repo, m: dict[str, str], q: Any, body: dict[str, Any]) -> tuple[int, Any]:
        ref, sha = body.get("ref", ""), body.get("sha", "")
        if not ref.startswith("refs/heads/") or sha not in repo.commits:
            return 422, {"message": "Invalid request"}
        branch = ref.removeprefix("refs/heads/")
        if branch in repo.branches:
            return 422, {"message": "Reference already exists"}
        repo.branches[branch] = sha
        return 201, self._ref_json(repo, branch)

    def _get_commit(self, repo: Repo, m: dict[str, str], q: Any, b: Any) -> tuple[int, Any]:
        if m["sha"] not in repo.commits:
            return 404, {"message": "Not Found"}
        return 200, self._commit_json(repo, m["sha"])

    def _get_tree(self, repo: Repo, m: dict[str, str], q: Any, b: Any) -> tuple[int, Any]:
        if m["sha"] not in repo.trees:
            return 404, {"message": "Not Found"}
        files = repo.trees[m["sha"]]
        entries = [{"path": p, "mode": "100644", "type": "blob", "sha": _sha("blob", c)} for p, c in files.items()]
        return 200, {
            "sha": m["sha"],
            "url": f"{self.url}/repos/{repo.full_name}/git/trees/{m['sha']}",
            "tree": entries,
            "truncated": False,
        }

    def _create_tree(self, repo: Repo, m: dict[str, str], q: Any, body: dict[str, Any]) -> tuple[int, Any]:
        base = body.get("base_tree")
        if base is not None and base not in repo.trees:
            return 422, {"message": "base_tree is not a valid tree"}
        files = dict(repo.trees.get(base, {})) if base else {}
        for entry in body.get("tree", []):
            if "content" not in entry:
                return 422, {"message": "only inline content is supported here"}
            files[entry["path"]] = entry["content"]
        sha = _sha("tree", json.dumps(files, sort_keys=True))
        repo.trees[sha] = files
        return 201, {
            "sha": sha,
            "url": f"{self.url}/repos/{repo.full_name}/git/trees/{sha}",
            "tree": [],
            "truncated": False,
        }

    def _create_commit(self, repo: Repo, m: dict[str, str], q: Any, body: dict[str, Any]) -> tuple[int, Any]:
        tree, parents, message = body.get("tree"), body.get("parents", []), body.get("message", "")
        if tree not in repo.trees or any(p not in repo.commits for p in parents):
            return 422, {"message": "Tree or parent SHA does not exist"}
        sha = _sha("commit", str(tree), *parents, message)
        repo.commits[sha] = {"tree": tree, "parents": parents, "message": message}
        return 201, self._commit_json(repo, sha)

    def _list_pulls(self, repo: Repo, m: dict[str, str], q: dict[str, list[str]], b: Any) -> tuple[int, Any]:
        state = (q.get("state") or ["open"])[0]
        head = (q.get("head") or [None])[0]
        out = []
        for pr in repo.pulls:
            if state != "all" and pr["state"] != state:
                continue
            if head is not None and f"{repo.full_name.split('/')[0]}:{pr['head']['ref']}" != head:
                continue
            out.append(self._pull_json(repo, pr))
        return 200, out

    def _create_pull(self, repo: Repo, m: dict[str, str], q: Any, body: dict[str, Any]) -> tuple[int, Any]:
        head, base = body.get("head", ""), body.get("base", "")
        head = head.split(":")[-1]
        if head not in repo.branches or base not in repo.branches:
            return 422, {"message": "Validation Failed", "errors": [{"field": "head", "code": "invalid"}]}
        if any(p["head"]["ref"] == head and p["state"] == "open" for p in repo.pulls):
            return 422, {
                "message": "Validation Failed",
                "errors": [{"message": f"A pull request already exists for {head}."}],
            }
        number = len(repo.pulls) + len(repo.issues) + 1
        pr = {
            "number": number,
            "state": "open",
            "merged": False,
            "merged_at": None,
            "title": body.get("title", ""),
            "body": body.get("body", ""),
            "head": {"ref": head, "sha": repo.branches[head], "label": f"{repo.full_name.split('/')[0]}:{head}"},
            "base": {"ref": base, "sha": repo.branches[base]},
        }
        repo.pulls.append(pr)
        return 201, self._pull_json(repo, pr)

    def _get_pull(self, repo: Repo, m: dict[str, str], q: Any, b: Any) -> tuple[int, Any]:
        pr = next((p for p in repo.pulls if p["number"] == int(m["number"])), None)
        if pr is None:
            return 404, {"message": "Not Found"}
        return 200, self._pull_json(repo, pr)

    def _add_labels(self, repo: Repo, m: dict[str, str], q: Any, body: Any) -> tuple[int, Any]:
        names = body.get("labels", []) if isinstance(body, dict) else body
        n = int(m["number"])
        current = repo.labels.setdefault(n, [])
        current += [x for x in names if x not in current]
        return 200, [{"name": x, "url": f"{self.url}/repos/{repo.full_name}/labels/{x}"} for x in current]

    def _issue_json(self, repo: Repo, issue: dict[str, Any]) -> dict[str, Any]:
        n = issue["number"]
        return {
            **issue,
            "id": 5000 + n,
            "url": f"{self.url}/repos/{repo.full_name}/issues/{n}",
            "html_url": f"https://github.example/{repo.full_name}/issues/{n}",
            "labels": [{"name": label} for label in repo.labels.get(n, [])],
        }

    def _list_issues(self, repo: Repo, m: dict[str, str], q: dict[str, list[str]], b: Any) -> tuple[int, Any]:
        # GitHub lists pull requests among the issues too (with a "pull_request" key), newest first.
        state = (q.get("state") or ["open"])[0]
        found = [self._issue_json(repo, i) for i in repo.issues if state == "all" or i["state"] == state]
        found += [
            {**self._pull_json(repo, p), "pull_request": {"url": self._pull_json(repo, p)["url"]}}
            for p in repo.pulls
            if state == "all" or p["state"] == state
        ]
        return 200, sorted(found, key=lambda i: -int(i["number"]))

    def _get_issue(self, repo: Repo, m: dict[str, str], q: Any, b: Any) -> tuple[int, Any]:
        number = int(m["number"])
        issue = next((i for i in repo.issues if i["number"] == number), None)
        if issue is not None:
            return 200, self._issue_json(repo, issue)
        pr = next((p for p in repo.pulls if p["number"] == number), None)
        if pr is None:
            return 404, {"message": "Not Found"}
        return 200, {**self._pull_json(repo, pr), "pull_request": {"url": self._pull_json(repo, pr)["url"]}}

    def _create_issue(self, repo: Repo, m: dict[str, str], q: Any, body: dict[str, Any]) -> tuple[int, Any]:
        if not body.get("title"):
            return 422, {"message": "Validation Failed", "errors": [{"field": "title", "code": "missing_field"}]}
        number = len(repo.pulls) + len(repo.issues) + 1
        issue = {"number": number, "state": "open", "title": body["title"], "body": body.get("body", "")}
        repo.issues.append(issue)
        repo.labels[number] = [str(x) for x in body.get("labels", [])]
        return 201, self._issue_json(repo, issue)

    def _get_blob(self, repo: Repo, m: dict[str, str], q: Any, b: Any) -> tuple[int, Any]:
        for files in repo.trees.values():
            for content in files.values():
                if _sha("blob", content) == m["sha"]:
                    data = content.encode()
                    return 200, {
                        "sha": m["sha"],
                        "size": len(data),
                        "encoding": "base64",
                        "content": base64.b64encode(data).decode(),
                        "url": f"{self.url}/repos/{repo.full_name}/git/blobs/{m['sha']}",
                    }
        return 404, {"message": "Not Found"}
