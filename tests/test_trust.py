"""nbbacktest.parallel.trust: code digests, the user's key, and the signatures of a checkpoint."""

from __future__ import annotations

import importlib
import os
import re
import stat
import sys
import threading
from pathlib import Path

import pytest
from conftest import Sleepy, SmaCross

import nbbacktest as nbb
from nbbacktest.errors import NbbacktestWarning, SweepError
from nbbacktest.parallel import trust
from nbbacktest.parallel.trust import (
    DATA_DIR_ENV,
    DATA_PICKLE,
    SECRET,
    SPEC_PICKLE,
    check_signature,
    code_changes,
    code_digests,
    data_dir,
    remember_loaded_code,
    secret_key,
    signature,
    write_all,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def own_key(tmp_path, monkeypatch):
    """This test's user key, in a directory of its own (never the real user's)."""
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "user"))
    return tmp_path / "user" / SECRET


# ------------------------------------------------------------------ code digests
def test_code_digests_skip_nbbacktest_and_builtin_classes():
    from nbbacktest.engine.examples import SmaCross as Shipped

    assert code_digests([Shipped]) == {}
    digests = code_digests([SmaCross, Sleepy])
    assert set(digests) == {"conftest.SmaCross", "conftest.Sleepy"}
    assert all(d.startswith("source:") for d in digests.values())
    assert code_digests([SmaCross]) == {"conftest.SmaCross": digests["conftest.SmaCross"]}


def test_a_class_and_its_user_bases_each_get_a_digest():
    class Child(SmaCross):
        def signals(self, data):
            return super().signals(data) * 0.5

    digests = code_digests([Child, Child])
    assert list(digests) == [f"{__name__}.test_a_class_and_its_user_bases_each_get_a_digest.<locals>.Child",
                             "conftest.SmaCross"]
    assert digests["conftest.SmaCross"] == code_digests([SmaCross])["conftest.SmaCross"]
    assert code_digests([]) == {}


MODULE = '''
import nbbacktest as nbb

class Base(nbb.Strategy):
    fast = nbb.Param(10, low=2, high=100)

    def cross(self, close):
        return close > close.rolling(self.fast).mean()


class Cross(Base):
    def signals(self, data):
        return self.cross(data["Close"]).astype(float)
'''


def test_a_change_in_a_method_changes_the_digest_of_its_class_only(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "trust_strategies.py").write_text(MODULE)
    module = importlib.import_module("trust_strategies")
    monkeypatch.setitem(sys.modules, "trust_strategies", module)
    before = code_digests([module.Cross])
    assert set(before) == {"trust_strategies.Cross", "trust_strategies.Base"}
    (tmp_path / "trust_strategies.py").write_text(MODULE.replace("close > close", "close < close"))
    after = code_digests([importlib.reload(module).Cross])
    assert after["trust_strategies.Base"] != before["trust_strategies.Base"]
    assert after["trust_strategies.Cross"] == before["trust_strategies.Cross"]
    assert code_changes(before, after) == ["the code of trust_strategies.Base changed"]


CELL = '''
import nbbacktest as nbb

class Cell(nbb.Strategy):
    fast = nbb.Param(10, low=2, high=100)
    _band = 0.0
    lock = None

    def signals(self, data):
        close = data["Close"]
        return (close > close.rolling(self.fast).mean() * (1 + self._band)).astype(float)

    @property
    def doubled(self):
        return self.fast * 2
'''


def exec_class(source: str) -> type:
    """``Cell`` as ``exec`` or ``python -c`` defines it: no source file anywhere."""
    namespace = {"__name__": "__main__"}
    exec(compile(source, "<string>", "exec"), namespace)
    return namespace["Cell"]


def test_a_class_without_source_gets_a_digest_of_its_members():
    first = exec_class(CELL)
    [(name, digest)] = code_digests([first]).items()
    assert name == "__main__.Cell" and digest.startswith("members:")
    assert code_digests([exec_class(CELL)]) == {name: digest}  # the same code, defined again
    for changed in (CELL.replace("1 + self._band", "1 - self._band"),  # a method
                    CELL.replace("_band = 0.0", "_band = 0.01"),  # a plain attribute
                    CELL.replace("self.fast * 2", "self.fast * 3"),  # a property
                    CELL.replace("    lock = None\n", "")):  # an attribute less
        assert code_digests([exec_class(changed)])[name] != digest, changed
    # A docstring is no code. (One on a line of its own moves the methods' line numbers, which
    # a digest of their compiled code includes: here it shares a line.)
    documented = CELL.replace("    fast = ", '    """Doc."""; fast = ')
    assert exec_class(documented).__doc__ == "Doc."
    assert code_digests([exec_class(documented)])[name] == digest


def test_an_object_attribute_is_digested_without_its_address():
    source = CELL.replace("lock = None", "lock = object()")
    assert code_digests([exec_class(source)]) == code_digests([exec_class(source)])


def test_a_class_loaded_from_a_checkpoint_keeps_the_digest_it_was_saved_with():
    loaded = exec_class(CELL)
    remember_loaded_code([loaded], {"__main__.Cell": "source:recorded", "other.Gone": "x"})
    assert code_digests([loaded]) == {"__main__.Cell": "source:recorded"}
    unrecorded = exec_class(CELL)
    remember_loaded_code([unrecorded], "not a dict")
    assert code_digests([unrecorded])["__main__.Cell"].startswith("members:")


def test_code_changes_in_words():
    saved = {"m.A": "1", "m.B": "2", "m.Same": "3"}
    current = {"m.A": "9", "m.C": "4", "m.Same": "3"}
    assert code_changes(saved, current) == ["the code of m.A changed", "m.C is new", "m.B is gone"]
    assert code_changes(saved, saved) == []
    assert code_changes(None, {"m.A": "1"}) == ["m.A is new"]  # a checkpoint that recorded none


# ------------------------------------------------------------------ the user's key
def test_data_dir_honours_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "mine"))
    assert data_dir() == tmp_path / "mine"
    monkeypatch.setenv(DATA_DIR_ENV, "~/keys")
    assert data_dir() == Path.home() / "keys"


@pytest.mark.skipif(sys.platform in ("win32", "darwin"), reason="the Linux data directory")
def test_data_dir_without_the_environment_is_the_users_data_directory(tmp_path, monkeypatch):
    monkeypatch.delenv(DATA_DIR_ENV)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert data_dir() == tmp_path / "xdg" / "nbbacktest"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_dir() == tmp_path / "home" / ".local" / "share" / "nbbacktest"


def test_the_key_is_made_once_for_this_user_only(own_key):
    assert not own_key.exists()
    key = secret_key()
    assert len(key) == 32
    assert stat.S_IMODE(own_key.stat().st_mode) == 0o600
    assert re.fullmatch(r"[0-9a-f]{64}", own_key.read_text()) and bytes.fromhex(own_key.read_text()) == key
    assert secret_key() == key and secret_key() == key
    assert stat.S_IMODE(own_key.stat().st_mode) == 0o600


def test_another_data_directory_has_another_key(tmp_path, monkeypatch):
    mine = secret_key()
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "someone else"))
    assert secret_key() != mine


def test_processes_making_the_key_at_once_agree_on_it(own_key):
    keys: list[bytes] = []
    start = threading.Barrier(8)

    def make():
        start.wait()
        keys.append(secret_key())

    threads = [threading.Thread(target=make) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(keys) == 8 and len(set(keys)) == 1
    assert bytes.fromhex(own_key.read_text()) == keys[0]


def test_a_damaged_key_is_a_clear_error(own_key, tmp_path, daily, monkeypatch):
    monkeypatch.setattr(trust, "_KEY_WAIT", 0.05)
    own_key.parent.mkdir(parents=True)
    own_key.write_text("short")
    with pytest.raises(SweepError, match=rf"signing key {re.escape(repr(str(own_key)))} is damaged.*delete it"):
        secret_key()


def test_write_all_writes_everything_when_a_write_is_short(tmp_path, monkeypatch):
    real = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real(fd, bytes(data[:3])))
    fd = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT)
    try:
        write_all(fd, b"0123456789abcdef")
    finally:
        os.close(fd)
    assert (tmp_path / "out").read_bytes() == b"0123456789abcdef"


# ------------------------------------------------------------------ signatures
@pytest.fixture
def folder(tmp_path):
    """A checkpoint's pickled files (their content does not matter to the signature)."""
    made = tmp_path / "run"
    made.mkdir()
    (made / SPEC_PICKLE).write_bytes(b"the spec " * 10)
    (made / DATA_PICKLE).write_bytes(os.urandom(3 * (1 << 20) + 17))  # several MAC blocks
    return made


def test_a_signed_folder_passes(folder):
    signed = signature(folder)
    assert set(signed) == {"algorithm", SPEC_PICKLE, DATA_PICKLE} and signed["algorithm"] == "hmac-sha256"
    assert all(re.fullmatch(r"[0-9a-f]{64}", signed[name]) for name in (SPEC_PICKLE, DATA_PICKLE))
    check_signature(folder, {"signature": signed})
    # Signing the bytes at hand is signing the files.
    payloads = {name: (folder / name).read_bytes() for name in (SPEC_PICKLE, DATA_PICKLE)}
    assert signature(folder, payloads) == signed


@pytest.mark.parametrize("name", [SPEC_PICKLE, DATA_PICKLE])
def test_a_changed_file_is_refused_naming_it(folder, name):
    signed = signature(folder)
    payload = bytearray((folder / name).read_bytes())
    payload[-1] ^= 1
    (folder / name).write_bytes(bytes(payload))
    with pytest.raises(SweepError) as refused:
        check_signature(folder, {"signature": signed})
    message = str(refused.value)
    assert f"{name} does not match its signature" in message and str(folder) in message
    assert f"nbb.resume({str(folder)!r}, trusted=True)" in message


def test_files_swapped_between_names_are_refused(folder):
    (folder / DATA_PICKLE).write_bytes((folder / SPEC_PICKLE).read_bytes())  # the same bytes
    signed = signature(folder)
    assert signed[SPEC_PICKLE] != signed[DATA_PICKLE]  # the name is signed too
    swapped = {**signed, SPEC_PICKLE: signed[DATA_PICKLE], DATA_PICKLE: signed[SPEC_PICKLE]}
    check_signature(folder, {"signature": signed})
    with pytest.raises(SweepError, match="spec.pkl does not match its signature"):
        check_signature(folder, {"signature": swapped})


def test_another_users_signature_is_refused(folder, tmp_path, monkeypatch):
    signed = signature(folder)
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "someone else"))
    with pytest.raises(SweepError, match="spec.pkl does not match its signature .made by another user"):
        check_signature(folder, {"signature": signed})


@pytest.mark.parametrize("spec, fault", [
    ({}, "it is not signed"),
    ({"signature": None}, "it is not signed"),
    ({"signature": "x"}, "the signature in its spec.json is damaged"),
    ({"signature": {"algorithm": "md5"}}, "the signature in its spec.json is damaged"),
    ({"signature": {"algorithm": "hmac-sha256"}}, "spec.pkl does not match its signature"),
    ({"signature": {"algorithm": "hmac-sha256", SPEC_PICKLE: 3}}, "spec.pkl does not match its signature"),
])
def test_a_missing_or_damaged_signature_is_refused(folder, spec, fault):
    with pytest.raises(SweepError, match=re.escape(fault)) as refused:
        check_signature(folder, spec)
    assert "holds code" in str(refused.value)


def test_a_key_that_cannot_be_made_leaves_the_checkpoint_unsigned_with_a_warning(folder, tmp_path, monkeypatch):
    (tmp_path / "a file").write_text("")
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "a file" / "dir"))
    with pytest.warns(NbbacktestWarning, match=rf"checkpoint {re.escape(repr(str(folder)))} is not signed.*"
                                               f"set {DATA_DIR_ENV} to a writable directory"):
        assert signature(folder) is None


def test_a_sweep_signs_its_checkpoint_with_this_users_key(tmp_path, daily, own_key):
    nbb.sweep(SmaCross, daily, {"fast": [5, 10]}, save=tmp_path / "run", progress=False)
    assert own_key.exists()
    from nbbacktest.parallel.checkpoint import load_spec

    check_signature(tmp_path / "run", load_spec(tmp_path / "run"))
