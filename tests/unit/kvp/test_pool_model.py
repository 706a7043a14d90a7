"""The pool store against a model: any sequence of sets and deletes, by this process
and by a foreign appender, leaves the file equal to the model, record for record."""

from __future__ import annotations

import os
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hvguest.paths import Paths
from hvguest.pool import PoolRegistry
from hvguest.wire.pool import decode_pool

# The process's open pool files, as a daemon owns them; closed after each test.
POOLS = PoolRegistry()

KEYS = st.sampled_from(["a", "b", "c", "ключ", "k" * 254])
VALUES = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=40
)
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("set"), KEYS, VALUES),
        st.tuples(st.just("delete"), KEYS, st.just("")),
        st.tuples(st.just("append"), KEYS, VALUES),  # cloud-init style, duplicates allowed
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPS)
def test_store_matches_model(ops):
    with tempfile.TemporaryDirectory() as tmp:
        paths = Paths(pool_dir=tmp)
        pf = POOLS.open(paths, 1)
        model: list[tuple[str, str]] = []
        assert pf.record_count() == 0  # opens (creates) the file, as the daemon does
        try:
            for op, key, value in ops:
                if op == "set":
                    pf.set(key, value)
                    for i, (k, _v) in enumerate(model):
                        if k == key:
                            model[i] = (key, value)
                            break
                    else:
                        model.append((key, value))
                elif op == "delete":
                    found = pf.delete(key)
                    index = next((i for i, (k, _v) in enumerate(model) if k == key), None)
                    assert found == (index is not None)
                    if index is not None:
                        del model[index]
                else:
                    with open(paths.pool_file(1), "ab") as f:
                        f.write(key.encode().ljust(512, b"\0") + value.encode().ljust(2048, b"\0"))
                    model.append((key, value))
                assert pf.items() == model
                first = {}
                for k, v in model:
                    first.setdefault(k, v)
                for k in ("a", "b", "c", "ключ", "k" * 254):
                    assert pf.get(k) == first.get(k)
            with open(paths.pool_file(1), "rb") as f:
                records, rest = decode_pool(f.read())
            assert rest == 0
            assert [(r.key_text(), r.value_text()) for r in records] == model
            assert os.path.getsize(paths.pool_file(1)) == 2560 * len(model)
        finally:
            POOLS.close_all()
