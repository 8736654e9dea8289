"""Acceptance test over the real-world config corpus: chained canary rollouts on every upstream.

Each corpus file is copied into ``tmp_path`` (the corpus itself is never
written) and read as a main config with ``load_config``. For every upstream and
every non-backup server of it, a rollout 10 -> 25 -> 33.33 -> 50 -> 100 -> 0 %
is planned with ``plan_split``, each step written to the copy and re-planned
from the new text. Every step is checked without nginx_canary's own lexer:
line by line with difflib and a regex, and tree by tree with crossplane.
"""

from __future__ import annotations

import difflib
import os
import re
import shutil
import stat
from fractions import Fraction
from pathlib import Path
from typing import Any, Dict, List, Set

import crossplane
import pytest

from nginx_canary.errors import BadInputError
from nginx_canary.nginx.conf import load_config
from nginx_canary.nginx.model import Upstream, UpstreamServer
from nginx_canary.nginx.operations import plan_split
from tests.conftest import CORPUS

Tree = List[Dict[str, Any]]

ROLLOUT: List[Fraction] = [Fraction(10), Fraction(25), Fraction(3333, 100), Fraction(50), Fraction(100), Fraction(0)]
# Without stable servers only 100 % is possible.
IMPOSSIBLE_ALONE: List[Fraction] = [Fraction(0), Fraction(10), Fraction(3333, 100), Fraction(50), Fraction(99)]

UPSTREAM_RE = re.compile(rb"^[ \t]*upstream[ \t\r\n]+\S+[ \t\r\n]*\{", re.MULTILINE)
ABSOLUTE_INCLUDE_RE = re.compile(rb"^([ \t]*include[ \t]+[\"']?)/", re.MULTILINE)
# weight=N / down as a whole word, with the spaces or tabs before it.
WEIGHT_RE = re.compile(r"""[ \t]+(?:weight=\d+|"weight=\d+"|'weight=\d+')(?=[\s;]|$)""")
DOWN_RE = re.compile(r"""[ \t]+(?:down|"down"|'down')(?=[\s;]|$)""")

CORPUS_FILES: List[Path] = sorted(p for p in CORPUS.rglob("*") if p.is_file())


def grep_upstreams(path: Path) -> int:
    """How many ``upstream NAME {`` blocks a plain regex finds in ``path``."""
    return len(UPSTREAM_RE.findall(path.read_bytes()))


# --- preparing a writable copy ---------------------------------------------------


def make_writable(root: Path) -> None:
    """The corpus is read-only; its copy must not be."""
    for dirpath, _dirs, files in os.walk(root):
        os.chmod(dirpath, 0o755)
        for name in files:
            os.chmod(os.path.join(dirpath, name), stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IROTH)


def include_args(tree: Tree) -> List[str]:
    """Every ``include`` argument of a crossplane tree, at any depth."""
    found: List[str] = []
    for stmt in tree:
        if stmt["directive"] == "include" and stmt["args"]:
            found.append(stmt["args"][0])
        found.extend(include_args(stmt.get("block", [])))
    return found


def parse(path: Path) -> Tree:
    """crossplane's tree of one file (comments kept, checks off); fails the test on a parse error."""
    payload = crossplane.parse(str(path), single=True, comments=True, check_ctx=False, check_args=False)
    assert payload["status"] == "ok" and not payload["errors"], payload["errors"]
    return payload["config"][0]["parsed"]


def prepare_copy(original: Path, tmp_path: Path) -> Path:
    """Copy ``original``'s directory into ``tmp_path`` and make its includes resolvable there.

    Absolute include paths (``/etc/nginx/proxy.conf``) are made relative so that
    nothing outside ``tmp_path`` is read; every included file that does not exist
    becomes an empty stub next to the copy.
    """
    dest_dir = tmp_path / original.parent.relative_to(CORPUS)
    shutil.copytree(original.parent, dest_dir)
    make_writable(tmp_path)
    copy = dest_dir / original.name
    copy.write_bytes(ABSOLUTE_INCLUDE_RE.sub(rb"\1", copy.read_bytes()))
    for arg in include_args(parse(copy)):
        target = dest_dir / arg
        if not any(c in arg for c in "*?[") and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(b"")
    return copy


# --- independent checks of one step ------------------------------------------


def strip_weight_down(line: str) -> str:
    """``line`` without any ``weight=N`` / ``down`` word (and the spaces before it)."""
    return DOWN_RE.sub("", WEIGHT_RE.sub("", line))


def upstream_server_lines(tree: Tree, lines: List[str]) -> Set[int]:
    """0-based indexes of the lines an upstream ``server`` directive spans (up to its ``;``)."""
    found: Set[int] = set()

    def walk(block: Tree, in_upstream: bool) -> None:
        for stmt in block:
            if in_upstream and stmt["directive"] == "server" and "block" not in stmt:
                index = stmt["line"] - 1
                # approximate: the directive ends on the first later line with a ';' before any '#'
                while True:
                    found.add(index)
                    if ";" in lines[index].split("#", 1)[0] or index + 1 >= len(lines):
                        break
                    index += 1
            walk(stmt.get("block", []), stmt["directive"] == "upstream")

    walk(tree, False)
    return found


def check_lines(old: str, new: str, server_lines: Set[int], where: str) -> None:
    """(a) Only server-directive lines change, and only by weight=N / down words; line count kept."""
    old_lines = old.splitlines(keepends=True)
    new_lines = new.splitlines(keepends=True)
    assert len(old_lines) == len(new_lines), where
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, old_lines, new_lines, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        assert tag == "replace" and i2 - i1 == j2 - j1 and i1 == j1, (where, tag, old_lines[i1:i2], new_lines[j1:j2])
        for index in range(i1, i2):
            assert index in server_lines, (where, index + 1, old_lines[index], new_lines[index])
            assert strip_weight_down(old_lines[index]) == strip_weight_down(new_lines[index]), (
                where, index + 1, old_lines[index], new_lines[index])


def strip_tree(tree: Tree, in_upstream: bool = False) -> Tree:
    """A copy of a crossplane tree without the weight=/down args of upstream ``server`` directives."""
    out: Tree = []
    for stmt in tree:
        copy = dict(stmt)
        if in_upstream and stmt["directive"] == "server" and "block" not in stmt:
            copy["args"] = [a for a in stmt["args"] if not re.fullmatch(r"weight=\d+", a) and a != "down"]
        if "block" in stmt:
            copy["block"] = strip_tree(stmt["block"], stmt["directive"] == "upstream")
        out.append(copy)
    return out


def upstream_servers(tree: Tree, name: str) -> List[List[str]]:
    """The args of each ``server`` of the upstream called ``name`` (exactly one must exist)."""
    found: List[List[List[str]]] = []

    def walk(block: Tree) -> None:
        for stmt in block:
            if stmt["directive"] == "upstream" and stmt["args"][:1] == [name] and "block" in stmt:
                found.append([s["args"] for s in stmt["block"] if s["directive"] == "server" and "block" not in s])
            else:
                walk(stmt.get("block", []))

    walk(tree)
    assert len(found) == 1, f"upstream {name!r} found {len(found)} times"
    return found[0]


def weight_of(args: List[str]) -> int:
    """The weight nginx uses for a server's args (the last ``weight=``, else 1)."""
    weights = [int(a[len("weight="):]) for a in args if a.startswith("weight=")]
    return weights[-1] if weights else 1


def canary_share(tree: Tree, upstream: str, canary: str) -> Fraction:
    """The canary's share of traffic, in percent, as crossplane reads the weights back."""
    active = [args for args in upstream_servers(tree, upstream) if "down" not in args[1:] and "backup" not in args[1:]]
    total = sum(weight_of(a) for a in active)
    assert total > 0, "no server left to carry traffic"
    return Fraction(100 * sum(weight_of(a) for a in active if a[0] == canary), total)


def check_share(got: Fraction, wanted: Fraction, where: str) -> None:
    """(c) Exactly the asked share for whole percents, within 0.01 points otherwise."""
    if wanted.denominator == 1:
        assert got == wanted, (where, float(got))
    else:
        assert abs(got - wanted) <= Fraction(1, 100), (where, float(got))


# --- the rollout -------------------------------------------------------------------


def step(path: Path, upstream: str, canary: str, percent: Fraction, start: bytes) -> None:
    """Plan one split from the file as it is (``start`` before the steps), write it, and check the result independently."""
    old_bytes = path.read_bytes()
    old_tree = parse(path)
    plan = plan_split(load_config(str(path)), upstream, [canary], percent, originals=lambda _path, _now: start)
    assert all(change.path == str(path) for change in plan.changes), plan.changes
    assert len(plan.changes) <= 1
    new_bytes = plan.changes[0].new if plan.changes else old_bytes
    if plan.changes:
        assert plan.changes[0].old == old_bytes
        assert new_bytes != old_bytes
    path.write_bytes(new_bytes)
    where = f"{path.name} upstream {upstream} canary {canary} at {float(percent):g}%"

    old = old_bytes.decode("utf-8", "surrogateescape")
    new = new_bytes.decode("utf-8", "surrogateescape")
    old_lines = old.splitlines(keepends=True)
    check_lines(old, new, upstream_server_lines(old_tree, old_lines), where)

    new_tree = parse(path)
    assert strip_tree(new_tree) == strip_tree(old_tree), where  # (b)
    check_share(canary_share(new_tree, upstream, canary), percent, where)  # (c)


def rollout_upstream(path: Path, upstream: Upstream) -> int:
    """Run a full rollout for each non-backup server of ``upstream`` in turn; return how many servers were rolled."""
    rolled = 0
    candidates: List[UpstreamServer] = [s for s in upstream.servers if not s.backup]
    addresses = [s.address for s in upstream.servers]
    for server in candidates:
        if addresses.count(server.address) > 1:
            with pytest.raises(BadInputError):
                plan_split(load_config(str(path)), upstream.name, [server.address], Fraction(50))
            continue
        start = path.read_bytes()
        # A stable server down before any change stays out of the split, so it is no stable server here.
        has_stable = any(s is not server and not s.down for s in candidates)
        if not has_stable:
            for percent in IMPOSSIBLE_ALONE:
                before = path.read_bytes()
                with pytest.raises(BadInputError):
                    plan_split(load_config(str(path)), upstream.name, [server.address], percent)
                assert path.read_bytes() == before
        for percent in ROLLOUT if has_stable else [Fraction(100)]:
            step(path, upstream.name, server.address, percent, start)
        path.write_bytes(start)
        rolled += 1
    for backup in (s for s in upstream.servers if s.backup):
        with pytest.raises(BadInputError):
            plan_split(load_config(str(path)), upstream.name, [backup.address], Fraction(50))
    return rolled


FILES_WITH_UPSTREAMS = [p for p in CORPUS_FILES if grep_upstreams(p)]


@pytest.mark.parametrize("original", FILES_WITH_UPSTREAMS, ids=lambda p: str(p.relative_to(CORPUS)))
def test_rollout_every_upstream(original: Path, tmp_path: Path) -> None:
    """Chained rollouts on every upstream of one corpus file change only weight=/down, as asked."""
    original_bytes = original.read_bytes()
    path = prepare_copy(original, tmp_path)
    config = load_config(str(path))
    upstreams = [u for u in config.upstreams if u.file == str(path)]
    assert len(upstreams) >= grep_upstreams(original), [u.name for u in upstreams]
    for upstream in upstreams:
        assert upstream.servers, f"upstream {upstream.name} has no servers"
        assert rollout_upstream(path, upstream) >= 1, upstream.name
    assert original.read_bytes() == original_bytes


def test_every_corpus_upstream_is_covered() -> None:
    """The parametrization covers every file where a plain grep finds an upstream, and that is many."""
    total = sum(grep_upstreams(p) for p in CORPUS_FILES)
    covered = sum(grep_upstreams(p) for p in FILES_WITH_UPSTREAMS)
    assert covered == total
    assert total >= len(FILES_WITH_UPSTREAMS) >= 1
    assert len(CORPUS_FILES) >= 70, "corpus missing or truncated"


@pytest.mark.parametrize(
    ("line", "stripped"),
    [
        ("    server a:80 weight=5;\n", "    server a:80;\n"),
        ("\tserver a:80\tweight=12 down max_fails=3;\r\n", "\tserver a:80 max_fails=3;\r\n"),
        ("    server down.example.org down;\n", "    server down.example.org;\n"),
        ("    server a:80 weight=5x;\n", "    server a:80 weight=5x;\n"),
        ('    server a:80 "weight=5" "down";\n', "    server a:80;\n"),
    ],
)
def test_strip_weight_down_helper(line: str, stripped: str) -> None:
    """The independent line check removes exactly whole weight=N / down words."""
    assert strip_weight_down(line) == stripped


def test_strip_tree_helper() -> None:
    """Only weight=/down of upstream servers are ignored by the tree comparison."""
    tree: Tree = [
        {"directive": "upstream", "line": 1, "args": ["u"], "block": [
            {"directive": "server", "line": 2, "args": ["a", "weight=3", "down", "backup"]},
        ]},
        {"directive": "server", "line": 4, "args": [], "block": [
            {"directive": "down", "line": 5, "args": ["weight=3"]},
        ]},
    ]
    stripped = strip_tree(tree)
    assert stripped[0]["block"][0]["args"] == ["a", "backup"]
    assert stripped[1] == tree[1]
    assert tree[0]["block"][0]["args"] == ["a", "weight=3", "down", "backup"]  # input untouched
