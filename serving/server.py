"""Run the app under uvicorn: the model and index load before the port opens, so a bad folder fails fast."""

from __future__ import annotations

import logging

from serving.config import ServeConfig


def serve(config: ServeConfig) -> None:
    import uvicorn

    from serving.app import create_app

    logging.basicConfig(level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(config)  # loads (and checks) model, index and store before binding
    # One process: the model is loaded once and the micro-batcher sees every request. uvicorn's own
    # `limit_concurrency` answers 503 beyond it; the batcher's bounded queue does the same for embeds.
    uvicorn.run(app, host=config.host, port=config.port, log_level=config.log_level, workers=1,
                limit_concurrency=max(64, 4 * config.batcher.max_queue), timeout_graceful_shutdown=5,
                server_header=False)
