"""AdvTest's identifier normalisation, done on the syntax tree.

CodeXGLUE's AdvTest hides names in its valid and test code so that a model has to match what
the code does, not what it is called: the function becomes `Func` and every parameter and local
variable becomes `arg_0`, `arg_1`, ... in order of first appearance. Here the renaming works on
the AST with Python's own scoping rules, so the result is the same program with other names:

- The function's name becomes `Func`. A module-level function's recursive calls (free uses of
  its own name in its body) become `Func` too; a method's name is not visible as a bare name in
  its body, so bare uses of it are left alone.
- A name is renamed when it resolves to a binding inside the function: parameters (positional,
  keyword-only, `*args`, `**kwargs`), assignment, `for`, `with ... as`, `except ... as`, walrus
  and `match` targets, `del`, and the names of nested functions and classes. Nested functions,
  lambdas and comprehensions are part of the function: their parameters and locals are renamed
  too, one counter for the whole tree, so the same name always gets the same `arg_i`.
- Left alone: attributes, keyword names in calls (`f(x=...)` keeps `x=`), globals, builtins,
  names declared `global`, names bound by `import` (imported names are never renamed), names
  bound in a nested class body (they are class attributes), and everything evaluated outside the
  function (its decorators, defaults and annotations). A local that shadows a builtin
  (`list = []`) is a local and is renamed.

The result is `ast.unparse` of the renamed tree: comments and the original layout are gone (the
code tokens never had them), and the code parses by construction.
"""

from __future__ import annotations

import ast
import copy
from dataclasses import dataclass, field

FUNC_NAME = "Func"
ARG_PREFIX = "arg_"

FunctionNode = ast.FunctionDef | ast.AsyncFunctionDef
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)


@dataclass(eq=False)
class _Scope:
    kind: str  # "function" (also lambda), "class" or "comprehension"
    parent: _Scope | None
    bound: set[str] = field(default_factory=set)
    imported: set[str] = field(default_factory=set)
    globals: set[str] = field(default_factory=set)
    nonlocals: set[str] = field(default_factory=set)


@dataclass(eq=False)
class _Site:
    """One place a name is written: `node.attr` (or `node.attr[index]`) holds it."""

    node: ast.AST
    attr: str
    name: str
    scope: _Scope | None  # None: evaluated outside the function
    position: tuple[int, int, int]
    index: int | None = None

    def rename(self, new: str) -> None:
        if self.index is None:
            setattr(self.node, self.attr, new)
        else:
            getattr(self.node, self.attr)[self.index] = new


def _resolve(scope: _Scope | None, name: str) -> _Scope | None:
    """The scope whose binding `name` refers to from `scope`; None for globals, builtins and outside."""
    current, first = scope, True
    while current is not None:
        if first or current.kind != "class":  # a class body is not an enclosing scope
            if name in current.globals:
                return None
            if name in current.bound and name not in current.nonlocals:
                return current
        current, first = current.parent, False
    return None


class _Binder:
    """Walks a function once, recording every scope, every binding and every site of a name."""

    def __init__(self) -> None:
        self.sites: list[_Site] = []

    def _site(self, node: ast.AST, attr: str, name: str, scope: _Scope | None, index: int | None = None,
              *, after: ast.AST | None = None) -> None:
        """Record a name; `after` is a node the name follows in the text (`except E as name`)."""
        if after is not None:
            where = (getattr(after, "end_lineno", 0), getattr(after, "end_col_offset", 0))
        else:
            where = (getattr(node, "lineno", 0), getattr(node, "col_offset", 0))
        self.sites.append(_Site(node, attr, name, scope, (*where, len(self.sites)), index))

    def _bind(self, node: ast.AST, attr: str, name: str, scope: _Scope | None, *, after: ast.AST | None = None) -> None:
        if scope is not None:
            scope.bound.add(name)
        self._site(node, attr, name, scope, after=after)

    def function(self, node: FunctionNode | ast.Lambda, scope: _Scope | None, *, root: bool = False) -> None:
        args = node.args
        for default in [*args.defaults, *args.kw_defaults]:
            if default is not None:
                self.visit(default, scope)
        if not isinstance(node, ast.Lambda):
            for decorator in node.decorator_list:
                self.visit(decorator, scope)
            for arg in [*args.posonlyargs, *args.args, args.vararg, *args.kwonlyargs, args.kwarg]:
                if arg is not None and arg.annotation is not None:
                    self.visit(arg.annotation, scope)
            if node.returns is not None:
                self.visit(node.returns, scope)
            if not root:
                self._bind(node, "name", node.name, scope)
        inner = _Scope("function", scope)
        for arg in [*args.posonlyargs, *args.args, args.vararg, *args.kwonlyargs, args.kwarg]:
            if arg is not None:
                self._bind(arg, "arg", arg.arg, inner)
        for statement in node.body if isinstance(node.body, list) else [node.body]:
            self.visit(statement, inner)

    def visit(self, node: ast.AST, scope: _Scope | None) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            self.function(node, scope)
        elif isinstance(node, ast.ClassDef):
            for child in [*node.decorator_list, *node.bases, *node.keywords]:
                self.visit(child, scope)
            self._bind(node, "name", node.name, scope)
            inner = _Scope("class", scope)
            for statement in node.body:
                self.visit(statement, inner)
        elif isinstance(node, _COMPREHENSIONS):
            self._comprehension(node, scope)
        elif isinstance(node, ast.Name):
            if isinstance(node.ctx, (ast.Store, ast.Del)):
                self._bind(node, "id", node.id, scope)
            else:
                self._site(node, "id", node.id, scope)
        elif isinstance(node, ast.NamedExpr):
            target = scope
            while target is not None and target.kind == "comprehension":
                target = target.parent  # a walrus in a comprehension binds in the enclosing function
            self._bind(node.target, "id", node.target.id, target)
            self.visit(node.value, scope)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            if scope is not None:
                (scope.globals if isinstance(node, ast.Global) else scope.nonlocals).update(node.names)
            for index, name in enumerate(node.names):
                self._site(node, "names", name, scope, index)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                if alias.name != "*" and scope is not None:
                    name = alias.asname or alias.name.split(".")[0]
                    scope.bound.add(name)
                    scope.imported.add(name)
        elif isinstance(node, ast.ExceptHandler):
            if node.type is not None:
                self.visit(node.type, scope)
            if node.name is not None:
                self._bind(node, "name", node.name, scope, after=node.type)
            for statement in node.body:
                self.visit(statement, scope)
        elif isinstance(node, (ast.MatchAs, ast.MatchStar, ast.MatchMapping)):
            for child in ast.iter_child_nodes(node):
                self.visit(child, scope)
            attr = "rest" if isinstance(node, ast.MatchMapping) else "name"
            if getattr(node, attr) is not None:  # `case [x] as name`, `case {**name}`: the name comes last
                pattern = getattr(node, "pattern", None)
                self._bind(node, attr, getattr(node, attr), scope, after=node if isinstance(node, ast.MatchMapping) else pattern)
        else:
            for child in ast.iter_child_nodes(node):
                self.visit(child, scope)

    def _comprehension(self, node: ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp, scope: _Scope | None) -> None:
        self.visit(node.generators[0].iter, scope)  # the first iterable is evaluated outside
        inner = _Scope("comprehension", scope)
        for position, generator in enumerate(node.generators):
            self.visit(generator.target, inner)
            if position > 0:
                self.visit(generator.iter, inner)
            for condition in generator.ifs:
                self.visit(condition, inner)
        for part in (node.key, node.value) if isinstance(node, ast.DictComp) else (node.elt,):
            self.visit(part, inner)


def normalize_function(node: FunctionNode, *, module_level: bool = True, in_place: bool = False) -> FunctionNode:
    """`node` renamed: the name becomes `Func`, parameters and locals `arg_0`, `arg_1`, ...

    `module_level` says whether `node` is defined at the top of its module, where its bare
    name in its own body means itself (recursion). The result is a copy unless `in_place`.
    """
    if not in_place:
        node = copy.deepcopy(node)
    original = node.name
    binder = _Binder()
    binder.function(node, None, root=True)
    node.name = FUNC_NAME
    numbers: dict[str, str] = {}
    for site in sorted(binder.sites, key=lambda site: site.position):
        owner = _resolve(site.scope, site.name)
        if owner is not None and owner.kind != "class" and site.name not in owner.imported:
            if site.name not in numbers:
                numbers[site.name] = f"{ARG_PREFIX}{len(numbers)}"
            site.rename(numbers[site.name])
        elif owner is None and site.scope is not None and module_level and site.name == original:
            site.rename(FUNC_NAME)
    return node


def normalize_code(code: str) -> str:
    """`normalize_function` on source text holding one (possibly decorated) function definition."""
    tree = ast.parse(code)
    if len(tree.body) != 1 or not isinstance(tree.body[0], (ast.FunctionDef, ast.AsyncFunctionDef)):
        raise ValueError("`code` should hold exactly one function definition")
    return ast.unparse(normalize_function(tree.body[0]))
