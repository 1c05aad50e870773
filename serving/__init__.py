"""gRPC serving of exported style-transfer models: ``serving.server`` (the server; steps of a request in
``serving.pipeline``, models in ``serving.models``, settings in ``serving.config``), ``serving.client``."""
