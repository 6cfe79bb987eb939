"""Tests of nbbacktest.parallel.cluster: connecting, clients sharing a cluster, engines that
hang, what engines keep, and clusters that outlive their client."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError
from IPython.testing.globalipapp import get_ipython
from IPython.utils.capture import capture_output

from nbbacktest.errors import ClusterError
from nbbacktest.parallel.cluster import Cluster

pytestmark = pytest.mark.timeout(240)


# ------------------------------------------------------------------ connecting
def test_connect_to_a_profile_without_a_cluster_says_how_to_start_one():
    with pytest.raises(ClusterError) as raised:
        Cluster.connect(profile="nbbacktest-no-such-profile", timeout=2)
    message = str(raised.value)
    assert message.startswith("no cluster to connect to (profile='nbbacktest-no-such-profile'): ")
    assert "ipcluster start -n 4" in message and ".." not in message
    assert isinstance(raised.value.__cause__, Exception)  # ipyparallel's own error, kept


def test_cluster_connect_magic_to_a_profile_without_a_cluster(monkeypatch):
    monkeypatch.setattr(Cluster, "_current", None)
    shell = get_ipython()
    shell.run_line_magic("load_ext", "nbbacktest")
    with pytest.raises(UsageError, match=r"no cluster to connect to \(profile='nbbacktest-nope'\)"):
        with capture_output():
            shell.run_line_magic("cluster", "connect --profile nbbacktest-nope")
    assert Cluster.current() is None
