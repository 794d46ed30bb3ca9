"""The local model repository: built models with a config file beside each.

Layout: ``<root>/models/<name>/<precision>/{model.onnx|model.tflite, config.json, labels.txt?}``.
The root is ``$EDGEINFER_HOME`` or ``~/.cache/edgeinfer``. A build writes into a staging folder
and renames it into place, under a file lock, so a failed or concurrent build never leaves a
half-written model behind.
"""

from __future__ import annotations

import errno
import hashlib
import importlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from edgeinfer.errors import IntegrityError, InvalidInput, ModelNotFound, QualityGateFailed, StorageError
from edgeinfer.models.config import ModelConfig
from edgeinfer.models.precision import BUILD_PRECISIONS
from edgeinfer.models.recipes import INT8_RECIPES, built_with, named_recipe, outdated, stored_recipe_name
from edgeinfer.models.zoo import ZOO, zoo_entry
from edgeinfer.system.files import exclusively

logger = logging.getLogger(__name__)

HOME_ENV = "EDGEINFER_HOME"
# What a repository that cannot be written says: read-only, not ours, full, or not a folder at all
# (--home naming a file, or a path through one).
_STORAGE_ERRNOS = (
    errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR, errno.ENOENT,
    errno.EEXIST,
)  # fmt: skip
CONFIG_FILE = "config.json"
PRECISIONS = BUILD_PRECISIONS  # what a model is built in (bf16 is computed from fp32: models/precision.py)
#: A file verified once is not hashed again in this process while its size, inode, modification
#: and change times stay the same; only files unchanged for this long are remembered, so that a
#: write within the file system's clock tick of a verification cannot hide behind equal times.
VERIFIED_SETTLED_NS = 2_000_000_000
_verified: dict[tuple[Path, str], tuple[int, int, int, int]] = {}
#: A model's name is one folder under ``models/``: no separators, no leading dot, nothing empty.
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def default_root() -> Path:
    env = os.environ.get(HOME_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "edgeinfer"


def check_model_name(name: str) -> str:
    """``name`` if it can name a model here; InvalidInput otherwise (it becomes a folder name)."""
    if not isinstance(name, str) or not _MODEL_NAME.fullmatch(name):
        raise InvalidInput(
            f"{name!r} is not a model name: use 1-100 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit"
        )
    return name


def _remove_if_empty(folder: Path) -> None:
    """Delete ``folder`` if nothing at all is left in it; anything else leaves it as it is (rmdir
    never deletes a file, and a folder that cannot be removed costs nothing)."""
    try:
        folder.rmdir()
    except OSError as exc:
        logger.debug("kept %s: %s", folder, exc.strerror or exc)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class StoredModel:
    """A built model on disk: its config and where its files are."""

    config: ModelConfig
    directory: Path

    @property
    def path(self) -> Path:
        return self.directory / self.config.file

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size

    def verify(self) -> None:
        """Raise IntegrityError if the model file no longer matches the sha256 recorded at build.

        Hashing the 14 MB FP32 file takes ~20 ms; a file this process has verified and that has
        not changed since (:data:`VERIFIED_SETTLED_NS`) is not hashed again.
        """
        key = (self.path, self.config.file_sha256)
        try:
            stat = self.path.stat()
            signature = (stat.st_size, stat.st_ino, stat.st_mtime_ns, stat.st_ctime_ns)
            if _verified.get(key) == signature:
                return
            actual = sha256_file(self.path)
        except FileNotFoundError:
            raise IntegrityError(f"{self.path} is missing; {rebuild_hint(self.config)}") from None
        except OSError as exc:
            raise IntegrityError(f"cannot read {self.path}: {exc.strerror or exc}") from exc
        if actual != self.config.file_sha256:
            raise IntegrityError(
                f"{self.path} has sha256 {actual}, but it was built as {self.config.file_sha256}: "
                f"the file was modified; {rebuild_hint(self.config)}"
            )
        self._verify_labels()
        if time.time_ns() - max(stat.st_mtime_ns, stat.st_ctime_ns) > VERIFIED_SETTLED_NS:
            _verified[key] = signature

    def _verify_labels(self) -> None:
        """A labels file recorded with its sha256 (imports do) must still be the one recorded:
        edited or cut short, it named classes wrongly without a word."""
        recorded = self.config.extra.get("labels_sha256")
        if not recorded or not self.config.labels.startswith("file:"):
            return
        path = self.directory / self.config.labels.removeprefix("file:")
        try:
            actual = sha256_file(path)
        except OSError as exc:
            raise IntegrityError(
                f"cannot read {path}: {exc.strerror or exc}; {rebuild_hint(self.config)}"
            ) from exc
        if actual != recorded:
            raise IntegrityError(f"{path} was modified since it was stored; {rebuild_hint(self.config)}")


def rebuild_hint(config: ModelConfig) -> str:
    """How to get an intact copy of ``config``'s build back (a damaged copy is rebuilt as it was)."""
    if config.name not in ZOO:
        return "import the model again (`edgeinfer models import`)"
    precision = "" if config.precision == "fp32" else f" -p {config.precision}"
    return f"`edgeinfer models build {config.name}{precision}` rebuilds it"


# A builder writes the model's files into a staging directory and returns its config.
Builder = Callable[[Path], ModelConfig]


class ModelRepository:
    """Built models under one root directory."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root or default_root()).expanduser()
        self.models_dir = self.root / "models"
        self._warned: set[Path] = set()
        self._warned_gate: set[Path] = set()

    def _recorded_recipe(self, name: str, precision: str) -> str | None:
        """The INT8 recipe a damaged config still names, if it can be read at all."""
        try:
            raw = json.loads((self.model_dir(name, precision) / CONFIG_FILE).read_text())
            recorded = raw["extra"]["quality"]["recipe_name"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return recorded if recorded in INT8_RECIPES else None

    def model_dir(self, name: str, precision: str = "fp32") -> Path:
        if precision not in PRECISIONS:
            raise InvalidInput(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
        return self.models_dir / check_model_name(name) / precision

    def find(self, name: str, precision: str = "fp32") -> StoredModel | None:
        """The built model, or None if it is not built (yet)."""
        directory = self.model_dir(name, precision)
        config_path = directory / CONFIG_FILE
        if not config_path.is_file():
            return None
        try:
            return StoredModel(ModelConfig.read(config_path), directory)
        except IntegrityError as exc:
            build = f" -p {precision}" if precision != "fp32" else ""
            remedy = (
                f"`edgeinfer models build {name}{build}` rebuilds it" if name in ZOO
                else f"`edgeinfer models remove {name}` and import it again"
            )  # fmt: skip
            raise IntegrityError(f"{exc}; {remedy}") from exc

    def get(self, name: str, precision: str | None = "fp32", *, build: bool = True) -> StoredModel:
        """The built model; zoo models are built on first use when ``build`` is true.

        ``precision=None`` means FP32 for zoo models, and the one build of an imported model.
        """
        if precision is None:
            precision = self.default_precision(name)
        stored = self.find(name, precision)
        if stored is not None:
            self._warn_if_outdated(stored)
            self._gate(stored)
            return stored
        if name not in ZOO and not self.models_dir.joinpath(name).is_dir():
            zoo_entry(name)  # raises ModelNotFound with the list of known models
        if not build:
            raise ModelNotFound(
                f"model {name!r} ({precision}) is not built; run `edgeinfer models build {name}"
                f"{'' if precision == 'fp32' else ' --precision ' + precision}`"
            )
        if name not in ZOO:
            return self.build(name, precision)  # says what the imported model has instead
        logger.warning(
            "%s (%s) is not built yet: building it now%s (`edgeinfer models build` does it ahead of time)",
            name, precision, " (about a minute)" if precision == "int8" else "",
        )  # fmt: skip
        return self.build(name, precision)

    def build(
        self, name: str, precision: str = "fp32", *, force: bool = False, recipe: str | None = None
    ) -> StoredModel:
        """Build a zoo model (idempotent: an intact, current build is returned as it is).

        ``recipe`` names an INT8 recipe ("fast", the default, or "accurate"; see
        ``models/recipes.py``); it applies to int8 builds only. A stored INT8 build with a
        different recipe is rebuilt; so is one whose named recipe has changed since it was built
        (an older edgeinfer made it), with that recipe's current definition.
        """
        if recipe is not None and precision != "int8":
            raise InvalidInput(f"--recipe chooses how INT8 is built; it does not apply to {precision}")
        if precision not in PRECISIONS:
            computed = " (bf16 is computed from the fp32 build, not built)" if precision == "bf16" else ""
            raise ModelNotFound(
                f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}{computed}"
            )
        intact = self._intact(name, precision, recipe) if not force else None
        if intact is not None:  # nothing to write: a read-only repository serves it too
            self._gate(intact)
            return intact
        with self._lock(name, precision):
            try:
                existing = self.find(name, precision)
            except IntegrityError as exc:
                logger.warning("rebuilding %s (%s): %s", name, precision, exc)
                existing = None  # a damaged config: rebuild over it, with the recipe it names
                if recipe is None and precision == "int8":
                    recipe = self._recorded_recipe(name, precision)
            if existing is not None and recipe is None and precision == "int8":
                kept = stored_recipe_name(existing.config)  # a rebuild keeps the stored recipe
                recipe = kept if kept in INT8_RECIPES else None
            if existing is not None and recipe is not None:
                force = force or not built_with(existing.config, recipe)
            if existing is not None and not force:
                try:
                    existing.verify()
                    self._gate(existing)
                    return existing
                except IntegrityError:
                    pass  # rebuild over a damaged copy
            builder = self._builder(name, precision, recipe)
            return self._install(name, precision, builder)

    def _intact(self, name: str, precision: str, recipe: str | None) -> StoredModel | None:
        """The stored build :meth:`build` would return as it is, found without taking the lock."""
        try:
            existing = self.find(name, precision)
        except IntegrityError:
            return None
        if existing is None or outdated(existing.config):
            return None
        if recipe is not None and not built_with(existing.config, recipe):
            return None
        try:
            existing.verify()
        except IntegrityError:
            return None
        return existing

    def install(self, name: str, precision: str, builder: Builder) -> StoredModel:
        """Run ``builder`` in a staging folder, then move the result into place atomically, under
        the build's lock (two installs of one name and precision take turns)."""
        with self._lock(name, precision):
            return self._install(name, precision, builder)

    def _install(self, name: str, precision: str, builder: Builder) -> StoredModel:
        target = self.model_dir(name, precision)
        with self._writing():
            self.models_dir.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".staging-{name}-", dir=self.models_dir))
        try:
            config = builder(staging)
            with self._writing():
                (staging / CONFIG_FILE).write_text(config.to_json())
                target.parent.mkdir(parents=True, exist_ok=True)
                if target.exists():
                    trash = Path(tempfile.mkdtemp(prefix=f".trash-{name}-", dir=self.models_dir))
                    target.rename(trash / "old")
                    try:
                        staging.rename(target)
                    except OSError:
                        (trash / "old").rename(target)  # the old build back, not lost in the trash
                        raise
                    finally:
                        shutil.rmtree(trash, ignore_errors=True)
                else:
                    staging.rename(target)
            return StoredModel(config, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def remove(self, name: str, precision: str | None = None) -> None:
        """Delete one build, or every build of ``name``; only ever a folder under ``models/``. The
        model's folder goes with its last build (else ``names`` would still list it)."""
        target = self.models_dir / check_model_name(name)
        if precision is not None:
            target = self.model_dir(name, precision)
        if not target.is_dir():
            built = "" if precision is None or not target.parent.is_dir() else f" in {precision}"
            raise ModelNotFound(f"model {name!r} is not built{built}")
        with self._lock(name, precision or "all"), self._writing():
            shutil.rmtree(target)
        if precision is not None:
            _remove_if_empty(target.parent)

    def names(self) -> list[str]:
        """Every model name known here: the zoo plus anything imported or built."""
        built = (
            {p.name for p in self.models_dir.iterdir() if p.is_dir() and _MODEL_NAME.fullmatch(p.name)}
            if self.models_dir.is_dir()
            else set()
        )
        return sorted(set(ZOO) | built)

    def default_precision(self, name: str) -> str:
        """The build a command uses when none is named: FP32 for zoo models, the one build of an
        imported model (an imported INT8 TFLite file has no FP32 build)."""
        if name not in ZOO:
            builds = self.builds(name)
            if len(builds) == 1:
                return builds[0].config.precision
        return "fp32"

    def builds(self, name: str) -> list[StoredModel]:
        found = (self.find(name, precision) for precision in PRECISIONS)
        return [stored for stored in found if stored is not None]

    def _builder(self, name: str, precision: str, recipe: str | None = None) -> Builder:
        if name not in ZOO:
            if self.model_dir(name, precision).is_dir():
                raise InvalidInput(
                    f"model {name!r} was imported, not built from the zoo: edgeinfer cannot rebuild its "
                    f"{precision} build; import the file again to replace it (edgeinfer models import)"
                )
            if self.models_dir.joinpath(name).is_dir():
                raise ModelNotFound(
                    f"model {name!r} was imported, not built from the zoo; it has no {precision} build"
                )
            zoo_entry(name)
        if precision == "fp32":
            from edgeinfer.models.build import fp32_builder

            return fp32_builder(ZOO[name])
        module = importlib.import_module("edgeinfer.models.quantize")
        settings = module.BuildSettings(recipe=named_recipe(recipe)) if recipe else None
        builder: Builder = module.builder(self, ZOO[name], precision, settings)
        return builder

    def _warn_if_outdated(self, stored: StoredModel) -> None:
        reason = outdated(stored.config)
        if reason is None or stored.directory in self._warned:
            return
        self._warned.add(stored.directory)
        config = stored.config
        logger.warning(
            "the %s build of %s was %s; it is used as it is. `edgeinfer models build %s --precision %s` "
            "rebuilds it with the current recipe",
            config.precision,
            config.name,
            reason,
            config.name,
            config.precision,
        )

    def _gate(self, stored: StoredModel) -> None:
        """Refuse a stored reduced-precision build whose agreement with FP32 is below the gate as
        configured now (``$EDGEINFER_MIN_TOP1_AGREEMENT``), unless ``$EDGEINFER_ALLOW_FAILED_QUALITY``
        allows it, which is then said once: a build the gate refused is not used silently."""
        quality = stored.config.quality
        if quality is None:
            return
        from edgeinfer.models.quality import ALLOW_FAILED_ENV, GateSettings

        settings = GateSettings.from_env()  # also refuses malformed values, build or no build
        if quality.top1_agreement >= settings.min_top1_agreement:
            return
        config = stored.config
        figure = (
            f"top-1 agreement with FP32 {quality.top1_agreement:.2%} of {quality.images} decisive held-out "
            f"images, below the required {settings.min_top1_agreement:.2%}"
        )
        if not settings.allow_failed:
            raise QualityGateFailed(
                f"the {config.precision} build of {config.name} does not pass the accuracy gate "
                f"({figure}); `edgeinfer models build {config.name} -p {config.precision} --force` "
                f"rebuilds it (--recipe accurate is closer to FP32), ${ALLOW_FAILED_ENV}=1 uses it anyway"
            )
        if stored.directory not in self._warned_gate:
            self._warned_gate.add(stored.directory)
            logger.warning(
                "the %s build of %s does not pass the accuracy gate (%s); used because $%s is set",
                config.precision, config.name, figure, ALLOW_FAILED_ENV,
            )  # fmt: skip

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Turn a repository that cannot be written into one clear error."""
        try:
            yield
        except OSError as exc:
            if exc.errno not in _STORAGE_ERRNOS:
                raise
            raise StorageError(
                f"cannot write to the model repository {self.root}: {exc.strerror}; set "
                f"${HOME_ENV} (or --home) to a writable folder"
            ) from exc

    @contextmanager
    def _lock(self, name: str, precision: str) -> Iterator[None]:
        with self._writing():
            self.models_dir.mkdir(parents=True, exist_ok=True)
        lock_path = self.models_dir / f".lock-{name}-{precision}"
        with self._writing():
            handle = lock_path.open("a")
        with handle, exclusively(handle):
            yield
