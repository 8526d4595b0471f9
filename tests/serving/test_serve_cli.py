"""`astrofm serve` on the command line, and the checks made before the port opens: a missing folder or a
model that did not make the index is one clear error, not a server answering wrong."""

from __future__ import annotations

import dataclasses

import pytest

from astrofm.cli.main import build_parser, main
from serving.config import BatcherConfig, ServeConfig
from serving.service import load_service
from tests.astrofm.search_helpers import build_model


def test_serve_arguments_and_defaults():
    args = build_parser().parse_args(["serve", "--model", "M", "--index", "I"])
    assert (args.host, args.port, args.embeddings, args.command) == ("127.0.0.1", 8000, None, "serve")


def test_missing_folders_are_one_line_errors(tmp_path, capsys, index_dir):
    code = main(["serve", "--model", str(tmp_path / "nope"), "--index", str(index_dir)])
    assert code == 1 and "astrofm serve: error:" in capsys.readouterr().err


def test_an_index_of_another_model_is_refused_unless_allowed(world, serve_config, tmp_path_factory):
    other = build_model(world.dataset, tmp_path_factory.mktemp("other") / "model", seed=1)
    config = dataclasses.replace(serve_config, model=str(other))
    with pytest.raises(ValueError, match="another model"):
        load_service(config)
    assert load_service(dataclasses.replace(config, allow_other_model=True)).index.count == 53


def test_dimension_mismatch_is_refused(world, serve_config, tmp_path_factory):
    other = build_model(world.dataset, tmp_path_factory.mktemp("wide") / "model", embed_dim=16)
    with pytest.raises(ValueError, match="dimension 32 but the model"):
        load_service(dataclasses.replace(serve_config, model=str(other), allow_other_model=True))


@pytest.mark.parametrize("changes", [{"max_k": 0}, {"max_k": 5000}, {"max_objects_per_request": 0},
                                     {"max_body_bytes": 10}, {"port": 70000}, {"torch_threads": 0}])
def test_config_limits_are_checked(changes):
    with pytest.raises(ValueError):
        ServeConfig(model="m", index="i", api_key=None, **changes)
    with pytest.raises(ValueError):
        BatcherConfig(max_batch=0)
