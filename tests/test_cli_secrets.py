"""``objstore secrets ...`` through click's CliRunner: real stores in tmp_path, values byte-exact, exit codes,
and no secret value or key in anything but ``secrets get``'s stdout."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from conftest import assert_one_line_error

import objstore
from objstore.cli import secrets_cmd
from objstore.cli.main import cli
from objstore.errors import VaultError
from tests.databases import for_engine

Invoke = Callable[..., Result]

SECRET = "Zq7-distinctive-s3cr3t-value-Xw9"  # never expected outside `secrets get`'s stdout
BINARY = b"\x00\xff\xfe\x80bin\x00ary\xc3\x28\n\x00"  # NUL bytes and invalid UTF-8
NEW_KEY = "new-key-new-key-new-key-new-key!"  # 32 bytes
OTHER_KEY = "some-other-key-some-other-key-00"  # 32 bytes


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine: str) -> Path:
    """A config written by `objstore init-config -o` in tmp_path (with a fresh key)."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "objstore.toml"
    result = CliRunner().invoke(cli, ["init-config", "-o", str(path)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return for_engine(path, engine)


def invoker(config: Path) -> Invoke:
    def invoke(*args: str, input: bytes | str | None = None, env: dict[str, str] | None = None) -> Result:
        return CliRunner().invoke(
            cli, ["--config", str(config), *args], input=input, env=env, catch_exceptions=False
        )

    return invoke


@pytest.fixture
def run(config_file: Path) -> Invoke:
    return invoker(config_file)


def configured_key(config: Path) -> str:
    key = tomllib.loads(config.read_text())["secret_store"]["sqlite"]["encryption_key"]
    assert isinstance(key, str)
    return key


def with_key(config: Path, key: str | None, name: str) -> Path:
    """A copy of ``config`` (same data folder) with another key, or none."""
    lines = []
    for line in config.read_text().splitlines():
        if not line.startswith("encryption_key = "):
            lines.append(line)
        elif key is not None:
            lines.append(f'encryption_key = "{key}"')
    copy = config.with_name(name)
    copy.write_text("\n".join(lines) + "\n")
    return copy


def assert_nothing_leaks(result: Result, *keys: str) -> None:
    for text in (SECRET, *keys):
        assert text not in result.stderr, result.stderr
    assert SECRET not in result.stdout


def put(run: Invoke, *args: str, value: bytes | str = SECRET) -> Result:
    result = run("secrets", "put", *args, "-", input=value)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert_nothing_leaks(result)
    return result


# -- put / get / ls / rm -----------------------------------------------------------------------------------


@pytest.mark.parametrize("scope", [["-p", "build"], ["-n", "team-a", "-p", "build"], ["--global"]])
def test_round_trip(run: Invoke, scope: list[str]) -> None:
    put(run, *scope, "DEPLOY_TOKEN")

    got = run("secrets", "get", *scope, "DEPLOY_TOKEN")
    assert got.exit_code == 0, got.stderr
    assert got.stdout_bytes == SECRET.encode()  # exactly the value: no newline added
    assert got.stderr == ""

    listed = run("secrets", "ls", *scope)
    assert listed.exit_code == 0
    assert "DEPLOY_TOKEN" in listed.stdout and "CREATED" in listed.stdout
    assert SECRET not in listed.stdout

    assert run("secrets", "rm", *scope, "DEPLOY_TOKEN").exit_code == 0
    assert run("secrets", "ls", *scope).stdout == ""
    missing = run("secrets", "get", *scope, "DEPLOY_TOKEN")
    assert_one_line_error(missing, 4, "DEPLOY_TOKEN")
    assert missing.stdout == ""
    assert_one_line_error(run("secrets", "rm", *scope, "DEPLOY_TOKEN"), 4)


def test_pipelines_namespaces_and_global_are_separate(run: Invoke) -> None:
    put(run, "-p", "build", "TOKEN", value="in-default")
    put(run, "-n", "other", "-p", "build", "TOKEN", value="in-other")
    put(run, "--global", "TOKEN", value="global")
    assert run("secrets", "get", "-p", "build", "TOKEN").stdout == "in-default"
    assert run("secrets", "get", "-n", "other", "-p", "build", "TOKEN").stdout == "in-other"
    assert run("secrets", "get", "--global", "TOKEN").stdout == "global"
    assert run("secrets", "ls", "-p", "deploy").stdout == ""


def test_binary_stdin_round_trips_byte_exact(run: Invoke, config_file: Path) -> None:
    put(run, "-p", "build", "KEYFILE", value=BINARY)
    got = run("secrets", "get", "-p", "build", "KEYFILE")
    assert got.exit_code == 0
    assert got.stdout_bytes == BINARY
    with objstore.open(config_file) as store:
        assert store.pipeline("default", "build").secrets.get("KEYFILE") == BINARY  # stored as bytes


def test_utf8_stdin_is_stored_as_text_and_kept_exactly(run: Invoke, config_file: Path) -> None:
    text = "pässwörd\x00 with \x1b[31mescapes\x1b[0m\n"  # a trailing newline is part of the value
    put(run, "-p", "build", "TEXT", value=text.encode())
    assert run("secrets", "get", "-p", "build", "TEXT").stdout_bytes == text.encode()
    with objstore.open(config_file) as store:
        assert store.pipeline("default", "build").secrets.get("TEXT") == text


def test_omitted_value_reads_stdin(run: Invoke) -> None:
    assert run("secrets", "put", "-p", "build", "TOKEN", input=BINARY).exit_code == 0
    assert run("secrets", "get", "-p", "build", "TOKEN").stdout_bytes == BINARY


def test_value_on_command_line_is_text_with_a_history_warning(run: Invoke, config_file: Path) -> None:
    result = run("secrets", "put", "-p", "build", "TOKEN", SECRET)
    assert result.exit_code == 0
    assert result.stdout == ""
    warning = result.stderr.splitlines()
    assert len(warning) == 1 and "shell history" in warning[0] and " - " in warning[0]
    assert_nothing_leaks(result)
    assert run("secrets", "get", "-p", "build", "TOKEN").stdout_bytes == SECRET.encode()
    with objstore.open(config_file) as store:
        assert store.pipeline("default", "build").secrets.get("TOKEN") == SECRET


def test_terminal_is_prompted_without_echo(run: Invoke, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(secrets_cmd, "_stdin_is_terminal", lambda: True)
    result = run("secrets", "put", "-p", "build", "TOKEN", input=f"{SECRET}\n{SECRET}\n")
    assert result.exit_code == 0, result.stderr
    assert_nothing_leaks(result)
    assert run("secrets", "get", "-p", "build", "TOKEN").stdout == SECRET


def test_existing_name_exits_5_and_overwrite_replaces(run: Invoke) -> None:
    put(run, "-p", "build", "TOKEN")
    again = run("secrets", "put", "-p", "build", "TOKEN", "-", input="another-value")
    assert_one_line_error(again, 5, "TOKEN", "--overwrite")
    assert_nothing_leaks(again)
    assert run("secrets", "get", "-p", "build", "TOKEN").stdout == SECRET

    put(run, "-p", "build", "TOKEN", "--overwrite", value="another-value")
    assert run("secrets", "get", "-p", "build", "TOKEN").stdout == "another-value"


def test_json_of_put_and_ls_has_names_and_times_never_values(run: Invoke) -> None:
    put_json = json.loads(put(run, "-p", "build", "TOKEN", "--json").stdout)
    assert put_json["name"] == "TOKEN" and put_json["created_at"] and put_json["updated_at"]
    put(run, "-p", "build", "OTHER", value="another-value")

    listed = run("secrets", "ls", "-p", "build", "--json")
    assert listed.exit_code == 0
    document = json.loads(listed.stdout)
    assert [item["name"] for item in document] == ["OTHER", "TOKEN"]
    assert set(document[0]) == {"name", "created_at", "updated_at"}
    assert SECRET not in listed.stdout and "another-value" not in listed.stdout
    assert json.loads(run("secrets", "ls", "--global", "--json").stdout) == []


def test_invalid_name_exits_6(run: Invoke) -> None:
    result = run("secrets", "put", "-p", "build", "bad name!", "-", input=SECRET)
    assert_one_line_error(result, 6)
    assert_nothing_leaks(result)


# -- usage errors ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["secrets", "ls"], "-p PIPELINE"),
        (["secrets", "get", "TOKEN"], "--global"),
        (["secrets", "ls", "-p", "build", "--global"], "not both"),
        (["secrets", "rm", "-n", "team-a", "--global", "TOKEN"], "namespace"),
        (["secrets", "put", "-p", "build", "--namespace-pattern", "team-*", "TOKEN", "-"], "--global"),
    ],
)
def test_scope_usage_errors_exit_2(run: Invoke, args: list[str], needle: str) -> None:
    result = run(*args, input=SECRET)
    assert result.exit_code == 2, result.output
    assert needle in result.stderr


@pytest.mark.parametrize(
    "value_args",
    [
        [f"-x{SECRET}"],  # a value that looks like options
        [f"--{SECRET}"],
        ["Zq7-distinctive-s3cr3t", "value-Xw9"],  # an unquoted value with a space
    ],
)
def test_usage_errors_of_put_do_not_repeat_the_value(run: Invoke, value_args: list[str]) -> None:
    result = run("secrets", "put", "-p", "build", "TOKEN", *value_args)
    assert result.exit_code == 2
    for word in value_args:
        assert word not in result.output
        assert word[:3] not in result.output
    assert "Zq7" not in result.output and "Xw9" not in result.output


def test_value_starting_with_dash_after_double_dash(run: Invoke) -> None:
    assert run("secrets", "put", "-p", "build", "TOKEN", "--", f"-{SECRET}").exit_code == 0
    assert run("secrets", "get", "-p", "build", "TOKEN").stdout == f"-{SECRET}"


# -- global secrets and their allow-list -------------------------------------------------------------------


def test_global_allow_list_from_namespace_patterns(run: Invoke, config_file: Path) -> None:
    result = put(run, "--global", "NPM_TOKEN", "--namespace-pattern", "team-*", "--namespace-pattern", "ops")
    assert "note" not in result.stderr
    with objstore.open(config_file) as store:
        assert store.pipeline("team-a", "build").secrets.get_global("NPM_TOKEN") == SECRET
        assert store.pipeline("ops", "deploy").secrets.get_global("NPM_TOKEN") == SECRET
        with pytest.raises(VaultError) as refused:
            store.pipeline("x-team-a", "build").secrets.get_global("NPM_TOKEN")
        assert SECRET not in str(refused.value)
        with pytest.raises(VaultError):
            store.pipeline("opsx", "build").secrets.get_global("NPM_TOKEN")


def test_global_secret_without_patterns_is_readable_by_no_namespace(run: Invoke, config_file: Path) -> None:
    result = put(run, "--global", "NPM_TOKEN")
    assert "--namespace-pattern" in result.stderr  # says how to allow namespaces
    with objstore.open(config_file) as store, pytest.raises(VaultError):
        store.pipeline("default", "build").secrets.get_global("NPM_TOKEN")
    put(run, "--global", "NPM_TOKEN", "--overwrite", "--namespace-pattern", "default")
    with objstore.open(config_file) as store:
        assert store.pipeline("default", "build").secrets.get_global("NPM_TOKEN") == SECRET


def test_invalid_namespace_pattern_exits_6(run: Invoke) -> None:
    result = run("secrets", "put", "--global", "T", "--namespace-pattern", "a b", "-", input=SECRET)
    assert_one_line_error(result, 6, "pattern")
    assert_nothing_leaks(result)


# -- keys --------------------------------------------------------------------------------------------------


def test_no_key_configured_secrets_exit_9_objects_still_work(config_file: Path) -> None:
    run = invoker(with_key(config_file, None, "nokey.toml"))
    for args in (["secrets", "ls", "-p", "build"], ["secrets", "get", "--global", "T"]):
        assert_one_line_error(run(*args), 9, "no encryption key is configured")
    failed = run("secrets", "put", "-p", "build", "T", "-", input=SECRET)
    assert_one_line_error(failed, 9, "no encryption key is configured")
    assert_nothing_leaks(failed)

    assert run("objects", "put", "-p", "build", "notes.txt", "-", input=b"hello").exit_code == 0
    assert run("objects", "get", "-p", "build", "notes.txt").stdout_bytes == b"hello"


def test_wrong_key_exits_9_and_says_so(run: Invoke, config_file: Path) -> None:
    put(run, "-p", "build", "TOKEN")
    wrong = invoker(with_key(config_file, OTHER_KEY, "wrong.toml"))
    for args in (["secrets", "get", "-p", "build", "TOKEN"], ["secrets", "ls", "--global"]):
        result = wrong(*args)
        assert_one_line_error(result, 9, "encryption key does not open the stored secrets")
        assert_nothing_leaks(result, OTHER_KEY, configured_key(config_file))
    # and the right key still works: the failed opens changed nothing
    assert run("secrets", "get", "-p", "build", "TOKEN").stdout == SECRET


@pytest.mark.sqlite_only  # SQLite files and the SQLite key's variable
def test_rotate_key_from_environment(run: Invoke, config_file: Path) -> None:
    old_key = configured_key(config_file)
    put(run, "-p", "build", "TOKEN")
    put(run, "--global", "NPM_TOKEN", "--namespace-pattern", "team-*", value=BINARY)
    env = {"OBJSTORE_NEW_ENCRYPTION_KEY": NEW_KEY}

    rotated = run("secrets", "rotate-key", env=env)
    assert rotated.exit_code == 0, rotated.stderr
    assert "rotated" in rotated.stdout
    assert "secret_store.sqlite.encryption_key" in rotated.stdout and str(config_file) in rotated.stdout
    for text in (NEW_KEY, old_key, SECRET):
        assert text not in rotated.output

    refused = run("secrets", "get", "-p", "build", "TOKEN")
    assert_one_line_error(refused, 9, "does not open the stored secrets")
    assert_nothing_leaks(refused, old_key, NEW_KEY)

    new = invoker(with_key(config_file, NEW_KEY, "new.toml"))
    assert new("secrets", "get", "-p", "build", "TOKEN").stdout == SECRET
    assert new("secrets", "get", "--global", "NPM_TOKEN").stdout_bytes == BINARY

    # The same command again (the configuration still names the old key): nothing to do, not an error.
    again = run("secrets", "rotate-key", env=env)
    assert again.exit_code == 0, again.stderr
    assert "nothing to do" in again.stdout and "encryption_key" in again.stdout
    # And once the new key is configured.
    configured = new("secrets", "rotate-key", env=env)
    assert configured.exit_code == 0, configured.stderr
    assert "nothing to do" in configured.stdout
    for result in (again, configured):
        for text in (NEW_KEY, old_key, SECRET):
            assert text not in result.output
    assert new("secrets", "get", "-p", "build", "TOKEN").stdout == SECRET


@pytest.mark.sqlite_only  # SQLite files and the SQLite key's variable
def test_rotate_key_names_the_environment_variable_holding_the_key(config_file: Path) -> None:
    old_key = configured_key(config_file)
    run = invoker(with_key(config_file, None, "nokey.toml"))
    env = {"OBJSTORE_SECRET_STORE__SQLITE__ENCRYPTION_KEY": old_key, "OBJSTORE_NEW_ENCRYPTION_KEY": NEW_KEY}
    assert run("secrets", "put", "-p", "b", "T", "-", input=SECRET, env=env).exit_code == 0
    rotated = run("secrets", "rotate-key", env=env)
    assert rotated.exit_code == 0, rotated.stderr
    assert "OBJSTORE_SECRET_STORE__SQLITE__ENCRYPTION_KEY" in rotated.stdout
    env["OBJSTORE_SECRET_STORE__SQLITE__ENCRYPTION_KEY"] = NEW_KEY
    assert run("secrets", "get", "-p", "b", "T", env=env).stdout == SECRET


def test_rotate_key_prompts_in_a_terminal(
    run: Invoke, config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    put(run, "-p", "build", "TOKEN")
    monkeypatch.setattr(secrets_cmd, "_stdin_is_terminal", lambda: True)
    result = run("secrets", "rotate-key", input=f"{NEW_KEY}\n{NEW_KEY}\n")
    assert result.exit_code == 0, result.stderr
    assert "rotated" in result.stdout
    assert NEW_KEY not in result.output  # hidden input
    new = invoker(with_key(config_file, NEW_KEY, "new.toml"))
    assert new("secrets", "get", "-p", "build", "TOKEN").stdout == SECRET


def test_rotate_key_without_terminal_or_variable_is_one_line(run: Invoke, config_file: Path) -> None:
    put(run, "-p", "build", "TOKEN")
    result = run("secrets", "rotate-key")
    assert_one_line_error(result, 3, "OBJSTORE_NEW_ENCRYPTION_KEY")
    assert_nothing_leaks(result, configured_key(config_file))
    assert run("secrets", "get", "-p", "build", "TOKEN").stdout == SECRET


def test_rotate_key_refuses_a_key_that_is_not_32_bytes(run: Invoke, config_file: Path) -> None:
    put(run, "-p", "build", "TOKEN")
    short = "too-short-a-key-value"
    result = run("secrets", "rotate-key", env={"OBJSTORE_NEW_ENCRYPTION_KEY": short})
    assert_one_line_error(result, 9, "32 bytes")
    assert_nothing_leaks(result, short, configured_key(config_file))
    assert run("secrets", "get", "-p", "build", "TOKEN").stdout == SECRET  # nothing changed


def test_rotate_key_with_wrong_configured_key_is_refused(run: Invoke, config_file: Path) -> None:
    put(run, "-p", "build", "TOKEN")
    wrong = invoker(with_key(config_file, OTHER_KEY, "wrong.toml"))
    result = wrong("secrets", "rotate-key", env={"OBJSTORE_NEW_ENCRYPTION_KEY": NEW_KEY})
    assert_one_line_error(result, 9, "does not open the stored secrets")
    assert_nothing_leaks(result, OTHER_KEY, NEW_KEY)
    assert run("secrets", "get", "-p", "build", "TOKEN").stdout == SECRET


def test_rotate_data_key_reports_the_count(run: Invoke) -> None:
    values = {"A": "value-a-1234", "B": "value-b-5678"}
    for name, value in values.items():
        put(run, "-p", "build", name, value=value)
    put(run, "--global", "G", value=BINARY)

    result = run("secrets", "rotate-data-key", "--batch-size", "1")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == "resealed 3 secrets with a fresh data key"
    for name, value in values.items():
        assert run("secrets", "get", "-p", "build", name).stdout == value
    assert run("secrets", "get", "--global", "G").stdout_bytes == BINARY
    assert run("secrets", "rotate-data-key").exit_code == 0
    assert run("secrets", "rotate-data-key", "--batch-size", "0").exit_code == 2


def test_rotate_data_key_without_key_is_exit_9(config_file: Path) -> None:
    run = invoker(with_key(config_file, None, "nokey.toml"))
    assert_one_line_error(run("secrets", "rotate-data-key"), 9, "no encryption key is configured")


def test_help_does_not_import_the_engine() -> None:
    code = (
        "import sys\n"
        "from objstore.cli.main import cli\n"
        "heavy = ('sqlalchemy', 'pydantic', 'objstore.engine', 'cryptography')\n"
        "print([m for m in heavy if m in sys.modules])\n"
    )
    output = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert output.strip() == "[]"
    assert "rotate-key" in CliRunner().invoke(cli, ["secrets", "--help"]).stdout
