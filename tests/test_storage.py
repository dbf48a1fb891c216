"""One storage interface, the same behaviour on a local folder and a real S3 server (moto)."""

from __future__ import annotations

import pytest

from infra.storage import Store, StoreError, sha256_bytes
from tests.conftest import BUCKET


@pytest.fixture(params=["file", "s3"])
def store(request, tmp_path):
    if request.param == "file":
        return Store(f"file://{tmp_path}/root")
    endpoint = request.getfixturevalue("s3_endpoint")
    return Store(f"s3://{BUCKET}/storage-{request.node.name.replace('[', '-').rstrip(']')}", endpoint)


def test_bytes_and_json_round_trip(store):
    store.put_bytes("a/b.bin", b"\x00\x01hello")
    store.put_json("a/c.json", {"x": [1, 2]})
    assert store.get_bytes("a/b.bin") == b"\x00\x01hello"
    assert store.get_json("a/c.json") == {"x": [1, 2]}
    assert store.sha256("a/b.bin") == sha256_bytes(b"\x00\x01hello")


def test_listing_is_recursive_sorted_and_relative(store):
    for key in ("p/2.txt", "p/1.txt", "p/sub/3.txt", "q/4.txt"):
        store.put_text(key, key)
    assert store.list("p") == ["p/1.txt", "p/2.txt", "p/sub/3.txt"]
    assert store.list_dirs("p") == ["sub"]
    assert store.list("missing") == []


def test_child_views_share_objects_with_their_parent(store):
    child = store.child("runs/r1")
    child.put_text("x.txt", "hi")
    assert store.get_bytes("runs/r1/x.txt") == b"hi"
    assert child.list() == ["x.txt"]
    assert child.uri("x.txt").endswith("/runs/r1/x.txt")


def test_delete_removes_a_prefix_and_tolerates_missing_ones(store):
    store.put_text("d/1", "1")
    store.put_text("d/2/3", "3")
    store.put_text("keep", "k")
    store.delete("d")
    store.delete("never-existed")
    assert store.list() == ["keep"]


def test_missing_object_raises_file_not_found(store):
    with pytest.raises(FileNotFoundError):
        store.get_bytes("nope")


def test_files_upload_and_download(store, tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"x" * 100_000)
    store.put_file(src, "f/src.bin")
    store.get_file("f/src.bin", tmp_path / "out" / "dst.bin")
    assert (tmp_path / "out" / "dst.bin").read_bytes() == src.read_bytes()


def test_keys_cannot_escape_the_root(store):
    with pytest.raises(StoreError, match="escapes"):
        store.put_text("../outside", "x")


def test_unsupported_scheme_is_refused():
    with pytest.raises(StoreError, match="expected file:///dir or s3://"):
        Store("gs://bucket/x")
