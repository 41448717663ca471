"""The package as pip installs it: every subpackage listed, configs found by name, a command."""

import os
import tomllib

from mtl_jax import config_files

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pyproject() -> dict:
  with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
    return tomllib.load(f)


def test_every_subpackage_of_mtl_jax_is_packaged():
  found = {os.path.relpath(root, REPO).replace(os.sep, ".")
           for root, _, files in os.walk(os.path.join(REPO, "mtl_jax"))
           if "__init__.py" in files}
  listed = set(_pyproject()["tool"]["setuptools"]["packages"])
  assert found <= listed, f"add {sorted(found - listed)} to pyproject.toml's packages"
  assert _pyproject()["tool"]["setuptools"]["package-dir"]["mtl_jax.configs"] == "configs"


def test_a_config_name_resolves_to_the_packaged_file_with_its_options():
  assert config_files.names() == sorted(
      f[:-3] for f in os.listdir(os.path.join(REPO, "configs")) if not f.startswith("_"))
  path, _, options = config_files.resolve("digits:runlocal").partition(":")
  assert os.path.samefile(path, os.path.join(REPO, "configs", "digits.py"))
  assert options == "runlocal"
  assert config_files.resolve("configs/digits.py") == "configs/digits.py"  # a path stays
  assert config_files.resolve("nosuch") == "nosuch"  # reported missing by the command


def test_the_console_command_is_the_module_entry_point():
  assert _pyproject()["project"]["scripts"] == {"mtl-jax": "mtl_jax.main:run"}
  from mtl_jax import main  # pylint: disable=import-outside-toplevel
  assert callable(main.run)


def test_tensorflow_is_not_a_dependency_of_the_base_install():
  dependencies = " ".join(_pyproject()["project"]["dependencies"])
  assert "tensorflow" not in dependencies
  assert any(d.startswith("tensorflow-cpu") for d in
             _pyproject()["project"]["optional-dependencies"]["tfds"])
