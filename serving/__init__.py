"""astrofm over HTTP: embeddings and similarity search (`astrofm serve`); see serving.app."""
