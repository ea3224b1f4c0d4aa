"""Loading a config: YAML to ``PipelineConfig``, with every problem named by YAML path and line."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from raymlops.config.base import closest_names, did_you_mean
from raymlops.config.model import MODEL_CONFIGS
from raymlops.config.pipeline import CROSS_CHECKS, PipelineConfig
from raymlops.errors import ConfigError


def _yaml_line(root: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """1-based line of the YAML node at ``loc`` (or its deepest existing parent)."""
    node = root
    line = node.start_mark.line + 1 if node is not None else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = next((v for k, v in node.value if getattr(k, "value", None) == str(key)), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            nxt = node.value[key]
        else:
            nxt = None
        if nxt is None:
            break
        node, line = nxt, nxt.start_mark.line + 1
    return line


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


_UNION_TAGS = {"csv", "parquet", "json", "sql", "random", "time", "uniform", "loguniform", "int", "choice",
               "mlp", "lightgbm", "xgboost"}


def _clean_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """Drop pydantic's union tags (e.g. 'csv' in sources[0].csv.path) so paths match the YAML."""
    return tuple(
        part for i, part in enumerate(loc)
        if not (i > 0 and part in _UNION_TAGS and (isinstance(loc[i - 1], int) or loc[i - 1] in ("split", "model")
                                                   or (i > 1 and loc[i - 2] == "search_space")))
    )


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    origin = get_origin(annotation)
    if origin is Annotated:
        return _models_in(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return [m for arg in get_args(annotation) for m in _models_in(arg)]
    return [annotation] if isinstance(annotation, type) and issubclass(annotation, BaseModel) else []


def _step(annotation: Any, part: Any) -> Any:
    """The annotation one part of a pydantic error location further in (None when it cannot tell)."""
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    origin = get_origin(annotation)
    if origin is list and isinstance(part, int):
        return get_args(annotation)[0]
    if origin is dict and isinstance(part, str):
        return get_args(annotation)[1]
    models = _models_in(annotation)
    if len(models) > 1:  # a union, and the part is its tag, such as 'csv' in data.sources[0].csv.path
        tagged = [m for m in models if any(tag in m.model_fields and part in get_args(m.model_fields[tag].annotation)
                                           for tag in ("type", "family"))]
        return tagged[0] if tagged else None
    if models and isinstance(part, str) and part in models[0].model_fields:
        return models[0].model_fields[part].annotation
    return None


def _keys_at(loc: tuple[Any, ...]) -> list[str]:
    """The keys the mapping at pydantic's raw error location ``loc`` may hold, from the schema itself."""
    annotation: Any = PipelineConfig
    for part in loc:
        annotation = _step(annotation, part)
        if annotation is None:
            return []
    return sorted({k for m in _models_in(annotation) for k in m.model_fields} - {"base_dir"})


def _unknown_key(loc: tuple[Any, ...]) -> str:
    allowed = _keys_at(loc[:-1])
    hint = did_you_mean(closest_names(str(loc[-1]), allowed))
    if len(loc) == 3 and loc[0] == "model" and allowed:  # a model family's own keys
        other = [f for f, m in MODEL_CONFIGS.items() if f != loc[1] and str(loc[-1]) in m.model_fields]
        why = f"; it is a key of {' and '.join(other)}" if other else (f"; {hint}" if hint else "")
        return f"not a key of model.family {loc[1]}{why} ({loc[1]} keys: {', '.join(k for k in allowed if k != 'family')})"
    if hint:
        return f"unknown key; {hint}"
    if allowed:
        return f"unknown key; allowed here: {', '.join(allowed)}"
    return "unknown key (check spelling; see `raymlops schema` for the allowed keys)"


def parse_config(data: Any, source: str = "<config>", root: yaml.Node | None = None,
                 base_dir: str = ".") -> PipelineConfig:
    """Validate a parsed mapping; every problem is reported at once with its path (and line if known)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the config must be a YAML mapping with sections such as 'data' and "
                          f"'features', got {type(data).__name__}")
    problems: list[str] = []
    try:
        cfg = PipelineConfig.model_validate({**data, "base_dir": base_dir})
    except ValidationError as exc:
        for err in exc.errors():
            loc = _clean_loc(tuple(err["loc"]))
            line = _yaml_line(root, loc)
            where = f"{source}:{line}" if line else source
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = _unknown_key(tuple(err["loc"]))
            elif err["type"] == "missing":
                msg = "required key is missing"
            elif err["type"] == "union_tag_invalid" and loc == ("model",):
                loc = ("model", "family")
                msg = (f"unknown model family {err['ctx']['tag']!r}; choose one of {', '.join(MODEL_CONFIGS)} "
                       "(see `raymlops schema`)")
            problems.append(f"{where}: {_format_loc(loc)}: {msg}")
        raise ConfigError(_summary(source, problems), problems=problems) from None
    for check in CROSS_CHECKS:
        problems += _located(check(cfg), source, root)
    if problems:
        raise ConfigError(_summary(source, problems), problems=problems)
    return cfg


def _located(pairs: list[tuple[str, str]], source: str | None, root: yaml.Node | None) -> list[str]:
    """'file:line: yaml.path: problem' for (yaml path, problem) pairs ('yaml.path: problem' without a file)."""
    out = []
    for path, problem in pairs:
        line = _yaml_line(root, tuple(int(p) if p.isdigit() else p
                                      for p in path.replace("[", ".").replace("]", "").split(".")))
        where = (f"{source}:{line}: " if line else f"{source}: ") if source else ""
        out.append(f"{where}{path}: {problem}")
    return out


def config_error(pairs: list[tuple[str, str]], what: str, config_path: str | Path | None = None) -> ConfigError:
    """One ConfigError for problems found after loading (``what``: against what), with the file and line
    of each when the config file is given."""
    root = None
    if config_path is not None:
        try:
            root = yaml.compose(Path(config_path).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            pass
    problems = _located(pairs, str(config_path) if config_path is not None else None, root)
    return ConfigError(_summary(f"{config_path or 'the config'} {what}", problems), problems=problems)


def _summary(source: str, problems: list[str]) -> str:
    head = f"{len(problems)} problem{'s' if len(problems) != 1 else ''} in {source}:"
    return "\n".join([head, *(f"  - {p}" for p in problems)])


def load_config(path: str | Path) -> PipelineConfig:
    """Read, validate and cross-check a pipeline config file; raise one ConfigError listing all problems."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path} (give the path to a YAML file, e.g. configs/smoke.yaml)")
    text = path.read_text(encoding="utf-8")
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    return parse_config(data, source=str(path), root=root, base_dir=str(path.parent.resolve()))


def config_json_schema() -> dict[str, Any]:
    """JSON schema of the config, for editors (``raymlops schema``)."""
    schema = PipelineConfig.model_json_schema()
    schema.get("properties", {}).pop("base_dir", None)
    return schema
