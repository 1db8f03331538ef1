"""NVIDIA's real TensorRT Python bindings, importable on a machine without TensorRT: for API-surface checks only.

``../shared/tensorrt`` (or ``$EDGEKD_TRT_WHEELS``) holds NVIDIA's binding wheels from PyPI (``tensorrt_bindings``
8.6.1, ``tensorrt_cu12_bindings`` 10.3.0): the pybind11 extension ``tensorrt.so`` and a small ``__init__.py``. The
extension links against TensorRT's native libraries (``libnvinfer.so.N`` ...), which are not installed here, so
:func:`prepare` unpacks a wheel into a folder as the package ``tensorrt``, asks ``ldd`` which of those libraries are
missing, asks ``nm`` which symbols the extension imports from them (unversioned, undefined, not Python's), and
compiles stub libraries with the system ``cc`` under those SONAMEs, each exporting the symbols as functions that
return 0. With ``LD_LIBRARY_PATH`` on the stubs, ``import tensorrt`` then loads NVIDIA's own module, so its classes,
enums, methods, properties and pybind11 signatures are the real ones. Nothing can be built or run: every creator
(builder, runtime, parser) has no implementation behind it, and nothing here calls one.

:func:`surface_report` (run inside such a process by :func:`run_with_bindings`) walks edgekd's sources with
``ast`` and checks every TensorRT name they use against the imported module; see its docstring for the rules.

Python 3.8 syntax (the device-wing tests also run on 3.8, where the cp311 wheels are skipped).
"""

from __future__ import annotations

import ast
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Tuple

REPO = Path(__file__).resolve().parents[1]
WHEELS_ENV = "EDGEKD_TRT_WHEELS"
_WHEEL = re.compile(r"^tensorrt(?:_cu\d+)?_bindings-(?P<version>\d+(?:\.\d+)+)-(?P<py>cp\d+)-[^-]+-(?P<plat>.+)\.whl$")


def wheel_dir() -> Path | None:
    """Where the binding wheels are: ``$EDGEKD_TRT_WHEELS``, else ``shared/tensorrt`` in or next to the repository."""
    if os.environ.get(WHEELS_ENV):
        return Path(os.environ[WHEELS_ENV])
    for candidate in (REPO / "shared" / "tensorrt", REPO.parent / "shared" / "tensorrt"):
        if candidate.is_dir():
            return candidate
    return None


def find_wheels() -> dict[str, Path]:
    """TensorRT version → binding wheel, for every wheel found (empty when there are none)."""
    folder = wheel_dir()
    found: Dict[str, Path] = {}
    if folder is not None and folder.is_dir():
        for path in sorted(folder.glob("*.whl")):
            match = _WHEEL.match(path.name)
            if match:
                found[match.group("version")] = path
    return found


def why_unusable(wheel: Path) -> str | None:
    """None when ``wheel`` can be imported here with stubs; else why not (the test's skip reason)."""
    match = _WHEEL.match(wheel.name)
    if not match:
        return f"{wheel.name} is not a TensorRT bindings wheel"
    py = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    if match.group("py") != py:
        return f"{wheel.name} is for {match.group('py')}; this is Python {sys.version_info[0]}.{sys.version_info[1]}"
    if not sys.platform.startswith("linux") or "x86_64" not in match.group("plat") or os.uname().machine != "x86_64":
        return f"{wheel.name} is for x86-64 Linux"
    missing = [tool for tool in ("cc", "nm", "ldd") if shutil.which(tool) is None]
    if missing:
        return f"needs {', '.join(missing)} to compile stub libraries for {wheel.name}"
    return None


@dataclass(frozen=True)
class Bindings:
    """One unpacked binding wheel and the stub libraries that let it import."""

    version: str
    site: Path  # holds the package ``tensorrt``
    stubs: Path  # the stub libraries (LD_LIBRARY_PATH)
    stubbed: Tuple[str, ...]  # the SONAMEs stubbed
    symbols: Tuple[str, ...]  # the symbols each stub exports


def _run(args: List[str]) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def prepare(wheel: Path, workdir: Path) -> Bindings:
    """Unpack ``wheel`` under ``workdir`` as the package ``tensorrt`` and compile its stub libraries there."""
    version = _WHEEL.match(wheel.name).group("version")  # type: ignore[union-attr]
    site, stubs = workdir / "site", workdir / "stubs"
    with zipfile.ZipFile(wheel) as archive:
        members = [m for m in archive.namelist() if m.startswith("tensorrt_bindings/")]
        archive.extractall(workdir / "unpacked", members)
    site.mkdir(parents=True, exist_ok=True)
    shutil.copytree(workdir / "unpacked" / "tensorrt_bindings", site / "tensorrt")
    extension = next((site / "tensorrt").glob("tensorrt*.so"))
    missing = [line.split("=>")[0].strip() for line in _run(["ldd", str(extension)]).splitlines()
               if "not found" in line]
    symbols = []
    for line in _run(["nm", "-D", "--undefined-only", str(extension)]).splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "U" and "@" not in parts[1] and not re.match(r"_?Py", parts[1]):
            symbols.append(parts[1])  # unversioned, strong, not CPython's: TensorRT's own entry points
    stubs.mkdir(parents=True, exist_ok=True)
    source = stubs / "stub.c"
    source.write_text("".join(f"void *{name}(void) {{ return 0; }}\n" for name in sorted(set(symbols))))
    for soname in missing:
        subprocess.run(["cc", "-shared", "-fPIC", "-o", str(stubs / soname), str(source), f"-Wl,-soname,{soname}"],
                       check=True, capture_output=True, text=True)
    return Bindings(version=version, site=site, stubs=stubs, stubbed=tuple(missing), symbols=tuple(sorted(symbols)))


def run_with_bindings(bindings: Bindings, code: str, timeout: float = 120) -> Any:
    """Run ``code`` in a fresh interpreter where ``import tensorrt`` is the unpacked binding; it must print one JSON
    document as its last line, which is returned."""
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join([str(bindings.stubs), env.get("LD_LIBRARY_PATH", "")]).strip(os.pathsep)
    env["PYTHONPATH"] = os.pathsep.join([str(bindings.site), str(REPO)])
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=str(REPO))
    if proc.returncode != 0:
        raise RuntimeError(f"TensorRT {bindings.version} bindings: exit {proc.returncode}\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- pybind11 signatures -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Signature:
    """One overload parsed from a pybind11 docstring: parameter names (``self`` dropped), which have defaults, the
    return type's last name, and whether it takes ``*args``/``**kwargs``."""

    params: Tuple[str, ...]
    defaults: Tuple[bool, ...]
    returns: str
    varargs: bool

    def accepts(self, positional: int, keywords: List[str]) -> bool:
        if self.varargs:
            return True
        if positional > len(self.params) or any(k not in self.params[positional:] for k in keywords):
            return False
        return all(has_default or name in keywords
                   for name, has_default in list(zip(self.params, self.defaults))[positional:])


def _split_top(text: str) -> List[str]:
    """``text`` split at commas outside brackets (types like ``Tuple[int, int]``, defaults like ``<X: 1>``)."""
    parts, depth, current = [], 0, ""
    for ch in text:
        if ch in "([<{":
            depth += 1
        elif ch in ")]>}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    if current.strip():
        parts.append(current)
    return [p.strip() for p in parts]


def parse_signatures(name: str, doc: str | None) -> List[Signature]:
    """Every ``name(...) -> R`` line of a pybind11 docstring (numbered overloads included)."""
    found = []
    for line in (doc or "").splitlines():
        match = re.match(rf"\s*(?:\d+\.\s+)?{re.escape(name)}\((.*)$", line)
        if not match:
            continue
        rest, depth, end = match.group(1), 1, -1
        for pos, ch in enumerate(rest):
            depth += {"(": 1, ")": -1}.get(ch, 0)
            if depth == 0:
                end = pos
                break
        if end < 0:
            continue
        params, defaults, varargs = [], [], False
        for part in _split_top(rest[:end]):
            if part.startswith("*"):
                varargs = True
                continue
            pname = part.split(":")[0].split("=")[0].strip()
            if pname == "self":
                continue
            params.append(pname)
            defaults.append(bool(re.search(r"=\s*\S", part)))
        returns = rest[end + 1:].split("->", 1)[1].strip() if "->" in rest[end + 1:] else ""
        found.append(Signature(tuple(params), tuple(defaults), re.split(r"[.:]+", returns)[-1], varargs))
    return found


# -- the surface walk --------------------------------------------------------------------------------------------
#: Public methods of edgekd's subclasses of TensorRT interfaces that are edgekd's own, not overrides.
OWN_METHODS = {"_EntropyCalibrator": {"close"}}


class _Obj:
    """A module-level TensorRT object reached from ``trt`` by ``path`` (the module itself for ``()``)."""

    def __init__(self, path: Tuple[str, ...]):
        self.path = path


class _Inst:
    """An instance of the TensorRT class ``name``."""

    def __init__(self, name: str):
        self.name = name


class _Method:
    def __init__(self, cls: str, name: str):
        self.cls, self.name = cls, name


class SurfaceWalk:
    """Checks every TensorRT name a source file uses against the imported ``trt`` module.

    What counts as TensorRT: the name ``trt`` (edgekd's one spelling of the module: a parameter, ``import tensorrt
    as trt`` or ``trt = import_tensorrt()``); annotations ``tensorrt.X`` (parameters, returns, locals); and values
    derived from those: ``trt.X(...)`` is an ``X``, ``obj.method(...)`` has the return type of ``method``'s pybind11
    signature, ``self.attr`` keeps what was assigned to it anywhere in the class, tuples unpack. Checked:

    * attribute chains from ``trt`` (classes, enums and their members, functions: ``trt.BuilderFlag.FP16``);
    * attributes of typed objects (methods, properties: ``config.DLA_core``), and that an assigned one is a
      settable property;
    * calls: keyword names and argument counts against every overload's signature (``*args`` skips the count);
    * public methods of edgekd's subclasses of TensorRT classes exist on the base (:data:`OWN_METHODS` aside).
    """

    def __init__(self, trt: Any):
        self.trt = trt
        self.checked: set = set()
        self.problems: List[str] = []
        self.where = ""
        self.self_types: Dict[str, Any] = {}
        self.returns: Dict[str, Any] = {}

    # -- resolution ----------------------------------------------------------------------------------------------
    def _class(self, name: str) -> Any:
        """The TensorRT class ``name``; C++ names (``IEngineInspector``) map to their Python names."""
        for candidate in (name, name[1:] if name.startswith("I") else None):
            obj = getattr(self.trt, candidate, None) if candidate else None
            if isinstance(obj, type):
                return obj
        return None

    def _problem(self, node: ast.AST, text: str) -> None:
        self.problems.append(f"{self.where}:{getattr(node, 'lineno', '?')}: {text}")

    def _annotation(self, node: ast.AST | None) -> Any:
        """``tensorrt.X`` (possibly ``| None``) → X; ``tuple[tensorrt.X, tensorrt.Y]`` → (X, Y)."""
        if node is None:
            return None
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            try:
                node = ast.parse(node.value, mode="eval").body
            except SyntaxError:
                return None
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "tensorrt":
            cls = self._class(node.attr)
            self.checked.add(node.attr)
            if cls is None:
                self._problem(node, f"annotation tensorrt.{node.attr}: no such class")
                return None
            return _Inst(cls.__name__)
        if isinstance(node, ast.BinOp):
            return self._annotation(node.left) or self._annotation(node.right)
        if isinstance(node, ast.Subscript):
            inner = node.slice
            if isinstance(inner, getattr(ast, "Index", ())):  # Python 3.8 wraps subscripts in ast.Index
                inner = inner.value  # type: ignore[attr-defined]
            if isinstance(inner, ast.Tuple):
                return tuple(self._annotation(e) for e in inner.elts)
            return self._annotation(inner)
        return None

    def _signatures(self, owner: Any, name: str) -> List[Signature]:
        member = getattr(owner, name, None)
        if member is None:
            return []
        if isinstance(member, type):
            return parse_signatures("__init__", getattr(member.__init__, "__doc__", ""))
        sigs = parse_signatures(name, getattr(member, "__doc__", ""))
        if not sigs and inspect.isfunction(member):  # a pure-Python helper of the package (nptype, volume)
            params = [p for p in inspect.signature(member).parameters.values()]
            sigs = [Signature(tuple(p.name for p in params), tuple(p.default is not p.empty for p in params), "",
                              any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params))]
        return sigs

    def _check_call(self, node: ast.Call, owner: Any, name: str, label: str, *, unbound: bool = False) -> Any:
        """Check a call's keywords and arity; return the typed result (an ``_Inst``) when the signature says.
        ``unbound``: reached from ``trt`` (``trt.ILogger.__init__(self)``), so ``self`` is an argument."""
        sigs = self._signatures(owner, name)
        member = getattr(owner, name, None)
        starred = any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords)
        keywords = [k.arg for k in node.keywords if k.arg is not None]
        positional = len(node.args)
        if unbound and isinstance(owner, type) and not isinstance(member, type):  # trt.X.method(self, ...)
            positional -= 1
        for kw in keywords:
            self.checked.add(f"{label}({kw}=)")
        if sigs:
            if starred:
                ok = all(any(kw in s.params or s.varargs for s in sigs) for kw in keywords)
            else:
                ok = any(s.accepts(positional, keywords) for s in sigs)
            if not ok:
                shown = " | ".join(f"({', '.join(s.params)})" for s in sigs)
                self._problem(node, f"{label} called with {positional} positional and keywords {keywords}; "
                                    f"signatures: {shown}")
        elif keywords:
            self._problem(node, f"{label}: no signature to check keywords {keywords} against")
        if isinstance(member, type):
            return _Inst(member.__name__)
        for sig in sigs:
            cls = self._class(sig.returns) if sig.returns else None
            if cls is not None:
                return _Inst(cls.__name__)
        return None

    def value(self, node: ast.AST | None, env: Dict[str, Any]) -> Any:
        """Evaluate ``node``'s TensorRT type, checking every TensorRT name on the way."""
        if node is None:
            return None
        if isinstance(node, ast.Name):
            return _Obj(()) if node.id == "trt" else env.get(node.id)
        if isinstance(node, ast.Attribute):
            if isinstance(node.value, ast.Name) and node.value.id == "self":
                return self.self_types.get(node.attr)
            base = self.value(node.value, env)
            return self._attribute(node, base)
        if isinstance(node, ast.Call):
            for arg in [*node.args, *(k.value for k in node.keywords)]:
                self.value(arg.value if isinstance(arg, ast.Starred) else arg, env)
            if isinstance(node.func, ast.Name) and node.func.id in self.returns:
                return self.returns[node.func.id]
            func = self.value(node.func, env)
            if isinstance(func, _Obj) and func.path:
                owner = self._resolve(func.path[:-1])
                return self._check_call(node, owner, func.path[-1], "trt." + ".".join(func.path), unbound=True)
            if isinstance(func, _Method):
                return self._check_call(node, self._class(func.cls), func.name, f"{func.cls}.{func.name}")
            return None
        if isinstance(node, ast.Tuple):
            return tuple(self.value(e, env) for e in node.elts)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.expr):
                self.value(child, env)
            elif isinstance(child, ast.comprehension):
                self.value(child.iter, env)
                for cond in child.ifs:
                    self.value(cond, env)
        return None

    def _resolve(self, path: Tuple[str, ...]) -> Any:
        obj = self.trt
        for part in path:
            obj = getattr(obj, part)
        return obj

    def _attribute(self, node: ast.Attribute, base: Any) -> Any:
        if isinstance(base, _Obj):
            owner = self._resolve(base.path)
            label = ".".join((*base.path, node.attr))
            self.checked.add(label)
            if not hasattr(owner, node.attr):
                self._problem(node, f"trt.{label}: no such name")
                return None
            return _Obj((*base.path, node.attr))
        if isinstance(base, _Inst):
            cls = self._class(base.name)
            label = f"{base.name}.{node.attr}"
            self.checked.add(label)
            member = getattr(cls, node.attr, None)
            if member is None:
                self._problem(node, f"{label}: no such method or property")
                return None
            return None if isinstance(member, property) else _Method(base.name, node.attr)
        return None

    # -- statements ----------------------------------------------------------------------------------------------
    def _bind(self, target: ast.AST, typed: Any, env: Dict[str, Any], node: ast.AST) -> None:
        if isinstance(target, ast.Name):
            if typed is not None:
                env[target.id] = typed
            else:
                env.pop(target.id, None)
        elif isinstance(target, (ast.Tuple, ast.List)) and isinstance(typed, tuple):
            for t, v in zip(target.elts, typed):
                self._bind(t, v, env, node)
        elif isinstance(target, ast.Attribute):
            if isinstance(target.value, ast.Name) and target.value.id == "self":
                if typed is not None:
                    self.self_types[target.attr] = typed
                return
            base = self.value(target.value, env)
            if isinstance(base, _Inst):
                cls = self._class(base.name)
                label = f"{base.name}.{target.attr}"
                self.checked.add(label + " (set)")
                member = getattr(cls, target.attr, None)
                if not isinstance(member, property) or member.fset is None:
                    self._problem(node, f"{label} is assigned but is not a settable property here")

    def statements(self, body: List[ast.stmt], env: Dict[str, Any]) -> None:
        for stmt in body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self.function(stmt, dict(env))
            elif isinstance(stmt, ast.ClassDef):
                self.klass(stmt, dict(env))
            elif isinstance(stmt, ast.Assign):
                typed = self.value(stmt.value, env)
                for target in stmt.targets:
                    self._bind(target, typed, env, stmt)
            elif isinstance(stmt, ast.AnnAssign):
                typed = self._annotation(stmt.annotation) or self.value(stmt.value, env)
                self._bind(stmt.target, typed, env, stmt)
            elif isinstance(stmt, ast.Import) or isinstance(stmt, ast.ImportFrom):
                continue
            else:
                for field in ("test", "iter", "value", "exc", "msg"):
                    child = getattr(stmt, field, None)
                    if isinstance(child, ast.expr):
                        self.value(child, env)
                for item in getattr(stmt, "items", []):  # with-statements
                    self.value(item.context_expr, env)
                for field in ("body", "orelse", "finalbody"):
                    self.statements(getattr(stmt, field, []) or [], env)
                for handler in getattr(stmt, "handlers", []):
                    self.statements(handler.body, env)

    def function(self, fn: ast.AST, env: Dict[str, Any]) -> None:
        args = fn.args  # type: ignore[attr-defined]
        for arg in [*args.posonlyargs, *args.args, *args.kwonlyargs]:
            typed = self._annotation(arg.annotation)
            if typed is not None:
                env[arg.arg] = typed
        self.statements(fn.body, env)  # type: ignore[attr-defined]

    def klass(self, cls: ast.ClassDef, env: Dict[str, Any]) -> None:
        for base in cls.bases:
            typed = self.value(base, env)
            if isinstance(typed, _Obj) and typed.path:
                trt_base = self._resolve(typed.path)
                own = OWN_METHODS.get(cls.name, set())
                for item in cls.body:
                    if isinstance(item, ast.FunctionDef) and not item.name.startswith("_") and item.name not in own:
                        label = f"{'.'.join(typed.path)}.{item.name} (override)"
                        self.checked.add(label)
                        if not hasattr(trt_base, item.name):
                            self._problem(item, f"{cls.name}.{item.name} overrides nothing on trt.{label}")
        saved = self.self_types
        self.self_types = {}
        for _ in range(2):  # twice: self.attr assigned in one method, used in another defined earlier
            self.statements(cls.body, env)
        self.self_types = saved

    def module(self, path: Path) -> None:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        self.where = f"{path.parent.name}/{path.name}"
        for node in tree.body:  # return annotations of module functions type their callers' results
            if isinstance(node, ast.FunctionDef):
                typed = self._annotation(node.returns)
                if typed is not None:
                    self.returns[node.name] = typed
        self.statements(tree.body, {})


def surface_report(paths: List[str]) -> dict:
    """Walk ``paths`` against the importable ``tensorrt``: ``{"version", "checked", "problems"}`` (JSON-ready)."""
    import tensorrt as trt

    walk = SurfaceWalk(trt)
    for path in paths:
        walk.module(Path(path))
    problems = list(dict.fromkeys(walk.problems))  # classes are walked twice: report each problem once
    return {"version": str(trt.__version__), "checked": sorted(walk.checked), "problems": problems}


def surface_code(paths: List[str]) -> str:
    """The ``-c`` program for :func:`run_with_bindings` that prints :func:`surface_report` of ``paths``."""
    return ("import json\nfrom tests.trt_bindings import surface_report\n"
            f"print(json.dumps(surface_report({[str(p) for p in paths]!r})))\n")


__all__ = ["Bindings", "Signature", "SurfaceWalk", "find_wheels", "parse_signatures", "prepare", "run_with_bindings",
           "surface_code", "surface_report", "why_unusable", "wheel_dir"]
